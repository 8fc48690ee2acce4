"""launcher.search.tuner: PBT's explore step stays inside the searched ranges."""

from __future__ import annotations



def test_pbt_explore_stays_in_range():
    from launcher.search.tuner import clip_to_bounds

    cfg = {"optim.lr": 3e-4, "scheduler.warmup_ratio": -0.01, "train.batch_size": 40.2, "scheduler.name": "cosine"}
    out = clip_to_bounds(cfg, {"optim.lr": (1e-5, 2e-4), "scheduler.warmup_ratio": (0.0, 0.2), "train.batch_size": (8, 32)})
    assert out == {"optim.lr": 2e-4, "scheduler.warmup_ratio": 0.0, "train.batch_size": 32, "scheduler.name": "cosine"}
