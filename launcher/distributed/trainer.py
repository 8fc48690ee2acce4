"""The one place that builds Ray Train's ScalingConfig, RunConfig and TorchTrainer for a config."""

from __future__ import annotations

from typing import Callable, Optional

from launcher import compat, console
from launcher.config import Config
from launcher.distributed import cluster, xla


def worker_resources(cfg: Config) -> dict[str, float]:
    """Ray resources each Train worker reserves (also shown by `launcher plan`)."""
    r = cfg.ray
    cpus = r.cpus_per_worker
    if cpus == "auto":  # the drivers resolve it on the joined cluster (cluster.with_cpus); else a local Ray's share
        cpus = cluster.cpus_per_worker(cfg).cpus
        if cpus is None:
            raise ValueError("ray.cpus_per_worker auto on a cluster: resolve it with cluster.with_cpus(cfg) once joined")
    resources: dict[str, float] = {"CPU": cpus}
    if r.use_gpu:
        resources["GPU"] = r.gpus_per_worker
    if r.accelerator == "tpu" and not xla.cpu_lane():
        # One worker per TPU host, holding all of its chips (use_tpu=True would pick Ray's
        # torch_tpu backend, which is not torch-xla; see launcher/distributed/xla/).
        resources["TPU"] = float(r.tpus_per_worker)
    return resources


def placement_strategy(cfg: Config) -> str:
    """TPU workers are spread one per host (and placed all together: a placement group is gang-scheduled)."""
    r = cfg.ray
    if r.accelerator == "tpu" and not xla.cpu_lane() and r.num_workers > 1:
        return "STRICT_SPREAD"
    return r.placement_strategy


def scaling_config(cfg: Config):
    from ray.train import ScalingConfig

    r = cfg.ray
    return ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=worker_resources(cfg),
                         placement_strategy=placement_strategy(cfg))


def run_config(cfg: Config, name: str, score: tuple[str, str], callbacks: Optional[list] = None, storage: Optional[str] = None):
    """`score`: (the reported metric Ray ranks checkpoints by, its mode) for the top-k it keeps."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig

    return RunConfig(
        name=name,
        storage_path=storage or cfg.storage_path(),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep, checkpoint_score_attribute=score[0],
                                           checkpoint_score_order=score[1]),
        failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
        callbacks=callbacks or [],
        # Train's own INFO lines (one "Reporting training result N: TrainingReport(...)" per report,
        # worker-group starts) stay in its log files under the Ray session unless --verbose.
        logging_config=LoggingConfig(log_level=console.ray_log_level()),
    )


def torch_trainer(loop: Callable, loop_config: dict, cfg: Config, name: str, score: tuple[str, str],
                  callbacks: Optional[list] = None, storage: Optional[str] = None, datasets: Optional[dict] = None):
    """`datasets`: Ray Data datasets by name (data.streaming: {"train": ...}); each is split into
    equal shards, one per worker (`ray.train.get_dataset_shard(name)`)."""
    from ray.train.torch import TorchConfig

    extra = {}
    if datasets:
        from ray.train import DataConfig

        extra = {"datasets": datasets, "dataset_config": DataConfig(datasets_to_split=list(datasets))}
    return compat.trainer_without_dataset_manager()(
        loop, train_loop_config=loop_config, scaling_config=scaling_config(cfg), run_config=run_config(cfg, name, score, callbacks, storage),
        torch_config=TorchConfig(backend="gloo" if not cfg.ray.use_gpu else "nccl"), **extra)
