"""Worker side of a Ray Train run: what every Ray Train worker runs (`train_loop`).

The same task module and data on every worker, each reading its own shard; Lightning drives the
steps, launcher's callbacks report to Ray, print progress and guard against NaN. Imported by the
Train controller too (it unpickles `train_loop`), so torch and Lightning are imported inside the
functions, in the workers only.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import shutil
import sys
import time
import warnings
from typing import Optional

from launcher import compat, console
from launcher.config import Config, from_dict
from launcher.data.sampling import EvalShard, TrainBatchSampler, from_table
from launcher.data.stream_loader import StreamLoader
from launcher.data.streaming import BadRows
from launcher.distributed import strategy
from launcher.distributed.xla.shapes import collators
from launcher.errors import ConfigError, NonFiniteLoss
from launcher.tasks import get_task
from launcher.training.scoring import CHECKPOINT_NAME
from launcher.training.session import TrainSession, run_log_client


class StreamShard:
    """The training split of a streaming run in a worker: its Ray Data shard and the epoch's row count."""

    def __init__(self, shard, rows: int):
        self.shard, self.rows = shard, rows


def train_loop(loop_config: dict) -> None:
    """Runs in every Ray Train worker: same task module and data, this rank's shard."""
    run(loop_config, TrainSession())


def run(loop_config: dict, session) -> None:
    """The training loop of one worker (or one single-process Tune trial), reporting through `session`.

    `loop_config` (made by launcher.training.fit): cfg, meta, tokenizer and data (object refs or
    values), run_log, monitor, mode; optionally callbacks (extra Lightning callbacks) and
    init_checkpoint (a checkpoint to start from when the run has none of its own).
    """
    # In the workers only (the Train controller imports this module too): torch, Lightning, the task.
    import ray

    from launcher.training.callbacks import ReportCallback

    loop_config = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in loop_config.items()}  # see fit.ship
    cfg = from_dict(loop_config["cfg"])
    setup_process(cfg)
    run_log = run_log_client(loop_config["run_log"])
    report = ReportCallback(loop_config["monitor"], loop_config["mode"], cfg.checkpoint.every_n_steps, session, run_log)
    try:
        _fit_and_test(cfg, loop_config, session, run_log, report)
    finally:
        shutil.rmtree(report.tmp, ignore_errors=True)  # best weights and report copies (a reused trial actor runs many)


def _fit_and_test(cfg: Config, loop_config: dict, session, run_log, report) -> None:
    import ray

    from launcher.training import resume

    rank, world = session.rank, session.world
    with resume_point(session, loop_config.get("init_checkpoint")) as (ckpt_path, resumed_step):
        if rank == 0:
            run_log.record("start", {"time": time.time(), "resumed_step": resumed_step})
        task = get_task(cfg.task)(cfg)
        tokenizer = loop_config["tokenizer"]
        splits = {k: from_table(ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref) for k, ref in loop_config["data"].items()}
        module = task.module(loop_config["meta"], tokenizer)
        stream = loop_config.get("stream")
        if stream:  # data.streaming: the training rows come from this worker's Ray Data shard
            splits["train"] = StreamShard(session.dataset_shard("train"), stream["rows"])
        loaders = build_loaders(task, cfg, splits, tokenizer, rank, world)

        fitted = fit_module(cfg, session, run_log, module, loaders, ckpt_path, resumed_step, loop_config["monitor"], loop_config["mode"],
                            extra_callbacks=loop_config.get("callbacks", []), report=report,
                            find_unused_parameters=bool(getattr(task, "ddp_find_unused_parameters", False)))
        if fitted is None:
            return
        trainer, report = fitted

    if "test" in loaders:
        on_best = report.load_best(module)
        trainer.test(module, dataloaders=loaders["test"], verbose=False)
        if rank == 0:
            test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_")}
            test["weights"] = "best" if on_best else "last"
            run_log.record("test", test)
    if rank == 0 and cfg.logging.csv and (resumed_step is not None or cfg.checkpoint.every_n_steps):
        # Rows repeated by a restarted group, or logged twice at step checkpoints (ReportCallback).
        resume.dedupe_csv(os.path.join(os.path.abspath(cfg.output_dir), "logs", "csv", "metrics.csv"))


