"""torch-xla inside Ray Train workers: the `ray.accelerator: tpu` path and its CPU PJRT test lane.

Ray Train starts one worker per TPU host (launcher.distributed reserves all chips of a host per worker
and spreads the workers over hosts). Each worker is one XLA (PJRT) process running Lightning:

* Inside a worker, several XLA devices (the 4 chips of a v4 host; `CPU_NUM_DEVICES` in the CPU lane)
  are used through SPMD: parameters replicated, every batch sharded along its first axis, and the
  gradient all-reduce inserted by the XLA compiler.
* Between workers, replicas stay identical in one of two ways (`Runtime.sync`):
  - "spmd": the PJRT runtime itself spans the workers (the hosts of one multi-host TPU slice), so the
    SPMD mesh covers every chip of the slice and each host feeds its share of the global batch.
  - "gloo": each worker's runtime is its own (single-host slices, and always on CPU PJRT, whose client
    has no cross-process collectives: an "xla" process group does initialise there, but its
    all_reduce silently returns the local value). Gradients are then averaged once per optimizer
    step over the gloo process group Ray Train already set up, through host memory.

XLA compiles one graph per distinct input shape, so batches get a fixed shape: sequence lengths are
padded up to one of a few bucket sizes and every batch has the full batch size (training: the short
last batch repeats some of its rows; evaluation: extra rows marked `_pad`, which the metrics skip). The number of
graphs compiled is logged per epoch (`xla_compilations`) and must stop growing after the first epoch.

Nothing here imports torch, Lightning or torch_xla at module level: the driver's resource checks stay
cheap, and the main environment has no torch-xla.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Callable, Optional

from launcher.config import Config, ConfigError

if TYPE_CHECKING:
    import torch

EXTRA_FIX = ("pip install 'launcher[tpu]' on every TPU host, with matching torch and torch_xla versions "
             "(e.g. torch==2.9.0 torch_xla[tpu]==2.9.0); for the CPU test lane: make venv-xla")

#: Batch keys padded with -100 (the loss's ignore index) when a sequence axis grows.
IGNORE_KEYS = ("labels", "start_positions", "end_positions")


def cpu_lane() -> bool:
    """True when this process runs XLA on the CPU (`PJRT_DEVICE=CPU`): the TPU path minus the chips."""
    return os.environ.get("PJRT_DEVICE", "").upper() == "CPU"


def require_torch_xla(where: str = "here"):
    """Import torch_xla or raise a ConfigError naming the `tpu` extra."""
    try:
        import torch_xla  # noqa: F401
        import torch_xla.runtime  # noqa: F401
    except ImportError as e:
        raise ConfigError("ray.accelerator", f"tpu needs torch-xla, which cannot be imported {where} ({e})", EXTRA_FIX) from None
    return torch_xla


def worker_env() -> dict[str, str]:
    """Environment the driver passes to workers so they pick the same PJRT device as the driver asked for."""
    env = {}
    for key in ("PJRT_DEVICE", "CPU_NUM_DEVICES"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


# ---------------------------------------------------------------------- fixed shapes


def length_buckets(max_length: int) -> list[int]:
    """Sequence-length buckets: max_length/8, /4, /2 and max_length, each rounded up to a multiple of 8."""
    sizes = {max_length}
    for div in (2, 4, 8):
        sizes.add(max(8, -(-(max_length // div) // 8) * 8))
    return sorted(s for s in sizes if s <= max_length)


def bucket_for(length: int, buckets: list[int]) -> int:
    """The smallest bucket that holds `length`; beyond the largest, the next multiple of it."""
    for b in buckets:
        if length <= b:
            return b
    top = buckets[-1]
    return -(-length // top) * top


class FixedShapeCollator:
    """Wraps a task's collator so that XLA sees a few shapes only.

    Every tensor with a sequence axis (dim 1) is padded on the tokenizer's padding side up to the
    next bucket (input ids with the pad token, label-like keys with -100, masks and the rest with 0),
    and a short batch is completed up to `batch_size`.
    """

    def __init__(self, inner: Callable, batch_size: int, buckets: list[int], pad_token_id: Optional[int], padding_side: str = "right"):
        self.inner = inner
        self.batch_size = batch_size
        self.buckets = buckets
        self.pad_token_id = pad_token_id if pad_token_id is not None else 0
        self.left = padding_side == "left"

    def pad_value(self, key: str) -> int:
        if key in IGNORE_KEYS or key.endswith("labels"):
            return -100
        if key.endswith("input_ids"):
            return self.pad_token_id
        return 0

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        rows = list(rows)
        missing = self.batch_size - len(rows)
        if rows and missing > 0:
            if "_pad" in rows[0]:
                # Evaluation: marked pad rows, which metrics skip (every example still scored once).
                filler = dict(rows[-1], _pad=1)
                if "_index" in filler:
                    filler["_index"] = -1
                rows += [dict(filler) for _ in range(missing)]
            else:
                # Training: the short last batch repeats its own rows, as DistributedSampler's
                # wrap-around padding does; the step count stays that of the CPU/GPU path.
                rows += [dict(rows[i % len(rows)]) for i in range(missing)]
        batch = self.inner(rows)
        for key, value in list(batch.items()):
            if isinstance(value, torch.Tensor) and value.ndim >= 2 and not key.startswith("_"):
                batch[key] = self._pad_axis1(key, value)
        return batch

    def _pad_axis1(self, key: str, t: "torch.Tensor") -> "torch.Tensor":
        import torch

        target = bucket_for(t.shape[1], self.buckets)
        extra = target - t.shape[1]
        if extra <= 0:
            return t
        shape = list(t.shape)
        shape[1] = extra
        pad = torch.full(shape, self.pad_value(key), dtype=t.dtype)
        return torch.cat([pad, t] if self.left else [t, pad], dim=1)


def collators(collate: Callable, tokenizer, cfg: Config) -> tuple[Callable, Callable]:
    """(train collator, evaluation collator) with fixed shapes for `cfg`."""
    buckets = length_buckets(cfg.data.max_length)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    side = getattr(tokenizer, "padding_side", "right")
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2
    return (FixedShapeCollator(collate, cfg.train.batch_size, buckets, pad_id, side),
            FixedShapeCollator(collate, eval_bs, buckets, pad_id, side))


# ---------------------------------------------------------------------- runtime inside a worker


@dataclasses.dataclass
class Runtime:
    """How this worker's XLA process relates to its devices and to the other Ray workers."""

    rank: int  # Ray Train rank (reports, logging, checkpoints)
    world: int  # Ray Train workers
    device_type: str  # "TPU" or "CPU"
    local_devices: int  # XLA devices this process drives
    global_devices: int  # XLA devices the runtime sees (all hosts of a multi-host slice)
    processes: int  # processes the PJRT runtime spans
    spmd: bool  # SPMD over a mesh of all runtime devices
    sync: str  # how workers' replicas stay equal: "none", "gloo" or "spmd"

    def describe(self) -> str:
        return (f"PJRT {self.device_type}: {self.local_devices} local / {self.global_devices} runtime devices, "
                f"{self.processes} runtime process(es), {'SPMD' if self.spmd else 'single device'}, "
                f"{self.world} Ray worker(s), replica sync: {self.sync}")


