"""Optimizers with no-decay parameter groups, and learning-rate schedules with warmup."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from launcher import compat
from launcher.config.schema import OptimConfig, SchedulerConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported inside the functions that build things: `launcher plan` uses warmup_steps
# and must stay fast without torch.

# transformers' get_scheduler covers every schedule we offer; only the names differ.
_HF_SCHEDULE = {
    "linear": "linear",
    "cosine": "cosine",
    "cosine_w_restarts": "cosine_with_restarts",
    "polynomial": "polynomial",
    "constant": "constant_with_warmup",
}


def _is_norm(module: nn.Module) -> bool:
    from torch import nn

    # By type, not by parameter name: LayerNorm/GroupNorm/BatchNorm and the RMSNorm/LayerNorm
    # classes that model files define themselves (LlamaRMSNorm, T5LayerNorm, ...).
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or compat.is_batch_norm(module):
        return True
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None and isinstance(module, rms):
        return True
    name = type(module).__name__.lower()
    return name.endswith("norm") or "layernorm" in name or "rmsnorm" in name


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights that decay, and biases + normalisation weights that never do."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        norm = _is_norm(module)
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if norm or pname == "bias" or param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str = "cpu") -> torch.optim.Optimizer:
    import torch

    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.name == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed learning rate (relative_step off) so the scheduler below drives it like AdamW's.
        return Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    fused = cfg.fused
    if fused is None:
        fused = device_type in ("cuda", "cpu")
    kwargs = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass  # e.g. a dtype or device the fused kernel does not support: foreach below
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def warmup_steps(cfg: SchedulerConfig, total_steps: int) -> int:
    """Warmup length; at least one step is left for the decay so every schedule reaches its end value."""
    steps = cfg.warmup_steps if cfg.warmup_steps > 0 else int(math.ceil(cfg.warmup_ratio * total_steps))
    return max(0, min(steps, total_steps - 1))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int):
    """A LambdaLR stepped once per optimizer step; ends at the schedule's end value after `total_steps`."""
    from transformers import get_scheduler

    specific = {}
    if cfg.name == "cosine" and cfg.num_cycles is not None:
        specific["num_cycles"] = cfg.num_cycles
    if cfg.name == "cosine_w_restarts":
        specific["num_cycles"] = int(cfg.num_cycles or 1)
    if cfg.name == "polynomial":
        specific.update(power=cfg.power, lr_end=cfg.lr_end)
    return get_scheduler(
        _HF_SCHEDULE[cfg.name],
        optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=specific or None,
    )


def end_lr(opt: OptimConfig, sched: SchedulerConfig) -> float:
    """The learning rate a schedule reaches after its last step."""
    if sched.name == "constant":
        return opt.lr
    if sched.name == "polynomial":
        return sched.lr_end
    if sched.name == "cosine" and sched.num_cycles not in (None, 0.5):
        return opt.lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(sched.num_cycles) * 2.0)))
    return 0.0
