"""Worker side of a stream: this worker's Ray Data shard as Lightning's training loader.

`StreamLoader` reads the shard (`ray.train.get_dataset_shard("train")`) in windows of
`GROUP_WINDOW` batches, sorts each window by length when `train.group_by_length` (less padding),
cuts it into batches in a seeded random order and pads each with the task's collator (dynamic
padding). It has a length: the exact batch count of an epoch, so Lightning's
`estimated_stepping_batches` (the schedule's total) equals the optimizer steps taken.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from launcher.data.streaming import BadRows, batches_per_rank

GROUP_WINDOW = 50  # batches sorted together, as launcher.data.sampling.TrainBatchSampler does


class StreamLoader:
    """Batches of a Ray Data shard, `batches` per epoch; resumable at a batch position."""

    def __init__(self, shard, rows: int, world: int, batch_size: int, collate: Callable[[list[dict]], dict],
                 seed: int, group_by_length: bool):
        self.shard = shard
        self.batch_size = batch_size
        self.collate = collate
        self.seed = seed
        self.group_by_length = group_by_length
        self.batches = batches_per_rank(rows, world, batch_size)
        self.epoch = 0
        self.start = 0  # batches of `epoch` already trained (a resumed run skips them)
        self.yielded = 0
        self.started = False

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[dict]:
        # One iteration per epoch. Lightning stops asking after `len` batches, so the epoch count
        # moves on at the start of the next iteration, not after the last batch.
        if self.started:
            self.epoch += 1
        self.started = True
        skip, self.start, self.yielded = self.start, 0, 0
        count = 0
        try:
            for batch in self._batches():
                count += 1
                if count > self.batches:
                    break  # never more than the schedule counted
                if count <= skip:
                    continue  # resumed mid-epoch: these batches were trained before the restart
                self.yielded = count
                yield batch
        except Exception as e:  # a bad row surfaces here wrapped in Ray's task errors
            bad = _bad_rows(e)
            if bad is not None:
                raise bad from None
            raise
        if count < self.batches:
            raise RuntimeError(f"the stream gave {count} batches in epoch {self.epoch}, {self.batches} were counted")

    def _batches(self) -> Iterator[dict]:
        rng = random.Random(self.seed + self.epoch)
        window = self.batch_size * GROUP_WINDOW
        pending = None
        # One window ahead: the shard's iterator has finished before the epoch's last batch is handed
        # out (Lightning never asks past it), so every worker's split of the epoch is complete.
        for table in self.shard.iter_batches(batch_size=window, batch_format="pyarrow", prefetch_batches=1):
            if pending is not None:
                yield from self._window(pending, rng)
            pending = table
        if pending is not None:
            yield from self._window(pending, rng)

    def _window(self, table, rng) -> Iterator[dict]:
        rows = table.to_pylist()
        if self.group_by_length and len(rows) > self.batch_size:
            rows.sort(key=lambda r: -len(r["input_ids"]))
        chunks = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        full = [c for c in chunks if len(c) == self.batch_size]
        rest = [c for c in chunks if len(c) != self.batch_size]  # the short batch stays last
        rng.shuffle(full)
        batches = [self.collate(chunk) for chunk in full + rest]
        yield from batches

    # Lightning's stateful-loader protocol (carried by launcher.training.resume.LoaderPosition)
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= self.batches:
            epoch, done = epoch + 1, 0
        self.epoch, self.start, self.started = epoch, done, False


def _bad_rows(e: BaseException):
    """The BadRows inside Ray's wrapped task errors, if any (its message, re-raised as BadRows)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, BadRows):
            # Ray re-raises a task's error as a class deriving from both RayTaskError and the cause,
            # whose text is the whole remote traceback: keep the one line that BadRows said.
            text = str(e)
            if type(e) is BadRows and "\n" not in text:
                return e
            if "BadRows: " in text:
                return BadRows(text.split("BadRows: ", 1)[1].splitlines()[0])
            cause = getattr(e, "cause", None)
            if isinstance(cause, BadRows) and cause is not e:
                e = cause
                continue
            return BadRows(text.strip().splitlines()[-1] if text.strip() else type(e).__name__)
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            e = cause
            continue
        text = str(e)
        if "BadRows: " in text:
            return BadRows(text.split("BadRows: ", 1)[1].splitlines()[0])
        e = e.__cause__ or e.__context__
    return None
