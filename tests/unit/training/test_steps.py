"""Optimizer groups, schedules and exact optimizer-step counts for any workers x accumulation x data size.

A rank of a W-worker run executes exactly what a single process does with TrainBatchSampler(rank, W):
Lightning's step count depends only on the per-rank batch count and the accumulation. So these
Lightning-only fits check the schedule end value for many combinations in seconds; the Ray tests
then check the real multi-worker global_step against the same formula.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from conftest import base_config, sentiment_rows, write_csv
from launcher import optim as optim_lib
from launcher.config import OptimConfig, SchedulerConfig
from launcher.data.sampling import TrainBatchSampler, batches_per_rank, optimizer_steps


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
