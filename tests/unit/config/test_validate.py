"""launcher.config.validate: range checks name the key and the limit."""

from __future__ import annotations

import pytest

from launcher.config import Config, ConfigError, validate



@pytest.mark.parametrize("section,key,value,needle", [
    ("optim", "lr", 0.0, "optim.lr: must be > 0"),
    ("scheduler", "warmup_ratio", 1.0, "scheduler.warmup_ratio: must be in [0, 1)"),
    ("train", "accumulate_grad_batches", 0, "train.accumulate_grad_batches: must be >= 1"),
    ("ray", "num_workers", 0, "ray.num_workers: must be >= 1"),
    ("ray", "strategy", "fsdp", "ray.strategy: fsdp needs GPUs"),
])
def test_validate_ranges(section, key, value, needle):
    cfg = Config()
    cfg.model.name_or_path = "m"
    cfg.data.train_file = "x.csv"
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError, match=None) as e:
        validate(cfg)
    assert needle in str(e.value)
