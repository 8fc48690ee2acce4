"""`launcher train`: read → tokenise once → Ray Train workers run Lightning → export the best epoch.

`run()` is the whole driver flow, top to bottom. `fit()` is the part that Tune trials reuse, and
`train_loop()` is what every Ray Train worker runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from launcher import config as config_lib
from launcher.config import Config, ConfigError


# ====================================================================== driver


@dataclass
class Prepared:
    """What the driver hands to workers: tokenised splits (as Ray object refs), meta, tokenizer."""

    task: Any
    splits: dict
    meta: dict
    tokenizer: Any
    sizes: dict = field(default_factory=dict)


def prepare(cfg: Config):
    """Everything that can fail on bad config or data, before Ray starts. Raises ConfigError."""
    from launcher.tasks import get_task

    from launcher.data import check_paths

    config_lib.validate(cfg)
    check_paths(cfg)
    absolute_paths(cfg)
    task = get_task(cfg.task)(cfg)
    model_config = task.model_config()
    tokenizer = task.load_tokenizer()
    task.check_max_length(model_config, cfg.data.max_length)
    if hasattr(task, "check_model"):
        task.check_model(model_config, tokenizer)
    splits = task.load()
    tokenized, meta = task.prepare(splits, tokenizer)
    for name, ds in tokenized.items():
        if len(ds) == 0:
            raise ConfigError(f"data.{name}_file", f"no {name} examples left after preprocessing", "check the data and data.max_length")
    return Prepared(task=task, splits=tokenized, meta=meta, tokenizer=tokenizer,
                    sizes={k: len(v) for k, v in tokenized.items()})


def absolute_paths(cfg: Config) -> None:
    """Relative output_dir and local model paths → absolute, on the driver.

    Ray Train workers run in a folder of their own (and a Ray job's driver in its working_dir),
    so a relative path in the config would point somewhere else in the workers.
    """
    cfg.output_dir = os.path.abspath(cfg.output_dir)
    for attr in ("name_or_path", "tokenizer"):
        value = getattr(cfg.model, attr)
        if value and not os.path.isabs(value) and os.path.exists(value):
            setattr(cfg.model, attr, os.path.abspath(value))


def check_output_dir(cfg: Config, overwrite: bool, resume: bool) -> None:
    out = cfg.output_dir
    if os.path.isdir(out) and os.listdir(out) and not (overwrite or resume):
        raise ConfigError("output_dir", f"{out} is not empty", "pass --overwrite to replace it, --resume to continue it, or choose another output_dir")


def run(cfg: Config, overwrite: bool = False, resume: bool = False) -> dict:
    """The whole `launcher train` flow. Returns the results dict that is also written to results.json."""
    from launcher import distributed, export, storage

    check_output_dir(cfg, overwrite, resume)
    config_lib.validate(cfg)
    distributed.check_local_resources(cfg)  # before loading anything: the machine must fit the request
    name = storage.run_name(cfg)  # unique in shared storage, where Ray would resume a same-named run
    storage.check_run_state(cfg, name, overwrite, resume)
    prepared = prepare(cfg)
    if overwrite and not resume:
        export.clear_output_dir(cfg.output_dir)
        storage.clear_run(cfg, name)
    os.makedirs(cfg.output_dir, exist_ok=True)
    export.save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))

    distributed.init_ray(cfg)
    distributed.check_resources(cfg, distributed.cluster_resources())
    outcome = fit(cfg, prepared, name=name, resume=resume)
    results = export.finish(cfg, prepared, outcome)
    return results


@dataclass
class Outcome:
    """What one Ray Train run produced: Ray's Result plus the history rank 0 recorded."""

    result: Any
    history: list
    test: dict
    starts: int
    wall_s: float
    train_samples: int
    monitor: str
    mode: str
    storage: str
    name: str
    end: dict = field(default_factory=dict)

    @property
    def restarts(self) -> int:
        return max(self.starts - 1, 0)


def fit(cfg: Config, prepared: Prepared, name: str = "train", resume: bool = False, callbacks=None,
        storage: Optional[str] = None, extra_loop_config: Optional[dict] = None) -> Outcome:
    """Run the Ray Train job for `cfg` (used by `launcher train` and by every Tune trial)."""
    import ray

    from launcher import distributed
    from launcher.data import to_table

    monitor = prepared.task.monitor
    mode = cfg.checkpoint.mode or config_lib.default_mode(monitor)
    # Pinned to the driver's node: the run's record must outlive any worker node that fails.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    run_log = RunLog.options(num_cpus=0, scheduling_strategy=here).remote()
    loop_config = {
        "cfg": config_lib.to_dict(cfg),
        "meta": prepared.meta,
        # Object refs: the Train controller unpickles this config too, and need not import
        # transformers for a tokenizer it never uses (launcher tune hands in refs already).
        "tokenizer": prepared.tokenizer if isinstance(prepared.tokenizer, ray.ObjectRef) else ray.put(prepared.tokenizer),
        "data": {k: v if isinstance(v, ray.ObjectRef) else ray.put(to_table(v)) for k, v in prepared.splits.items()},
        "run_log": run_log,
        "monitor": monitor,
        "mode": mode,
    }
    loop_config.update(extra_loop_config or {})
    storage = storage or config_lib.storage_path(cfg)
    trainer = distributed.torch_trainer(train_loop, loop_config, cfg, name, monitor, mode, callbacks, storage)
    start = time.time()
    try:
        result = trainer.fit()
    finally:
        log = ray.get(run_log.get.remote())
        ray.kill(run_log)
    wall = time.time() - start
    if getattr(result, "error", None) is not None:
        raise result.error
    if log.get("fatal"):
        from launcher.callbacks import NonFiniteLoss

        raise NonFiniteLoss(log["fatal"][-1]["message"])
    history = dedupe_history(log.get("report", []))
    test = (log.get("test") or [{}])[-1]
    end = (log.get("end") or [{}])[-1]
    end["resumed_steps"] = [s["resumed_step"] for s in log.get("start", []) if s.get("resumed_step") is not None]
    samples = prepared.sizes["train"] * max(1, int(max((h.get("epoch", 0) for h in history), default=0)))
    return Outcome(result=result, history=history, test=test, starts=len(log.get("start", [])), wall_s=wall, end=end,
                   train_samples=samples, monitor=monitor, mode=mode, storage=storage, name=name)


def dedupe_history(reports: list) -> list:
    """Validation reports keyed by epoch: a report repeated after a restart replaces the old one."""
    by_epoch = {}
    for r in reports:
        if r.get("kind") == "val":
            by_epoch[r["epoch"]] = r
    return [by_epoch[k] for k in sorted(by_epoch)]


def _ray_remote(cls):
    import ray

    return ray.remote(cls)


class _RunLog:
    """A tiny actor that rank 0 tells what happened (reports, test metrics, starts)."""

    def __init__(self):
        self.items: dict[str, list] = {}

    def record(self, kind: str, item: dict) -> None:
        self.items.setdefault(kind, []).append(item)

    def get(self) -> dict:
        return self.items


class _LazyRemote:
    # Defers `ray.remote` until first use so importing this module stays cheap.
    def __init__(self, cls):
        self.cls, self.remote_cls = cls, None

    def __getattr__(self, name):
        if self.remote_cls is None:
            self.remote_cls = _ray_remote(self.cls)
        return getattr(self.remote_cls, name)


RunLog = _LazyRemote(_RunLog)


# ====================================================================== workers


def train_loop(loop_config: dict) -> None:
    """Runs in every Ray Train worker: same task module and data, this rank's shard."""
    import lightning.pytorch as pl
    import ray
    import ray.train
    import torch

    from launcher import distributed
    from launcher.callbacks import CHECKPOINT_NAME, NonFiniteGuard, NonFiniteLoss, ProgressLog, ReportCallback
    from launcher.data import from_table
    from launcher import resume
    from launcher.resume import LoaderPosition
    from launcher.tasks import get_task

    loop_config = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in loop_config.items()}  # see fit()
    cfg = config_lib.from_dict(loop_config["cfg"])
    quiet_warnings()
    rank, world = distributed.worker_context()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    run_log = loop_config["run_log"]
    # A restarted worker group resumes this run's latest checkpoint; a fresh run may start from one
    # the caller hands in (launcher tune: a PBT trial continuing from a better trial's weights).
    own_checkpoint = ray.train.get_checkpoint()
    checkpoint = own_checkpoint or loop_config.get("init_checkpoint")
    # as_directory: a checkpoint on local or shared storage is read in place, one in a bucket is
    # downloaded to a temporary folder that closing removes (to_directory() left a copy in /tmp
    # for every restart and every PBT exploit).
    checkpoint_dir = contextlib.ExitStack()
    ckpt_path = (os.path.join(checkpoint_dir.enter_context(checkpoint.as_directory()), CHECKPOINT_NAME)
                 if checkpoint is not None else None)
    resumed_step = resume.checkpoint_step(ckpt_path) if own_checkpoint is not None else None
    if rank == 0:
        run_log.record.remote("start", {"time": time.time(), "resumed_step": resumed_step})

    task = get_task(cfg.task)(cfg)
    tokenizer = loop_config["tokenizer"]
    meta = loop_config["meta"]
    splits = {k: from_table(ray.get(ref)) for k, ref in loop_config["data"].items()}
    module = task.module(meta, tokenizer)
    loaders = build_loaders(task, cfg, splits, tokenizer, rank, world)

    report = ReportCallback(loop_config["monitor"], loop_config["mode"], cfg.checkpoint.every_n_steps, run_log)
    guard = NonFiniteGuard(cfg.train.skip_nonfinite_batches, run_log)
    callbacks = [report, guard, LoaderPosition(loaders["train"]), ProgressLog(cfg.logging.progress_every_s)]
    callbacks += list(loop_config.get("callbacks", []))
    callbacks += distributed.worker_callbacks(cfg)
    t = cfg.train
    trainer = pl.Trainer(
        max_epochs=t.max_epochs if t.max_steps < 0 else -1,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        precision=t.precision,
        gradient_clip_val=t.gradient_clip_val if cfg.optim.name != "adafactor" or t.gradient_clip_val else None,
        val_check_interval=t.val_check_interval if t.val_check_interval <= 1 else int(t.val_check_interval),
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # our samplers shard exactly (see launcher.data)
        deterministic=t.deterministic,
        logger=loggers(cfg, resumed_step) if rank == 0 else False,
        callbacks=callbacks,
        **distributed.lightning_kwargs(cfg),
    )
    trainer = distributed.prepare(trainer)
    try:
        trainer.fit(module, train_dataloaders=loaders["train"], val_dataloaders=loaders["validation"], ckpt_path=ckpt_path)
    except NonFiniteLoss as e:
        # Every rank raises it at the same step (NonFiniteGuard decides together). Returning instead
        # of raising keeps Ray from restarting the workers into the same NaN; the driver raises it.
        if rank == 0:
            ray.get(run_log.record.remote("fatal", {"message": str(e)}))
        return
    finally:
        checkpoint_dir.close()

    if rank == 0:
        run_log.record.remote("end", {"global_step": trainer.global_step, "epochs_completed": trainer.current_epoch,
                                      "skipped_steps": guard.skipped})
    if "test" in loaders:
        on_best = report.load_best(module)
        trainer.test(module, dataloaders=loaders["test"], verbose=False)
        if rank == 0:
            test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
            test["weights"] = "best" if on_best else "last"
            run_log.record.remote("test", test)
    if rank == 0 and cfg.logging.csv and (resumed_step is not None or cfg.checkpoint.every_n_steps):
        # Rows repeated by a restarted group, or logged twice at step checkpoints (ReportCallback).
        resume.dedupe_csv(os.path.join(os.path.abspath(cfg.output_dir), "logs", "csv", "metrics.csv"))