def fit_module(cfg: Config, session, run_log, module, loaders: dict, ckpt_path: Optional[str], resumed_step: Optional[int],
               monitor: str, mode: str, extra_callbacks=(), find_unused_parameters: bool = False, logger=True, report=None,
               **trainer_overrides):
    """Fit `module` on this worker's `loaders` with launcher's callbacks; (trainer, ReportCallback),
    or None when the loss went non-finite (recorded as fatal for the driver).

    Shared by `launcher train` (a task's module and loaders) and launcher.lightning_base (a user's
    LightningModule and its own loaders). `logger`: True for launcher's loggers on rank 0, False for
    none, or Lightning logger objects.
    """
    from launcher.training import resume
    from launcher.training.callbacks import NonFiniteGuard, ProgressLog, ReportCallback

    rank = session.rank
    if report is None:
        report = ReportCallback(monitor, mode, cfg.checkpoint.every_n_steps, session, run_log)
    guard = NonFiniteGuard(cfg.train.skip_nonfinite_batches)
    callbacks = [report, guard, ProgressLog(cfg.logging.progress_every_s)]
    if isinstance(loaders["train"], (resume.ResumableLoader, StreamLoader)):
        callbacks.insert(2, resume.LoaderPosition(loaders["train"]))
    callbacks += list(extra_callbacks)
    if logger is True:
        logger = loggers(cfg, resumed_step) if rank == 0 else False
    elif rank != 0:
        logger = False
    trainer = make_trainer(cfg, session, callbacks, logger, find_unused_parameters=find_unused_parameters, **trainer_overrides)
    try:
        trainer.fit(module, train_dataloaders=loaders["train"], val_dataloaders=loaders.get("validation"), ckpt_path=ckpt_path)
    except BadRows as e:
        # Bad data fails the same way on a restarted group: stop, and let the driver say it in one line
        # (whichever worker's shard met the row).
        run_log.record("fatal", {"message": str(e), "bad_rows": True}, wait=True)
        return None
    except NonFiniteLoss as e:
        # Every rank raises it at the same step (NonFiniteGuard decides together). Returning instead
        # of raising keeps Ray from restarting the workers into the same NaN; the driver raises it.
        if rank == 0:
            run_log.record("fatal", {"message": str(e)}, wait=True)
        return None
    if rank == 0:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        run_log.record("end", {"global_step": trainer.global_step, "epochs_completed": trainer.current_epoch,
                               "skipped_steps": guard.skipped, "final_lr": lr})
    return trainer, report


def setup_process(cfg: Config) -> None:
    """Per-run process state: threads, seeds, warning filters.

    Set at the start of every run, not once per process: a reused Tune trial actor runs one trial
    after another (launcher.search.trial), each with its own config. Lightning sets the
    deterministic-algorithms flag for each Trainer itself (`train.deterministic`).
    """
    import lightning.pytorch as pl
    import torch

    quiet_warnings()
    # Ray Train's "Reporting training result N: ..." line per report: only with --verbose.
    compat.quiet_train_reports(logging.INFO if console.verbose() else logging.WARNING)
    torch.set_num_threads(torch_threads(cfg.ray.cpus_per_worker))
    torch.set_grad_enabled(True)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)


def torch_threads(cpus_per_worker) -> int:
    """torch's intra-op threads: the worker's CPUs (the drivers resolve auto to a number; a loop
    started without one uses the CPUs Ray assigned to this process)."""
    if cpus_per_worker == "auto":
        import ray

        cpus_per_worker = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus_per_worker))


