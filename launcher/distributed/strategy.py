"""Worker side: the Lightning strategy, plugins and accelerator of a config inside a Ray Train worker."""

from __future__ import annotations

from typing import Any

from launcher import compat
from launcher.config import Config
from launcher.errors import ConfigError


def lightning_kwargs(cfg: Config, session, find_unused_parameters: bool = False) -> dict[str, Any]:
    """strategy / plugins / accelerator / devices for pl.Trainer inside a Ray worker (`session`:
    launcher.training.session, for this process's rank, world size and device).

    `find_unused_parameters`: DDP looks for parameters the loss did not use each step (a task whose
    loss may skip some, e.g. base: a user head that ignores the backbone's pooler).
    """
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    r = cfg.ray
    if r.accelerator == "tpu":
        # torch-xla inside the Ray worker; Ray's Lightning strategies and prepare_trainer do not apply.
        from launcher.distributed.xla.strategy import build_strategy

        return {"strategy": build_strategy(cfg, session.rank, session.world), "plugins": [], "accelerator": "auto", "devices": 1}
    if r.strategy == "fsdp2":
        return {"strategy": ray_fsdp2_strategy(session), "plugins": [RayLightningEnvironment()],
                "accelerator": "gpu" if r.use_gpu else "cpu", "devices": 1}
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

        return {"strategy": SingleDeviceStrategy(device=session.device()), "plugins": [],
                "accelerator": "gpu" if r.use_gpu else "cpu", "devices": 1}
    else:
        # find_unused off is the fast path (HF heads use every parameter).
        strategy = RayDDPStrategy(find_unused_parameters=find_unused_parameters, gradient_as_bucket_view=True)
    accelerator = "gpu" if r.use_gpu else "cpu"
    return {"strategy": strategy, "plugins": [RayLightningEnvironment()], "accelerator": accelerator, "devices": "auto"}


def prepare_trainer(trainer):
    """Ray's prepare_trainer for Ray's own DDP/FSDP/DeepSpeed strategies.

    prepare_trainer only validates that the strategy and environment are Ray's classes
    (ray/train/lightning/_lightning_utils.py); single-worker and XLA runs use Lightning's
    single-device strategies (RayXLAStrategy is one) and fsdp2 Lightning's ModelParallelStrategy
    (with Ray's environment plugin): those are left alone.
    """
    from lightning.pytorch.strategies import ModelParallelStrategy, SingleDeviceStrategy

    if isinstance(trainer.strategy, (SingleDeviceStrategy, ModelParallelStrategy)):
        return trainer
    from ray.train.lightning import prepare_trainer as ray_prepare_trainer

    return ray_prepare_trainer(trainer)


def ray_fsdp2_strategy(session):
    """FSDP2 on Ray workers: Lightning's ModelParallelStrategy (data parallel over all `world` workers,
    no tensor parallelism), on the session's device, sharding each transformer layer and then the whole
    model with torch's `fully_shard` (TaskModule.configure_model calls `shard`).

    Unlike FSDP1 (ray.strategy fsdp, Lightning's FSDPStrategy), it runs on CPUs (gloo) too, and a
    unit may mix frozen and trainable parameters, as LoRA's do. Checkpoints are one full file on
    rank 0 (what Ray stores and launcher exports), not a folder of shards.
    """
    from lightning.pytorch.strategies import ModelParallelStrategy

    class RayFSDP2Strategy(ModelParallelStrategy):
        @property
        def root_device(self):
            return session.device()

        @property
        def distributed_sampler_kwargs(self):
            return {"num_replicas": self.world_size, "rank": self.global_rank}

        def shard(self, model) -> None:
            shard_model(model, self.device_mesh["data_parallel"])

    return RayFSDP2Strategy(data_parallel_size=session.world, tensor_parallel_size=1, save_distributed_checkpoint=False)


def shard_model(model, mesh) -> None:
    """fully_shard every transformer layer (the classes in transformers' `_no_split_modules`), then
    each transformers model and the whole `model`; a model sharded already is left as it is (the
    hook runs again for `trainer.test`)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    layers: set = set()
    roots = []
    for m in model.modules():
        names = compat.no_split_modules(m)
        if names is not None:
            layers.update(names)
            if not any(any(m is x for x in r.modules()) for r in roots):
                roots.append(m)
    for m in list(model.modules()):
        if type(m).__name__ in layers:
            fully_shard(m, mesh=mesh)
    for r in roots:
        if r is not model:
            fully_shard(r, mesh=mesh)
    fully_shard(model, mesh=mesh)


def worker_callbacks(cfg: Config) -> list:
    """Extra Lightning callbacks of this accelerator (XLA: the compile count per epoch)."""
    if cfg.ray.accelerator == "tpu":
        from launcher.distributed.xla.stats import worker_callbacks as xla_callbacks

        return xla_callbacks()
    return []
