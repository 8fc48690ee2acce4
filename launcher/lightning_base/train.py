"""generic_train: the user's BaseTransformer on Ray Train workers, through launcher's Train machinery.

The driver ships the module object itself (a class in the script's `__main__` travels by value,
as Ray's cloudpickle does for any train-loop config), and launcher.training.fit.launch runs
`worker_loop` on `--ray_num_workers` workers: each worker gives the module's own DataLoaders a
distributed sampler over its shard, and launcher.training.loop.fit_module fits it with the same
callbacks, checkpoints, restarts and loggers as `launcher train`. The driver then loads the best
epoch by `--monitor` and saves it to <output_dir>/best_tfmr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import ray
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from launcher import compat, export, storage
from launcher.config import Config, from_dict, to_dict
from launcher.console import say
from launcher.distributed import cluster
from launcher.files import write_json, write_kv
from launcher.lightning_base.args import to_config
from launcher.training import loop as loop_lib
from launcher.training.callbacks import ReportCallback
from launcher.training.fit import launch
from launcher.training.scoring import CHECKPOINT_NAME
from launcher.training.session import TrainSession, run_log_client

BEST_DIR = "best_tfmr"


def plain_metrics(metrics) -> dict[str, float]:
    """Lightning's callback_metrics as plain floats (what the results files and the driver hold)."""
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


class LoggingCallback(pl.Callback):
    """Prints the validation and test results on rank 0 and writes them to <output_dir>/val_results.txt
    (the last validation) and test_results.txt, as sorted `key = value` lines of plain numbers."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, pl_module, "Validation", "val_results.txt")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, "Test", "test_results.txt")

    def _write(self, trainer, pl_module, title: str, filename: str) -> None:
        if trainer.global_rank != 0:
            return
        metrics = plain_metrics(trainer.callback_metrics)
        say(f"***** {title} results *****")
        for key in sorted(metrics):
            say(f"{key} = {metrics[key]}")
        out = str(pl_module.hparams.output_dir)
        os.makedirs(out, exist_ok=True)
        write_kv(os.path.join(out, filename), metrics)


# ---------------------------------------------------------------------- worker side


def shard(loader, rank: int, world: int, seed: int):
    """The user's DataLoader, reading this worker's part of its dataset (a DistributedSampler, shuffled
    when the loader shuffles), as Lightning's `use_distributed_sampler` does, at every world size."""
    if loader is None:
        return None
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    return compat.loader_with_sampler(loader, sampler)


def worker_loop(loop_config: dict) -> None:
    """Runs in every Ray Train worker: fit (or test) the shipped module on this worker's shard."""
    session = TrainSession()
    lc = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in loop_config.items()}
    cfg = from_dict(lc["cfg"])
    loop_lib.setup_process(cfg)
    module, rank, world = lc["module"], session.rank, session.world
    module.prepare_data = lambda: None  # ran on the driver (RayTrainer.fit)
    run_log = run_log_client(lc["run_log"])
    unused = bool(getattr(module, "ddp_find_unused_parameters", True))
    if lc["stage"] == "test":
        trainer = loop_lib.make_trainer(cfg, session, lc["callbacks"], False, find_unused_parameters=unused, **lc["trainer_kwargs"])
        trainer.test(module, dataloaders=shard(module.test_dataloader(), rank, world, cfg.train.seed), verbose=False)
        if rank == 0:
            run_log.record("test", plain_metrics(trainer.callback_metrics))
        return
    report = ReportCallback(lc["monitor"], lc["mode"], cfg.checkpoint.every_n_steps, session, run_log)
    try:
        with loop_lib.resume_point(session) as (ckpt_path, resumed_step):
            if rank == 0:
                run_log.record("start", {"time": time.time(), "resumed_step": resumed_step})
            module.train_loader = None
            module.setup("fit")
            module.train_loader = shard(module.train_dataloader(), rank, world, cfg.train.seed)
            loaders = {"train": module.train_loader, "validation": shard(module.val_dataloader(), rank, world, cfg.train.seed)}
            fitted = loop_lib.fit_module(cfg, session, run_log, module, loaders, ckpt_path, resumed_step, lc["monitor"], lc["mode"],
                                         extra_callbacks=lc["callbacks"], find_unused_parameters=unused, logger=lc["logger"],
                                         report=report, **lc["trainer_kwargs"])
    finally:
        shutil.rmtree(report.tmp, ignore_errors=True)  # the best-weights copy (the driver reads Ray's checkpoints)
    if fitted is not None and rank == 0:
        trainer, _ = fitted
        run_log.record("lightning_base", {"callback_metrics": plain_metrics(trainer.callback_metrics),
                                          "total_steps": int(module.total_steps()), "dataset_size": module.dataset_size})