def release_memory() -> None:
    """After a run in a process that goes on (a reused trial actor): collect the model, optimizer and
    loaders the run left in reference cycles, and return cached CUDA blocks to the device."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:  # glibc keeps freed heap pages mapped; hand them back so RSS shows what is really in use
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # another libc (musl): nothing to trim
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@contextlib.contextmanager
def resume_point(session, init_checkpoint=None):
    """(Lightning checkpoint path or None, the step it resumes at or None) for this run.

    A restarted worker group resumes this run's latest checkpoint; a fresh run may start from one
    the caller hands in (launcher tune: a PBT trial continuing from a better trial's weights), which
    is not a resume of this run (no resumed step: its logs start fresh).
    """
    from launcher.training import resume

    own = session.get_checkpoint()
    checkpoint = own or init_checkpoint
    if checkpoint is None:
        yield None, None
        return
    # as_directory: a checkpoint on local or shared storage is read in place, one in a bucket is
    # downloaded to a temporary folder that closing removes (to_directory() left a copy in /tmp
    # for every restart and every PBT exploit).
    with checkpoint.as_directory() as folder:
        path = os.path.join(folder, CHECKPOINT_NAME)
        yield path, (resume.checkpoint_step(path) if own is not None else None)


def make_trainer(cfg: Config, session, callbacks: list, logger, find_unused_parameters: bool = False, **overrides):
    """The pl.Trainer of a launcher run: the config's training settings, the strategy for `session`
    (launcher.distributed.strategy), launcher's callbacks; `overrides` replace any Trainer argument."""
    import lightning.pytorch as pl

    t = cfg.train
    settings = dict(
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
        use_distributed_sampler=False,  # launcher's samplers shard exactly (launcher.data.sampling)
        deterministic=t.deterministic,
        logger=logger,
        callbacks=list(callbacks) + strategy.worker_callbacks(cfg),
        **strategy.lightning_kwargs(cfg, session, find_unused_parameters=find_unused_parameters),
    )
    settings.update(overrides)
    return strategy.prepare_trainer(pl.Trainer(**settings))


def quiet_warnings() -> None:
    # Metrics are already global (torchmetrics syncs in compute()), so Lightning's sync_dist advice
    # does not apply; the rest are Lightning's one-line notices that Ray would print per worker.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Found .* module.*in eval mode.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)


def build_loaders(task, cfg: Config, splits: dict, tokenizer, rank: int, world: int) -> dict:
    from torch.utils.data import DataLoader

    from launcher.training.resume import ResumableLoader

    collate = task.collator(tokenizer)
    train_collate = eval_collate = collate
    if cfg.ray.accelerator == "tpu":
        # XLA compiles a graph per batch shape: full batches, sequence lengths in a few buckets.

        train_collate, eval_collate = collators(collate, tokenizer, cfg)
    common = {"num_workers": cfg.data.num_workers, "persistent_workers": cfg.data.num_workers > 0}
    train = splits["train"]
    if isinstance(train, StreamShard):
        # Batches of this worker's Ray Data shard, padded by the same collator; resumable at a batch.
        loaders = {"train": StreamLoader(train.shard, train.rows, world, cfg.train.batch_size, train_collate, cfg.train.seed,
                                         cfg.train.group_by_length)}
    else:
        sampler = TrainBatchSampler(task.lengths(train), cfg.train.batch_size, rank, world, cfg.train.seed, cfg.train.group_by_length)
        # Resumable: a worker group restarted mid-epoch continues with the batches not yet trained.
        loaders = {"train": ResumableLoader(train, batch_sampler=sampler, collate_fn=train_collate, **common)}
    eval_bs = cfg.train.eval_batch_size_or_default()
    for name in ("validation", "test"):
        if name in splits:
            loaders[name] = DataLoader(EvalShard(splits[name], rank, world), batch_size=eval_bs, shuffle=False,
                                       collate_fn=eval_collate, **common)
    return loaders


def loggers(cfg: Config, resumed_step: Optional[int] = None) -> list:
    """Rank 0's loggers. `resumed_step`: this worker group continues a run from that step, so the
    logs keep the history before it and drop what the failed group logged after it."""
    from lightning.pytorch import loggers as pl_loggers

    from launcher.training.resume import HistoryCSVLogger

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
