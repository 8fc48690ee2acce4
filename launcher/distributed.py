"""The one place that touches Ray's scaling, run and strategy objects.

Driver side: start/join Ray, check the cluster can hold the request, build ScalingConfig/RunConfig
and the TorchTrainer. Worker side: the Lightning strategy, plugins and accelerator for this config.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from launcher.config import Config, ConfigError, default_mode, storage_path

# A worker group that cannot be placed must fail, not hang (see shared notes on Ray 2.60).
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
os.environ.setdefault(START_TIMEOUT_ENV, "120")
# A worker that got SIGTERM (a preemption notice, `kubectl delete pod`) while one of its Ray calls was
# in flight (ray.train.report's barrier, the wait for its checkpoint to be registered) stops serving
# the controller's polls but does not exit until that call returns, and the call waits for the
# controller: Ray Train declares such a worker dead only after 10 minutes without an answer. One
# minute here: the group restarts from the latest checkpoint (tests/test_faults.py, sigterm). Not on
# TPU hosts, where an XLA compilation may keep a worker from answering for minutes.
HEALTH_CHECK_ENV, HEALTH_CHECK_S, HEALTH_CHECK_XLA_S = "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S", "60", "600"
# The variables every runtime_env from init_ray sets (Ray refuses a job whose runtime_env sets them too).
RUNTIME_ENV_KEYS = (START_TIMEOUT_ENV, HEALTH_CHECK_ENV, "TOKENIZERS_PARALLELISM")


# ---------------------------------------------------------------------- driver


def init_ray(cfg: Config, **kwargs) -> None:
    """Join `ray.address` or start a local Ray whose dashboard listens on 127.0.0.1 only."""
    import ray

    if ray.is_initialized():
        return
    health = os.environ.get(HEALTH_CHECK_ENV) or (HEALTH_CHECK_XLA_S if cfg.ray.accelerator == "tpu" else HEALTH_CHECK_S)
    env_vars = {START_TIMEOUT_ENV: os.environ[START_TIMEOUT_ENV], HEALTH_CHECK_ENV: health, "TOKENIZERS_PARALLELISM": "false"}
    if cfg.ray.accelerator == "tpu":
        from launcher import xla

        env_vars.update(xla.worker_env())  # PJRT_DEVICE=CPU on the driver: the workers run XLA on CPU too
    runtime_env = {"env_vars": env_vars}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Inside `ray job submit` RAY_ADDRESS points at the job's cluster.
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
    else:
        # The dashboard (bound to loopback only) also serves the state API that Ray Train uses to
        # clean up placement groups; without it Train logs a warning every few seconds.
        # address="local": always a fresh local Ray, never a stray one that `ray start` left running.
        # Train's placement-group cleaner asks the state API whether the run's controller is alive; a
        # worker finds that API through /tmp/ray/ray_current_cluster, i.e. the last `ray start` on
        # this machine, and where that is another cluster it "sees" the controller dead and removes
        # the placement group of a healthy run. So the workers are told this dashboard's address.
        port = kwargs.pop("dashboard_port", None) or free_port()
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # Ray Train's preemption watcher (one more actor process per run, polling for nodes that a
        # cloud autoscaler drains) has nothing to watch on this one machine.
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=port, runtime_env=runtime_env, log_to_driver=True, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_local_resources(cfg: Config) -> None:
    """Without `ray.address`, launcher starts Ray on this machine: check the request against it
    before Ray starts (a cluster is checked by `check_resources` once joined)."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    r = cfg.ray
    cpus = r.num_cpus or os.cpu_count() or 1
    need_cpu = r.num_workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        where = f"ray.num_cpus is {cpus}" if r.num_cpus else f"this machine has {cpus} CPUs"
        raise ConfigError("ray.num_workers", f"{r.num_workers} workers x {r.cpus_per_worker:g} CPUs = {need_cpu:g} CPUs, {where}",
                          "lower ray.num_workers or ray.cpus_per_worker (fractions allowed), or set ray.address to a cluster")
    if r.use_gpu:
        gpus = _local_gpus()
        if gpus < r.num_workers * r.gpus_per_worker:
            raise ConfigError("ray.use_gpu", f"{r.num_workers} workers x {r.gpus_per_worker:g} GPUs asked, this machine has "
                              f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}", "set --ray.use_gpu false, or ray.address to a cluster with GPUs")
    if r.accelerator == "tpu":
        # TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e and later), which
        # is also how Ray counts them.
        import glob

        chips = float(len(glob.glob("/dev/accel[0-9]*")) or len(glob.glob("/dev/vfio/[0-9]*")))
        _check_tpus(cfg, {"TPU": chips, "CPU": float(cpus)}, hosts=[chips], scalable=[])


