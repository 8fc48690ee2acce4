"""Checks of a whole Config that need neither data, model nor Ray: each section's own `check()`,
then the rules that combine sections. Raises ConfigError; runs in well under a second.

The task name is checked by its registry (launcher.tasks.check_name), which sits above config.
"""

from __future__ import annotations

from launcher.config import secrets
from launcher.config.schema import Config
from launcher.config.values import to_dict
from launcher.errors import ConfigError

def validate(cfg: Config) -> None:
    """Every check that needs no data, model or Ray. `launcher train` runs it once, before anything else."""
    secrets.check_config(to_dict(cfg))  # secrets come from the environment only
    cfg.model.check()
    cfg.data.check()
    cfg.optim.check()
    cfg.scheduler.check(cfg.optim.lr)
    cfg.train.check()
    cfg.checkpoint.check()
    cfg.ray.check()
    cfg.peft.check()
    if cfg.peft.method == "qlora" and not cfg.ray.use_gpu:
        raise ConfigError("peft.method", "qlora needs CUDA GPUs (bitsandbytes 4-bit weights)",
                          "set --ray.use_gpu true on a GPU cluster, or use --peft.method lora")
    if cfg.peft.enabled and cfg.model.from_config:
        raise ConfigError("peft.method", f"{cfg.peft.method} adapts pretrained weights, but model.from_config starts from random ones",
                          "set --peft.method none to train from scratch, or --model.from_config false")
    if cfg.ray.accelerator == "tpu" and cfg.train.precision not in ("32-true", "32", "bf16-mixed", "bf16-true"):
        raise ConfigError("train.precision", f"{cfg.train.precision} is not available on TPUs (XLA)", "use bf16-mixed, bf16-true or 32-true")
