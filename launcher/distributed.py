"""The one place that touches Ray's scaling, run and strategy objects.

Driver side: start/join Ray, check the cluster can hold the request, build ScalingConfig/RunConfig
and the TorchTrainer. Worker side: the Lightning strategy, plugins and accelerator for this config.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from launcher.config import Config, ConfigError, default_mode, storage_path

# A worker group that cannot be placed must fail, not hang (see shared notes on Ray 2.60).
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")


# ---------------------------------------------------------------------- driver


def init_ray(cfg: Config, **kwargs) -> None:
    """Join `ray.address` or start a local Ray whose dashboard listens on 127.0.0.1 only."""
    import ray

    if ray.is_initialized():
        return
    env_vars = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"],
                "TOKENIZERS_PARALLELISM": "false"}
    runtime_env = {"env_vars": env_vars}
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
    else:
        # The dashboard (bound to loopback only) also serves the state API that Ray Train uses to
        # clean up placement groups; without it Train logs a warning every few seconds.
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env=runtime_env, log_to_driver=True, **kwargs)


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
        tpus = resources.get("TPU", 0)
        if tpus <= 0 and not os.environ.get("LAUNCHER_XLA_CPU"):
            raise ConfigError("ray.accelerator", f"tpu asked, the cluster has no TPU resources (it has {_describe(resources)})",
                              "run on TPU VM hosts or use --ray.accelerator cpu")
    # Every node adds 1 to its node:<ip> resource; nodes sharing an IP (one machine) share the key.
    nodes = round(sum(v for k, v in resources.items() if k.startswith("node:") and not k.startswith("node:__internal")))
    if nodes > 1 and "://" not in storage_path(cfg) and not cfg.ray.storage_path:
        raise ConfigError("ray.storage_path", f"the cluster has {nodes} nodes but run storage is the local folder {storage_path(cfg)}",
                          "set ray.storage_path to a shared NFS path or an s3:// / gs:// URI")


def _describe(resources: dict) -> str:
    keys = ("CPU", "GPU", "TPU", "memory")
    return ", ".join(f"{k}={resources[k]:g}" for k in keys if k in resources) or "no resources"


def worker_resources(cfg: Config) -> dict[str, float]:
    """Ray resources each Train worker reserves (also shown by `launcher plan`)."""
    r = cfg.ray
    resources: dict[str, float] = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        resources["GPU"] = r.gpus_per_worker
    if r.accelerator == "tpu" and not os.environ.get("LAUNCHER_XLA_CPU"):
        # One worker per TPU host, holding all of its chips (use_tpu=True would pick Ray's
        # torch_tpu backend, which is not torch-xla; see docs).
        resources["TPU"] = float(os.environ.get("LAUNCHER_TPU_CHIPS_PER_HOST", 4))
    return resources


def scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    r = cfg.ray
    return ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=worker_resources(cfg),
                         placement_strategy=r.placement_strategy)


def run_config(cfg: Config, name: str, monitor: str, mode: Optional[str], callbacks: Optional[list] = None,
               storage: Optional[str] = None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=name,
        storage_path=storage or storage_path(cfg),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep,
                                           checkpoint_score_attribute=monitor,
                                           checkpoint_score_order=mode or default_mode(monitor)),
        failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
        callbacks=callbacks or [],
    )


def torch_trainer(loop: Callable, loop_config: dict, cfg: Config, name: str, monitor: str, mode: str,
                  callbacks: Optional[list] = None, storage: Optional[str] = None):
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(loop, train_loop_config=loop_config, scaling_config=scaling_config(cfg),
                        run_config=run_config(cfg, name, monitor, mode, callbacks, storage),
                        torch_config=TorchConfig(backend="gloo" if not cfg.ray.use_gpu else "nccl"))


# ---------------------------------------------------------------------- worker


def lightning_kwargs(cfg: Config) -> dict[str, Any]:
    """strategy / plugins / accelerator / devices for pl.Trainer inside a Ray worker."""
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    r = cfg.ray
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
    else:
        # A single worker gains nothing from DDP's gradient all-reduce hooks; find_unused off is
        # the fast path (HF heads use every parameter).
        strategy = RayDDPStrategy(find_unused_parameters=False, gradient_as_bucket_view=True)
    accelerator = "gpu" if r.use_gpu else "cpu"
    return {"strategy": strategy, "plugins": [RayLightningEnvironment()], "accelerator": accelerator, "devices": "auto"}


def prepare(trainer):
    from ray.train.lightning import prepare_trainer

    return prepare_trainer(trainer)


def worker_context() -> tuple[int, int]:
    """(rank, world size) of this Ray Train worker."""
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()