_RUNTIME: Optional[Runtime] = None


def init_runtime(rank: int, world: int) -> Runtime:
    """Start the PJRT runtime of this worker (once per process) and decide SPMD and replica sync."""
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    require_torch_xla("in this Ray worker")
    import torch_xla.runtime as xr

    device_type = xr.device_type() or "?"
    local = xr.addressable_runtime_device_count()
    total = xr.global_runtime_device_count()
    processes = xr.process_count()
    spmd = total > 1
    if spmd:
        # Must precede the first XLA tensor; the counts above only start the runtime.
        xr.use_spmd()
    if world == 1:
        sync = "none"
    elif processes == world and processes > 1:
        sync = "spmd"
    elif processes == 1:
        sync = "gloo"
    else:
        raise ConfigError("ray.num_workers", f"{world} Ray workers but the XLA runtime spans {processes} processes",
                          "use one worker per host of the TPU slice (ray.num_workers = hosts in the slice)")
    _RUNTIME = Runtime(rank, world, device_type, local, total, processes, spmd, sync)
    return _RUNTIME


def _mesh(rt: Runtime):
    import numpy as np
    import torch_xla.distributed.spmd as xs

    return xs.Mesh(np.arange(rt.global_devices), (rt.global_devices,), ("data",))


def check_batch_sizes(rt: Runtime, cfg: Config) -> None:
    """SPMD splits each batch over this process's devices: sizes must divide evenly."""
    if not rt.spmd:
        return
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2
    for key, size in (("train.batch_size", cfg.train.batch_size), ("train.eval_batch_size", eval_bs)):
        if size % rt.local_devices:
            raise ConfigError(key, f"{size} does not split over the {rt.local_devices} XLA devices of a worker",
                              f"use a multiple of {rt.local_devices}")