def _local_gpus() -> int:
    # No NVIDIA driver and no GPU device files: no GPU, said without importing torch (seconds).
    import glob

    if not (os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return 0
    import torch

    return torch.cuda.device_count()


def cluster_resources() -> dict:
    import ray

    return ray.cluster_resources()


def check_resources(cfg: Config, resources: dict, trials: int = 1) -> None:
    """Fail before training when the cluster cannot hold one trial's workers."""
    r = cfg.ray
    cpus = resources.get("CPU", 0)
    need_cpu = r.num_workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        raise ConfigError("ray.num_workers", f"{r.num_workers} workers x {r.cpus_per_worker} CPUs = {need_cpu:g} CPUs, the cluster has {cpus:g}",
                          "lower ray.num_workers or ray.cpus_per_worker (fractions allowed)")
    if r.use_gpu:
        gpus = resources.get("GPU", 0)
        if gpus < r.gpus_per_worker * r.num_workers:
            raise ConfigError("ray.use_gpu", f"{r.num_workers} workers x {r.gpus_per_worker} GPUs asked, the cluster has {gpus:g} GPUs",
                              "set --ray.use_gpu false or run on a cluster with GPUs")
    if r.accelerator == "tpu":
        _check_tpus(cfg, resources)
    # Every node adds 1 to its node:<ip> resource; nodes sharing an IP (one machine) share the key.
    nodes = round(sum(v for k, v in resources.items() if k.startswith("node:") and not k.startswith("node:__internal")))
    if nodes > 1 and "://" not in storage_path(cfg) and not cfg.ray.storage_path:
        raise ConfigError("ray.storage_path", f"the cluster has {nodes} nodes but run storage is the local folder {storage_path(cfg)}",
                          "set ray.storage_path to a shared NFS path or an s3:// / gs:// URI")


def _check_tpus(cfg: Config, resources: dict, hosts: Optional[list[float]] = None,
                scalable: Optional[list[float]] = None) -> None:
    """One worker per TPU host: enough hosts with `ray.tpus_per_worker` chips each, now or once the
    autoscaler adds them.

    `hosts` (TPU chips of each alive node) and `scalable` (chips of each node the autoscaler may
    start, from the cluster config it reports) default to what the running Ray knows.
    """
    from launcher import xla

    r = cfg.ray
    if xla.cpu_lane():
        # PJRT_DEVICE=CPU: the XLA CPU test lane; workers need torch-xla, no TPU resources.
        if not cfg.ray.address:
            xla.require_torch_xla("on this machine (PJRT_DEVICE=CPU runs the Ray workers here)")
        return
    if hosts is None:
        hosts = _tpu_hosts()
    if scalable is None:
        scalable = _autoscaler_tpu_hosts()

    def enough(chips_per_host: list[float]) -> bool:
        return sum(1 for chips in chips_per_host if chips >= r.tpus_per_worker) >= r.num_workers

    if enough(hosts) or enough(scalable):
        return
    tpus = resources.get("TPU", 0)
    sizes = ", ".join(f"{c:g}" for c in sorted(hosts, reverse=True) if c) or "none"
    more = f"; the autoscaler can add {len([c for c in scalable if c])} TPU host(s)" if scalable else ""
    raise ConfigError("ray.accelerator",
                      f"tpu: {r.num_workers} worker(s) x {r.tpus_per_worker} TPU chips (one worker per host) asked; the cluster has "
                      f"{tpus:g} TPU chips (chips per host: {sizes}; {_describe(resources)}){more}",
                      "run on TPU VM hosts (cluster/gcp-tpu.yaml, cluster/kuberay/raycluster-tpu.yaml), set ray.num_workers to the "
                      "TPU hosts and ray.tpus_per_worker to the chips per host, or use --ray.accelerator cpu")


def _tpu_hosts() -> list[float]:
    import ray

    if not ray.is_initialized():
        return []
    return [float(n.get("Resources", {}).get("TPU", 0)) for n in ray.nodes() if n.get("Alive")]


def _autoscaler_tpu_hosts() -> list[float]:
    """TPU chips of every node the autoscaler may start (its node types x max count); [] without one."""
    import ray

    if not ray.is_initialized():
        return []
    try:
        from ray._private.state import state

        config = state.get_cluster_config()  # what Ray Train itself checks before placing workers
    except Exception:  # private API: a Ray without it simply gets no autoscaler allowance
        return []
    hosts: list[float] = []
    for group in getattr(config, "node_group_configs", None) or []:
        chips = float(group.resources.get("TPU", 0))
        if chips > 0 and group.max_count > 0:
            hosts += [chips] * group.max_count
    return hosts


def _describe(resources: dict) -> str:
    keys = ("CPU", "GPU", "TPU", "memory")
    return ", ".join(f"{k}={resources[k]:g}" for k in keys if k in resources) or "no resources"


def worker_resources(cfg: Config) -> dict[str, float]:
    """Ray resources each Train worker reserves (also shown by `launcher plan`)."""
    r = cfg.ray
    resources: dict[str, float] = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        resources["GPU"] = r.gpus_per_worker
    if r.accelerator == "tpu" and not _xla_cpu_lane():
        # One worker per TPU host, holding all of its chips (use_tpu=True would pick Ray's
        # torch_tpu backend, which is not torch-xla; see launcher/xla.py).
        resources["TPU"] = float(r.tpus_per_worker)
    return resources


def _xla_cpu_lane() -> bool:
    from launcher import xla

    return xla.cpu_lane()


def placement_strategy(cfg: Config) -> str:
    """TPU workers are spread one per host (and placed all together: a placement group is gang-scheduled)."""
    r = cfg.ray
    if r.accelerator == "tpu" and not _xla_cpu_lane() and r.num_workers > 1:
        return "STRICT_SPREAD"
    return r.placement_strategy


def scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    r = cfg.ray
    return ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=worker_resources(cfg),
                         placement_strategy=placement_strategy(cfg))