def quiet_warnings() -> None:
    import logging
    import warnings

    # Metrics are already global (torchmetrics syncs in compute()), so Lightning's sync_dist advice
    # does not apply; the rest are Lightning's one-line notices that Ray would print per worker.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Found .* module.*in eval mode.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)


def build_loaders(task, cfg: Config, splits: dict, tokenizer, rank: int, world: int) -> dict:
    from torch.utils.data import DataLoader

    from launcher.data import EvalShard, TrainBatchSampler
    from launcher.resume import ResumableLoader

    collate = task.collator(tokenizer)
    train_collate = eval_collate = collate
    if cfg.ray.accelerator == "tpu":
        # XLA compiles a graph per batch shape: full batches, sequence lengths in a few buckets.
        from launcher.xla import collators

        train_collate, eval_collate = collators(collate, tokenizer, cfg)
    common = {"num_workers": cfg.data.num_workers, "persistent_workers": cfg.data.num_workers > 0}
    train = splits["train"]
    sampler = TrainBatchSampler(task.lengths(train), cfg.train.batch_size, rank, world, cfg.train.seed, cfg.train.group_by_length)
    # Resumable: a worker group restarted mid-epoch continues with the batches not yet trained.
    loaders = {"train": ResumableLoader(train, batch_sampler=sampler, collate_fn=train_collate, **common)}
    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size * 2
    for name in ("validation", "test"):
        if name in splits:
            loaders[name] = DataLoader(EvalShard(splits[name], rank, world), batch_size=eval_bs, shuffle=False,
                                       collate_fn=eval_collate, **common)
    return loaders