# ---------------------------------------------------------------------- Lightning plugins


def _lightning_xla_classes():
    # Imported lazily: Lightning's XLA classes need torch_xla installed to be instantiated.
    from lightning.pytorch.accelerators import XLAAccelerator
    from lightning.pytorch.plugins.precision import XLAPrecision
    from lightning.pytorch.strategies import SingleDeviceXLAStrategy

    return XLAAccelerator, XLAPrecision, SingleDeviceXLAStrategy


def build_strategy(cfg: Config, rank: int, world: int):
    """The Lightning strategy for one Ray worker on XLA (see the module docstring)."""
    import torch

    rt = init_runtime(rank, world)
    check_batch_sizes(rt, cfg)
    XLAAccelerator, XLAPrecision, SingleDeviceXLAStrategy = _lightning_xla_classes()

    class PJRTAccelerator(XLAAccelerator):
        """Lightning's XLA accelerator counts TPU chips only; this worker is one XLA process on any PJRT device."""

        @staticmethod
        def auto_device_count() -> int:
            return 1

        @staticmethod
        def parse_devices(devices) -> int:
            return 1

        @staticmethod
        def get_parallel_devices(devices) -> list:
            return [torch.device("xla", 0)]

        @staticmethod
        def is_available() -> bool:
            return True

    class XLAStepPrecision(XLAPrecision):
        """XLAPrecision plus a graph cut after every backward: one graph per micro-batch shape, not one per
        accumulation window, and gradients materialised before they are averaged across workers."""

        def __init__(self, label: str, autocast: bool = False, dtype: Optional[torch.dtype] = None):
            super().__init__("32-true")
            self.precision = label
            self.autocast = autocast
            self.dtype = dtype

        def post_backward(self, tensor, module):
            import torch_xla

            tensor = super().post_backward(tensor, module)
            torch_xla.sync()
            return tensor

        def forward_context(self):
            if self.autocast:
                return torch.autocast("xla", dtype=torch.bfloat16)
            if self.dtype is not None:
                return _default_dtype(self.dtype)
            return super().forward_context()

        def convert_module(self, module):
            return module.to(dtype=self.dtype) if self.dtype is not None else module

        def convert_input(self, data):
            if self.dtype is None:
                return data
            from lightning.fabric.utilities.apply_func import apply_to_collection

            return apply_to_collection(data, torch.Tensor, lambda t: t.to(self.dtype) if t.is_floating_point() else t)

    class RayXLAStrategy(SingleDeviceXLAStrategy):
        """One XLA process per Ray worker: ranks from Ray, collectives over Ray's gloo group or SPMD."""

        launcher_xla = True  # launcher.distributed.prepare leaves this strategy alone

        def __init__(self, runtime: Runtime, precision_plugin):
            super().__init__(device=None, accelerator=PJRTAccelerator(), precision_plugin=precision_plugin)
            self.rt = runtime
            self.mesh = _mesh(runtime) if runtime.spmd else None
            # Lightning's single-device strategies assume rank 0 of 1; these come from Ray.
            self.global_rank, self.world_size = runtime.rank, runtime.world

        @property
        def is_global_zero(self) -> bool:
            return self.rt.rank == 0

        def setup_environment(self) -> None:
            from lightning.fabric.utilities.rank_zero import rank_zero_only
            from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only

            rank_zero_only.rank = utils_rank_zero_only.rank = self.rt.rank
            super().setup_environment()

        def setup(self, trainer) -> None:
            super().setup(trainer)
            _configure_metrics(self.lightning_module, self.rt)
            for optimizer in self.optimizers:
                # Zeroed gradients instead of None: the first micro-batch of an accumulation window
                # then traces the same graph as the others (grad += ...), one graph per bucket, not two.
                # Parameters that never get a gradient keep None (zero_grad only zeroes existing ones).
                optimizer.zero_grad = functools.partial(optimizer.zero_grad, set_to_none=False)
            if self.rt.rank == 0:
                say(f"[launcher] XLA: {self.rt.describe()}")

        # data: SPMD shards each batch along axis 0 over the mesh
        def batch_to_device(self, batch, device=None, dataloader_idx: int = 0):
            if self.mesh is None:
                return super().batch_to_device(batch, device, dataloader_idx)
            import torch_xla.core.xla_model as xm
            import torch_xla.distributed.spmd as xs
            from lightning.fabric.utilities.apply_func import apply_to_collection

            device = device or self.root_device
            multi_host = self.rt.sync == "spmd"

            def shard(t: torch.Tensor) -> torch.Tensor:
                if t.ndim == 0:
                    return t.to(device)
                spec = xs.ShardingSpec(self.mesh, ("data",) + (None,) * (t.ndim - 1), minibatch=multi_host)
                return xm.send_cpu_data_to_device([t], device, input_sharding=spec)[0]

            return self.precision_plugin.convert_input(apply_to_collection(batch, torch.Tensor, shard))

        # Graph cuts around every batch: one graph per evaluation batch instead of one per evaluation
        # epoch, and the ops that hooks and logging leave pending between batches are flushed in
        # graphs of their own instead of joining (and multiplying) the next batch's graph.
        def on_train_batch_start(self, batch, batch_idx: int) -> None:
            _synced(None)
            return super().on_train_batch_start(batch, batch_idx)

        def validation_step(self, *args, **kwargs):
            _synced(None)
            return _synced(super().validation_step(*args, **kwargs))

        def test_step(self, *args, **kwargs):
            _synced(None)
            return _synced(super().test_step(*args, **kwargs))

        # gradients: averaged across Ray workers before clipping and the optimizer step
        def optimizer_step(self, optimizer, closure, model=None, **kwargs):
            if self.rt.sync == "gloo":
                inner = closure

                def closure():
                    result = inner()
                    average_gradients_via_host(optimizer, self.rt.world)
                    return result

            return super().optimizer_step(optimizer, closure, model, **kwargs)

        # collectives Lightning asks for (barriers around checkpoints, broadcasts, reductions)
        def barrier(self, name: Optional[str] = None) -> None:
            if _dist_ready(self.rt):
                torch.distributed.barrier()

        def broadcast(self, obj, src: int = 0):
            if not _dist_ready(self.rt):
                return obj
            if isinstance(obj, torch.Tensor):
                host = obj.detach().cpu()
                torch.distributed.broadcast(host, src)
                return host.to(obj.device)
            box = [obj]
            torch.distributed.broadcast_object_list(box, src)
            return box[0]

        def reduce(self, tensor, group=None, reduce_op="mean"):
            if not isinstance(tensor, torch.Tensor) or not _dist_ready(self.rt):
                return tensor
            host = tensor.detach().cpu().float()
            op = str(reduce_op).lower()
            if op in ("max", "reduceop.max"):
                torch.distributed.all_reduce(host, op=torch.distributed.ReduceOp.MAX)
            elif op in ("min", "reduceop.min"):
                torch.distributed.all_reduce(host, op=torch.distributed.ReduceOp.MIN)
            else:
                torch.distributed.all_reduce(host)
                if op in ("mean", "avg", "reduceop.avg"):
                    host /= self.rt.world
            return host.to(device=tensor.device, dtype=tensor.dtype)

        def all_gather(self, tensor, group=None, sync_grads: bool = False):
            if not _dist_ready(self.rt):
                return tensor.unsqueeze(0)
            return torch.stack(gather_via_host(tensor, group))

        def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
            if not _dist_ready(self.rt):
                return decision
            votes = torch.tensor(int(decision))
            torch.distributed.all_reduce(votes)
            return bool(votes == self.rt.world) if all else bool(votes > 0)

    precision = cfg.train.precision
    if precision in ("32-true", "32"):
        plugin = XLAStepPrecision("32-true")
    elif precision == "bf16-mixed":
        plugin = XLAStepPrecision("bf16-mixed", autocast=True)
    elif precision == "bf16-true":
        plugin = XLAStepPrecision("bf16-true", dtype=torch.bfloat16)
    else:  # config.validate rejects the rest for tpu
        raise ConfigError("train.precision", f"{precision} is not available on XLA", "use 32-true, bf16-mixed or bf16-true")
    return RayXLAStrategy(rt, plugin)


