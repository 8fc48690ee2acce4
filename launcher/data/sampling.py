"""What the workers do with the tokenised splits: exact per-rank sharding and the step arithmetic.

The driver ships each split as a self-contained Arrow table (`to_table`); a worker turns it back
into a Dataset (`from_table`) and reads its shard through TrainBatchSampler (training) or EvalShard
(validation and test). The step formulas here are the ones `launcher plan` prints and the
schedules are built from.
"""

from __future__ import annotations

import math
from typing import Iterator


# ---------------------------------------------------------------- driver → workers


def to_table(ds):
    """A self-contained Arrow table (no cache-file paths) that Ray can ship to any node."""
    return ds.flatten_indices().with_format(None).data.table


def from_table(table):
    import datasets

    return datasets.Dataset(table)


# ---------------------------------------------------------------- step arithmetic


def batches_per_rank(n: int, world: int, batch_size: int) -> int:
    """Training batches each rank runs per epoch (TrainBatchSampler pads ranks to equal counts)."""
    return math.ceil(math.ceil(n / world) / batch_size)


def optimizer_steps_per_epoch(n: int, world: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps per epoch: Lightning steps after every `accumulation` batches and after the last one."""
    return math.ceil(batches_per_rank(n, world, batch_size) / accumulation)


def optimizer_steps(n: int, world: int, batch_size: int, accumulation: int, epochs: int, max_steps: int = -1) -> int:
    """Total optimizer steps of a run (what `global_step` ends at)."""
    total = optimizer_steps_per_epoch(n, world, batch_size, accumulation) * epochs
    return min(total, max_steps) if max_steps > 0 else total


# ---------------------------------------------------------------- samplers (inside workers)


class TrainBatchSampler:
    """Shuffled, optionally length-grouped batches of this rank's shard.

    Written by hand because neither torch nor Lightning has a distributed *length-grouped* batch
    sampler, and we need exact control of the per-rank batch count: every rank gets
    ceil(ceil(N / world) / batch_size) batches (indices padded by wrapping, as DistributedSampler
    does), so optimizer-step counts are identical on every rank and known in advance.
    """

    def __init__(self, lengths: list[int], batch_size: int, rank: int, world: int, seed: int, group_by_length: bool):
        self.lengths = lengths
        self.batch_size = batch_size
        self.rank, self.world, self.seed = rank, world, seed
        self.group_by_length = group_by_length
        self.epoch = 0
        self.per_rank = math.ceil(len(lengths) / world)
        # Resuming mid-epoch: the next iteration starts at batch `start` of `epoch` (see
        # launcher.training.resume.ResumableLoader); `offset` is where the current iteration started.
        self.start = 0
        self.offset = 0

    @property
    def sampler(self) -> "TrainBatchSampler":
        # Lightning calls set_epoch on `loader.sampler` and `loader.batch_sampler.sampler`, never on
        # the batch sampler itself: without this every epoch would repeat epoch 0's order.
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Continue `epoch` after its first `batches_done` batches (the next epoch when it was complete)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.start = epoch, batches_done

    def __len__(self) -> int:
        return batches_per_rank(len(self.lengths), self.world, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # The same epoch order as an uninterrupted run, minus the batches already trained.
        self.offset, self.start = self.start, 0
        yield from self.epoch_batches()[self.offset:]

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches of `self.epoch`, in order."""
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        total = self.per_rank * self.world
        order += order[: total - len(order)]  # wrap so every rank gets the same count
        mine = order[self.rank : total : self.world]
        if self.group_by_length and len(mine) > self.batch_size:
            # Sort within mega-batches of 50 batches (as HF's LengthGroupedSampler does): little
            # padding, while batch order stays random.
            mega = self.batch_size * 50
            chunks = [sorted(mine[i : i + mega], key=lambda j: -self.lengths[j]) for i in range(0, len(mine), mega)]
            batches = [c[i : i + self.batch_size] for c in chunks for i in range(0, len(c), self.batch_size)]
            # Keep the short remainder batch last so batch sizes match the ungrouped order.
            full = [b for b in batches if len(b) == self.batch_size]
            rest = [b for b in batches if len(b) != self.batch_size]
            perm = torch.randperm(len(full), generator=g).tolist()
            return [full[i] for i in perm] + rest
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]


class EvalShard:
    """This rank's share of an evaluation set, padded to equal length with marked pad rows.

    DistributedSampler pads by repeating examples, which double-counts them in metrics; here the
    repeats carry `_pad=1` so metrics skip them: every example is scored exactly once, and every
    rank runs the same number of batches.
    """

    def __init__(self, dataset, rank: int, world: int):
        self.dataset = dataset
        n = len(dataset)
        per_rank = math.ceil(n / world) if n else 0
        self.indices = [i for i in range(rank, per_rank * world, world)]
        self.n = n

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = self.indices[i]
        item = dict(self.dataset[j if j < self.n else 0])
        item["_pad"] = int(j >= self.n)
        item["_index"] = j if j < self.n else -1
        return item
