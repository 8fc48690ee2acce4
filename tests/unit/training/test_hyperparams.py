"""launcher.training.hyperparams: a trial's own hyperparameters apply after a copied checkpoint."""

from __future__ import annotations

import pytest

from launcher.search import space as space_lib
from tests.helpers.search import space_config


def test_use_trial_hyperparameters_after_a_copied_checkpoint():
    """After Lightning restored another trial's optimizer/scheduler (lr 1e-3), this trial's lr (4e-4) applies at the restored step."""
    import torch
    from types import SimpleNamespace

    from launcher import optim as optim_lib
    from launcher.training.hyperparams import UseTrialHyperparameters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    theirs = space_config()
    theirs.optim.lr, theirs.optim.weight_decay, theirs.scheduler.warmup_steps = 1e-3, 0.1, 10
    opt = optim_lib.build_optimizer(model, theirs.optim)
    sched = optim_lib.build_scheduler(opt, theirs.scheduler, 100)
    for _ in range(30):
        opt.step()
        sched.step()
    mine = space_lib.apply_params(theirs, {"optim.lr": 4e-4, "optim.weight_decay": 0.0})
    # What Lightning leaves after restoring: their state, with this trial's schedule shape (same here).
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    UseTrialHyperparameters().on_train_start(trainer, SimpleNamespace(model=model, cfg=mine))
    expected = 4e-4 * (100 - 30) / (100 - 10)  # linear decay after 10 warmup steps, at step 30
    assert sched.last_epoch == 30
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected])
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-4 * (100 - 31) / 90)
