"""launcher.data.sampling: per-rank shards cover every example with equal batch counts."""

from __future__ import annotations

import math

from launcher.data.sampling import TrainBatchSampler, batches_per_rank


def test_sampler_shards_cover_every_example_with_equal_counts():
    lengths = [i % 7 + 1 for i in range(23)]
    world, bs = 3, 4
    seen = []
    counts = set()
    for rank in range(world):
        s = TrainBatchSampler(lengths, bs, rank, world, seed=0, group_by_length=True)
        batches = list(s)
        counts.add(len(batches))
        assert len(batches) == len(s) == batches_per_rank(23, world, bs)
        seen += [i for b in batches for i in b]
    assert len(counts) == 1
    assert set(seen) == set(range(23)) and len(seen) == math.ceil(23 / world) * world
