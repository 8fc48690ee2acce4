"""launcher.optim: parameter groups, optimizers and schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from launcher import optim as optim_lib
from launcher.config import OptimConfig, SchedulerConfig


def test_no_decay_groups_by_module_type():
    class RMSNormLike(nn.Module):  # a model file's own norm class, matched by type name
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), RMSNormLike(), nn.Embedding(10, 4))
    decay, no_decay = optim_lib.parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    assert id(model[0].weight) in decay_ids and id(model[3].weight) in decay_ids
    no_ids = {id(p) for p in no_decay["params"]}
    assert {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].weight)} <= no_ids


def test_adamw_is_fused_or_foreach_and_adafactor_builds():
    model = nn.Linear(4, 2)
    opt = optim_lib.build_optimizer(model, OptimConfig(lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    ada = optim_lib.build_optimizer(model, OptimConfig(name="adafactor", lr=1e-3))
    assert type(ada).__name__ == "Adafactor" and ada.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_w_restarts", "polynomial", "constant"])
def test_schedule_reaches_end_value_and_warms_up(name):
    opt_cfg, sched_cfg = OptimConfig(lr=1e-3), SchedulerConfig(name=name, warmup_ratio=0.2, lr_end=1e-6)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=opt_cfg.lr)
    total = 17
    sched = optim_lib.build_scheduler(opt, sched_cfg, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = optim_lib.warmup_steps(sched_cfg, total)
    assert warm == 4
    assert lrs[0] == 0.0 and lrs[warm] == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(optim_lib.end_lr(opt_cfg, sched_cfg), abs=1e-12)