def loggers(cfg: Config, resumed_step: Optional[int] = None) -> list:
    """Rank 0's loggers. `resumed_step`: this worker group continues a run from that step, so the
    logs keep the history before it and drop what the failed group logged after it."""
    from lightning.pytorch import loggers as pl_loggers

    from launcher.resume import HistoryCSVLogger

    out = []
    log_dir = os.path.join(os.path.abspath(cfg.output_dir), "logs")
    if cfg.logging.tensorboard:
        # purge_step: TensorBoard hides events at or after it from earlier writers of this folder.
        purge = {"purge_step": resumed_step} if resumed_step is not None else {}
        try:
            out.append(pl_loggers.TensorBoardLogger(log_dir, name="", version="tensorboard", default_hp_metric=False, **purge))
        except ModuleNotFoundError:
            print("[launcher] tensorboard not installed: skipping TensorBoard logs", file=sys.stderr)
    if cfg.logging.csv:
        csv_logger = HistoryCSVLogger if resumed_step is not None else pl_loggers.CSVLogger
        out.append(csv_logger(log_dir, name="", version="csv"))
    if cfg.logging.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("logging.wandb", "wandb is not installed", "pip install 'launcher[wandb]'") from None
        out.append(pl_loggers.WandbLogger(project=cfg.logging.wandb_project or "launcher", save_dir=log_dir))
    if cfg.logging.mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("logging.mlflow", "mlflow is not installed", "pip install 'launcher[mlflow]'") from None
        uri = cfg.logging.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{os.path.join(os.path.abspath(cfg.output_dir), 'mlruns')}"
        out.append(pl_loggers.MLFlowLogger(experiment_name="launcher", tracking_uri=uri))
    return out


def summary_line(results: dict) -> str:
    best = results.get("best_value")
    return (f"best {results['monitor']} = {best:.4f} at epoch {results['best_epoch']:g}" if isinstance(best, float) and math.isfinite(best)
            else "no validation result")