# ---------------------------------------------------------------------- driver side


class RayTrainer:
    """What generic_train returns, in place of the original's pl.Trainer.

    `callback_metrics`: the last validation's metrics; `best_model_path`: the Lightning checkpoint of
    the best epoch by --monitor (its weights are also in <output_dir>/best_tfmr); `results`: what
    results.json holds; `test(model)`: the test split on the Ray workers with the best weights.
    """

    def __init__(self, model, args: argparse.Namespace, cfg: Config, callbacks: list, logger, trainer_kwargs: dict):
        self.model, self.args, self.cfg = model, args, cfg
        self.callbacks, self.logger, self.trainer_kwargs = callbacks, logger, trainer_kwargs
        self.callback_metrics: dict[str, float] = {}
        self.best_model_path: Optional[str] = None
        self.best_checkpoint = None
        self.results: dict = {}
        self.outcome = None
        self.name = None
        #: Ray Train RunConfig callbacks (generic_tune: Ray's TuneReportCallback)
        self.run_callbacks: list = []

    @property
    def monitor(self) -> str:
        return self.cfg.checkpoint.monitor

    @property
    def mode(self) -> str:
        return self.cfg.checkpoint.mode_for(self.monitor)

    def _start(self, model) -> None:
        # The workers run in folders of their own: paths in hparams must not be relative.
        for key in ("output_dir", "data_dir"):
            if model.hparams.get(key):
                model.hparams[key] = os.path.abspath(str(model.hparams[key]))
        model.output_dir = Path(model.hparams.output_dir)
        os.makedirs(self.cfg.output_dir, exist_ok=True)
        cluster.init_ray(self.cfg)
        cluster.check_resources(self.cfg, cluster.cluster_resources())
        self.name = self.name or storage.run_name(self.cfg)

    def _launch(self, model, stage: str, name: str):
        storage.delete(storage.join(self.cfg.storage_path(), name))  # a fresh run: never continue an earlier one of this name
        loop_config = {"cfg": to_dict(self.cfg), "module": ray.put(model), "stage": stage, "monitor": self.monitor, "mode": self.mode,
                       "callbacks": ray.put(list(self.callbacks)), "logger": ray.put(self.logger), "trainer_kwargs": self.trainer_kwargs}
        return launch(self.cfg, worker_loop, loop_config, name, self.monitor, self.mode, 0, callbacks=self.run_callbacks if stage == "fit" else None)

    def fit(self, model=None) -> None:
        model = model if model is not None else self.model
        self.model = model
        self._start(model)
        # Once, here, before the workers start (Lightning would run it on each node's first worker):
        # the cached-features files it writes are read by every worker from --data_dir.
        model.prepare_data()
        outcome = self._launch(model, "fit", self.name)
        self.outcome = outcome
        info = (outcome.records.get("lightning_base") or [{}])[-1]
        self.callback_metrics = dict(info.get("callback_metrics", {}))
        checkpoint, best_metrics = export.best_checkpoint(outcome.result, self.monitor, self.mode)
        best_dir = os.path.join(self.cfg.output_dir, BEST_DIR)
        if checkpoint is not None:
            self.best_checkpoint = checkpoint
            self.load_checkpoint(model, checkpoint)
            save_atomically(model, best_dir)
            if not checkpoint.path.startswith(("s3:", "gs:")) and "://" not in checkpoint.path:
                self.best_model_path = os.path.join(checkpoint.path, CHECKPOINT_NAME)
        results = export.results_dict(self.cfg, outcome, best_metrics, best_dir if checkpoint is not None else None)
        results.update(total_steps=info.get("total_steps"), final_lr=outcome.end.get("final_lr"), best_tfmr=results.pop("best_model"))
        if info.get("dataset_size") and outcome.wall_s:
            epochs = max(1, int(results.get("epochs_completed") or 1))
            results["train_samples_per_s"] = round(info["dataset_size"] * epochs / outcome.wall_s, 2)
        self.results = results
        write_json(os.path.join(self.cfg.output_dir, "results.json"), results)
        val = os.path.join(self.cfg.output_dir, "val_results.txt")
        if not os.path.exists(val) and self.callback_metrics:  # rank 0 ran on another node
            write_kv(val, self.callback_metrics)

    @staticmethod
    def load_checkpoint(model, checkpoint) -> None:
        """The weights of a Ray checkpoint of this run (a Lightning checkpoint inside) into `model`."""
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_NAME), map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])

    def test(self, model=None, *args, **kwargs) -> list[dict]:
        """Score the test split (`test_dataloader`) on the Ray workers with the best epoch's weights;
        writes test_results.txt and adds "test" to results.json. Returns [metrics] like Lightning."""
        model = model if model is not None else self.model
        if self.best_checkpoint is not None:
            self.load_checkpoint(model, self.best_checkpoint)
        self._start(model)
        out = os.path.join(self.cfg.output_dir, "test_results.txt")
        if os.path.exists(out):
            os.remove(out)
        outcome = self._launch(model, "test", f"{self.name}-test")
        metrics = dict(outcome.test)
        if not os.path.exists(out):  # rank 0 ran on another node (or no LoggingCallback)
            write_kv(out, metrics)
        self.results["test"] = metrics
        write_json(os.path.join(self.cfg.output_dir, "results.json"), self.results)
        return [metrics]


