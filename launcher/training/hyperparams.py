"""Worker side of a search: a trial that continues another trial's checkpoint trains with its own hyperparameters."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.optim.lr_scheduler import LambdaLR

from launcher import compat
from launcher import optim as optim_lib


class UseTrialHyperparameters(pl.Callback):
    """After resuming another trial's checkpoint, train on with THIS trial's optimizer settings.

    Lightning restores the checkpoint's optimizer and scheduler state, which carries the other
    trial's learning rate (and weight decay, betas); the schedule's shape (warmup, type, length)
    already comes from this trial's config. So: take the param-group settings a fresh optimizer
    would have, and recompute the current learning rate at the restored step.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        fresh = optim_lib.build_optimizer(pl_module.model, pl_module.cfg.optim, "cpu").param_groups
        for optimizer in trainer.optimizers:
            if len(optimizer.param_groups) != len(fresh):
                continue
            for group, new in zip(optimizer.param_groups, fresh):
                group.update({k: v for k, v in new.items() if k != "params"})
                group["initial_lr"] = new["lr"]
        for config in trainer.lr_scheduler_configs:
            s = config.scheduler
            s.base_lrs = [g["initial_lr"] for g in s.optimizer.param_groups]
            if isinstance(s, LambdaLR):
                lrs = [base * fn(s.last_epoch) for base, fn in zip(s.base_lrs, s.lr_lambdas)]
                for group, lr in zip(s.optimizer.param_groups, lrs):
                    group["lr"] = lr
                compat.set_last_lr(s, lrs)
