"""The Lightning strategy of one Ray worker on XLA (see launcher/distributed/xla/__init__.py).

Imported inside Ray workers only: Lightning's XLA classes are imported at module level here (they
need torch_xla to be instantiated, not to be imported).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from lightning.pytorch.accelerators import XLAAccelerator
from lightning.pytorch.plugins.precision import XLAPrecision
from lightning.pytorch.strategies import SingleDeviceXLAStrategy

from launcher import compat
from launcher.config import Config
from launcher.console import say
from launcher.distributed.xla.runtime import Runtime, _mesh, check_batch_sizes, init_runtime
from launcher.errors import ConfigError


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


def build_strategy(cfg: Config, rank: int, world: int) -> RayXLAStrategy:
    """The Lightning strategy for one Ray worker on XLA, with the precision plugin of `cfg`."""
    rt = init_runtime(rank, world)
    check_batch_sizes(rt, cfg)
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
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
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
            compat.disable_metric_sync(m)
        else:
            m.dist_sync_fn = gather_via_host


def average_gradients_via_host(optimizer, world: int) -> None:
    """Average gradients over Ray's gloo group: one flat host buffer, one all-reduce per optimizer step."""
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


def torch_distributed_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