# What Ray ranks checkpoints by: the monitored metric where it is finite, else a finite "worst" value.
# (Ray's run snapshot stores NaN/inf as null, and a restored run, after a driver restart or with
# --resume, fails to rank a null score; step checkpoints carry no validation metric at all.)
CHECKPOINT_SCORE = "checkpoint_score"
WORST_SCORE = 1e30


def checkpoint_score(value, mode: str) -> float:
    if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
        return float(value)
    return -WORST_SCORE if mode == "max" else WORST_SCORE


def run_config(cfg: Config, name: str, monitor: str, mode: Optional[str], callbacks: Optional[list] = None,
               storage: Optional[str] = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=name,
        storage_path=storage or storage_path(cfg),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep,
                                           checkpoint_score_attribute=CHECKPOINT_SCORE,
                                           checkpoint_score_order=mode or default_mode(monitor)),
        failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
        callbacks=callbacks or [],
    )


def torch_trainer(loop: Callable, loop_config: dict, cfg: Config, name: str, monitor: str, mode: str,
                  callbacks: Optional[list] = None, storage: Optional[str] = None):
    from ray.train.torch import TorchConfig

    return _trainer_class()(loop, train_loop_config=loop_config, scaling_config=scaling_config(cfg),
                            run_config=run_config(cfg, name, monitor, mode, callbacks, storage),
                            torch_config=TorchConfig(backend="gloo" if not cfg.ray.use_gpu else "nccl"))