class _default_dtype:
    """Context manager: new floating tensors default to `dtype` (what Lightning's bf16-true does)."""

    def __init__(self, dtype):
        self.dtype, self.saved = dtype, None

    def __enter__(self):
        import torch

        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        import torch

        torch.set_default_dtype(self.saved)


def _synced(out):
    import torch_xla

    torch_xla.sync()
    return out


def _dist_ready(rt: Runtime) -> bool:
    return rt.world > 1 and torch_distributed_ready()


def gather_via_host(tensor: "torch.Tensor", group=None) -> list:
    """torchmetrics' all-gather for XLA tensors: through host memory over the gloo group."""
    from torchmetrics.utilities.distributed import gather_all_tensors

    return [t.to(tensor.device) for t in gather_all_tensors(tensor.detach().cpu(), group)]


def _configure_metrics(module, rt: Runtime) -> None:
    """torchmetrics on XLA: cross-worker sync through host memory, and no per-update value checks.

    Input validation (`validate_args`) and NaN checks read tensor values on the host, which on XLA
    cuts the graph and compiles extra graphs per batch shape; a NaN still shows in the metric value.
    """
    import torchmetrics

    for m in module.modules():
        if not isinstance(m, torchmetrics.Metric):
            continue
        if hasattr(m, "validate_args"):
            m.validate_args = False
        if getattr(m, "nan_strategy", None) in ("warn", "error"):
            m.nan_strategy = "disable"
        if rt.sync == "spmd":
            # Metric states are computed on the global (all-host) batch already.
            m.sync_on_compute = m._to_sync = False
        else:
            m.dist_sync_fn = gather_via_host


