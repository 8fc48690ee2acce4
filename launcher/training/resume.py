"""Resuming exactly where a run stopped: the data position inside an epoch, and the logs.

Ray Train restarts a worker group from the latest reported checkpoint. Lightning restores the model,
optimizer, scheduler, global_step and its loop counters from that checkpoint, but a plain DataLoader
starts its epoch from the first batch again: a run resumed mid-epoch would train the epoch's first
batches twice and never see its last ones. `ResumableLoader` records how far the epoch got and
`LoaderPosition` carries that through every checkpoint, so the resumed epoch continues with the
batches not yet trained, in the same order.
"""

from __future__ import annotations

import csv
import os

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch.utils.data import DataLoader

from launcher import compat


class ResumableLoader(DataLoader):
    """A training DataLoader over a `launcher.data.sampling.TrainBatchSampler` that Lightning can resume.

    The position saved is the number of batches this loader has handed to the training loop in the
    current epoch (torch's iterator counts them, so DataLoader worker prefetching does not inflate
    it; Lightning itself does not prefetch loaders of known length). On load, the sampler skips
    those batches of that epoch, so a resumed run trains the same batches in the same order as an
    uninterrupted one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_iterator = None

    def __iter__(self):
        self._last_iterator = super().__iter__()
        return self._last_iterator

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        yielded = compat.batches_yielded(self._last_iterator)
        return {"epoch": sampler.epoch, "batches_done": sampler.offset + yielded}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume_at(int(state["epoch"]), int(state["batches_done"]))


class LoaderPosition(pl.Callback):
    """Carries a ResumableLoader's position through checkpoints as callback state.

    Lightning restores a stateful loader only when it builds the training iterator after the
    checkpoint is loaded; a module whose configure_optimizers reads `estimated_stepping_batches`
    (every TaskModule: the schedule needs the total) makes Lightning build it earlier, and the
    loader state is then never applied. Callback state is restored before either happens.
    """

    def __init__(self, loader: ResumableLoader):
        self.loader = loader

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.loader.load_state_dict(state)


# ---------------------------------------------------------------------- logs across restarts


def checkpoint_step(ckpt_path: str) -> int:
    """The global step a Lightning checkpoint was saved at (memory-mapped: the weights are not read)."""
    import torch

    return int(torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


class HistoryCSVLogger(CSVLogger):
    """A CSVLogger that continues the metrics.csv of an earlier worker group of the same run.

    Lightning's CSV writer deletes an existing metrics.csv when it starts, so a restarted worker
    group would erase the history before the failure. This one keeps those rows; the steps the
    restarted group repeats (those after its checkpoint) are dropped by `dedupe_csv` at the end.
    """

    @property
    @rank_zero_experiment
    def experiment(self):
        if compat.cached_logger_experiment(self) is not None:
            return compat.cached_logger_experiment(self)
        path = os.path.join(self.log_dir, "metrics.csv")
        rows, keys = [], []
        if os.path.isfile(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                rows, keys = list(reader), list(reader.fieldnames or [])
        experiment = super().experiment  # removes the old file
        if rows:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
            experiment.metrics_keys = sorted(keys)
        return experiment


def dedupe_csv(path: str) -> None:
    """Keep the last of rows logged for the same step with the same metrics (a restarted worker
    group repeats the steps after its checkpoint, with the same values: exact resume)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, keys = list(reader), list(reader.fieldnames or [])
    last = {}
    for i, row in enumerate(rows):
        last[(row.get("step"), tuple(k for k in keys if row.get(k) not in ("", None)))] = i
    keep = sorted(last.values())
    if len(keep) == len(rows):
        return
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows[i] for i in keep)
    os.replace(tmp, path)