def _trainer_class():
    """TorchTrainer without Ray Data's dataset manager: launcher ships its own Arrow tables.

    Ray 2.60's Train V2 starts a DatasetManager actor (a process importing Ray Data) for every run
    even when it has no Ray datasets; a Tune trial pays for it every time. `_create_default_callbacks`
    is private Ray API: a Ray without it (or without DatasetsCallback) keeps its defaults.
    """
    from ray.train.torch import TorchTrainer

    class LauncherTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            try:
                from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
            except ImportError:
                return callbacks
            return [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    return LauncherTorchTrainer if hasattr(TorchTrainer, "_create_default_callbacks") else TorchTrainer


# ---------------------------------------------------------------------- worker


def lightning_kwargs(cfg: Config) -> dict[str, Any]:
    """strategy / plugins / accelerator / devices for pl.Trainer inside a Ray worker."""
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    r = cfg.ray
    if r.accelerator == "tpu":
        # torch-xla inside the Ray worker; Ray's Lightning strategies and prepare_trainer do not apply.
        from launcher import xla

        rank, world = worker_context()
        return {"strategy": xla.build_strategy(cfg, rank, world), "plugins": [], "accelerator": "auto", "devices": 1}
    if r.strategy == "fsdp":
        from ray.train.lightning import RayFSDPStrategy

        strategy = RayFSDPStrategy(state_dict_type="full")
    elif r.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError("ray.strategy", "deepspeed is not installed", "pip install deepspeed on every node") from None
        from ray.train.lightning import RayDeepSpeedStrategy

        strategy = RayDeepSpeedStrategy(stage=2)
    elif r.num_workers == 1:
        # One worker: no process group to sync with, so Lightning's plain single-device strategy.
        # DDP at world size 1 still wraps the model and all-reduces every bucket (and every
        # reduce_boolean_decision) over gloo each step; see docs/benchmarks.md.
        from lightning.pytorch.strategies import SingleDeviceStrategy
        from ray.train.torch import get_device

        return {"strategy": SingleDeviceStrategy(device=get_device()), "plugins": [],
                "accelerator": "gpu" if r.use_gpu else "cpu", "devices": 1}
    else:
        # find_unused off is the fast path (HF heads use every parameter). A task whose loss may
        # skip parameters (base: a user head that ignores the backbone's pooler) sets
        # ddp_find_unused_parameters.
        from launcher.tasks import get_task

        find_unused = bool(getattr(get_task(cfg.task), "ddp_find_unused_parameters", False))
        strategy = RayDDPStrategy(find_unused_parameters=find_unused, gradient_as_bucket_view=True)
    accelerator = "gpu" if r.use_gpu else "cpu"
    return {"strategy": strategy, "plugins": [RayLightningEnvironment()], "accelerator": accelerator, "devices": "auto"}


def prepare(trainer):
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if getattr(trainer.strategy, "launcher_xla", False) or type(trainer.strategy) is SingleDeviceStrategy:
        # prepare_trainer only validates that the strategy and environment are Ray's own classes
        # (ray/train/lightning/_lightning_utils.py); XLA and single-worker runs use Lightning's.
        return trainer
    from ray.train.lightning import prepare_trainer

    return prepare_trainer(trainer)


def worker_callbacks(cfg: Config) -> list:
    """Extra Lightning callbacks of this accelerator (XLA: the compile count per epoch)."""
    if cfg.ray.accelerator == "tpu":
        from launcher import xla

        return xla.worker_callbacks()
    return []


def worker_context() -> tuple[int, int]:
    """(rank, world size) of this Ray Train worker."""
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()