def save_atomically(model, path: str) -> None:
    """model.save_best into a temporary sibling folder, then renamed into place (never half a folder)."""
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=".tmp-best_tfmr-", dir=parent)
    try:
        model.save_best(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def generic_train(model, args: argparse.Namespace, early_stopping_callback=None, logger=True, extra_callbacks=(),
                  checkpoint_callback=None, logging_callback=None, **extra_train_kwargs) -> RayTrainer:
    """Seed, then (with --do_train) fit `model` on --ray_num_workers Ray Train workers.

    `logger`: True for launcher's loggers (TensorBoard and CSV under <output_dir>/logs), False for
    none, or Lightning logger objects; `extra_callbacks`, `early_stopping_callback`,
    `checkpoint_callback` (a ModelCheckpoint: Lightning checkpoints as well as Ray's) and
    `logging_callback` (default LoggingCallback) run in the workers; `extra_train_kwargs` are
    pl.Trainer arguments.
    """
    cfg = to_config(args)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    os.makedirs(cfg.output_dir, exist_ok=True)
    callbacks = [logging_callback if logging_callback is not None else LoggingCallback(), *extra_callbacks]
    if early_stopping_callback:
        callbacks.append(early_stopping_callback)
    overrides = dict(extra_train_kwargs)
    if checkpoint_callback is not None:
        callbacks.append(checkpoint_callback)
        overrides.setdefault("enable_checkpointing", True)
    trainer = RayTrainer(model, args, cfg, callbacks, logger, overrides)
    if getattr(args, "do_train", False):
        trainer.fit(model)
    return trainer
