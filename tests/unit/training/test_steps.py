"""Exact optimizer-step counts and final learning rates for any workers x accumulation x data size.

A rank of a W-worker run executes exactly what a single process does with TrainBatchSampler(rank, W):
Lightning's step count depends only on the per-rank batch count and the accumulation. So these
Lightning-only fits check the schedule end value for many combinations in seconds; the Ray tests
then check the real multi-worker global_step against the same formula.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from launcher import optim as optim_lib
from launcher.data.sampling import optimizer_steps


def _fit_single_rank(tiny_bert, tmp_path, n, world, batch, acc, epochs, sched):
    from launcher.tasks import get_task
    from launcher.training.loop import build_loaders

    files = {"train": write_csv(str(tmp_path / f"t{n}.csv"), sentiment_rows(n, seed=n)),
             "validation": write_csv(str(tmp_path / "v.csv"), sentiment_rows(6, seed=99))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), train={"batch_size": batch, "accumulate_grad_batches": acc,
                                                                     "max_epochs": epochs},
                      scheduler={"name": sched, "warmup_ratio": 0.1})
    task = get_task(cfg.task)(cfg)
    tok = task.load_tokenizer()
    splits, meta = task.prepare(task.load(), tok)
    module = task.module(meta, tok)
    loaders = build_loaders(task, cfg, splits, tok, rank=0, world=world)
    trainer = pl.Trainer(max_epochs=epochs, accumulate_grad_batches=acc, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loaders["train"])
    return cfg, trainer


@pytest.mark.parametrize("n,world,batch,acc,epochs,sched", [
    (37, 1, 4, 3, 2, "linear"),          # 10 batches, acc 3 -> 4 steps/epoch (last step after 1 batch)
    (37, 2, 4, 2, 2, "cosine"),          # 19 per rank -> 5 batches -> 3 steps/epoch
    (50, 3, 5, 4, 1, "polynomial"),      # 17 per rank -> 4 batches -> 1 step
    (11, 4, 2, 2, 3, "cosine_w_restarts"),  # 3 per rank -> 2 batches -> 1 step/epoch
    (29, 2, 3, 1, 2, "constant"),
])
def test_step_count_and_final_lr_exact(tiny_bert, tmp_path, n, world, batch, acc, epochs, sched):
    cfg, trainer = _fit_single_rank(tiny_bert, tmp_path, n, world, batch, acc, epochs, sched)
    assert trainer.global_step == optimizer_steps(n, world, batch, acc, epochs)
    assert trainer.estimated_stepping_batches == trainer.global_step
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(optim_lib.end_lr(cfg.optim, cfg.scheduler), abs=1e-12)