def average_gradients_via_host(optimizer, world: int) -> None:
    """Average gradients over Ray's gloo group: one flat host buffer, one all-reduce per optimizer step."""
    import torch

    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.detach().reshape(-1).float() for g in grads])
    host = flat.cpu()
    torch.distributed.all_reduce(host)
    host /= world
    back = host.to(flat.device)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(back[offset:offset + n].view_as(g).to(g.dtype))
        offset += n


# ---------------------------------------------------------------------- compile count


def compile_stats() -> dict[str, float]:
    """Graphs compiled so far in this process and the seconds spent compiling them."""
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    if not data:
        return {"compilations": 0, "compile_s": 0.0}
    return {"compilations": int(data[0]), "compile_s": float(data[1]) / 1e9}


def replica_spread(module) -> float:
    """Max - min over Ray workers of the sum of all parameters: 0.0 while the replicas are identical."""
    import torch

    total = sum(p.detach().float().sum() for p in module.parameters())
    mine = torch.tensor([float(total)], dtype=torch.float64)
    world = torch.distributed.get_world_size()
    sums = [torch.zeros_like(mine) for _ in range(world)]
    torch.distributed.all_gather(sums, mine)
    values = torch.cat(sums)
    return float(values.max() - values.min())


def worker_callbacks() -> list:
    """Callbacks every XLA worker adds: compile count and replica agreement, logged per validation."""
    import lightning.pytorch as pl

    class XLAStats(pl.Callback):
        """At the end of every epoch (after its validation): logs `xla_compilations` / `xla_compile_s`
        and prints them (rank 0); with several workers also logs `xla_replica_spread` (0.0 while the
        replicas hold the same weights).

        A compile count that keeps growing after the first epoch or two means shapes vary per step.
        """

        def __init__(self):
            self.at_epoch_start = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.at_epoch_start = compile_stats()["compilations"]

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.world_size > 1 and torch_distributed_ready():
                pl_module.log("xla_replica_spread", replica_spread(pl_module), on_step=False, on_epoch=True, batch_size=1)
            stats = compile_stats()
            pl_module.log("xla_compilations", float(stats["compilations"]), on_step=False, on_epoch=True, batch_size=1)
            pl_module.log("xla_compile_s", stats["compile_s"], on_step=False, on_epoch=True, batch_size=1)
            if trainer.global_rank == 0:
                new = stats["compilations"] - self.at_epoch_start
                say(f"[launcher] XLA after epoch {trainer.current_epoch + 1}: {stats['compilations']} graphs compiled "
                    f"({new} this epoch), {stats['compile_s']:.1f} s compiling")

    return [XLAStats()]


def torch_distributed_ready() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def say(line: str) -> None:
    from launcher.callbacks import say as _say

    _say(line)
