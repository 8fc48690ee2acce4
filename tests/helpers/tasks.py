"""Checks shared by the per-task tests: a metric synced as rank 0 of two, and export == in-memory validation."""

from __future__ import annotations

import json
import os


def as_rank0_of_two(make, other):
    """A torchmetrics Metric whose compute() syncs as rank 0 of a 2-rank job would, without a process group.

    `make(**kwargs)` builds the metric; its gather returns [own state, `other`'s state] for each state
    (what all_gather hands rank 0), and torchmetrics concatenates them as in a real DDP sync.
    """
    from torchmetrics.utilities import dim_zero_cat

    calls = []

    def gather(tensor, group=None):
        theirs = [dim_zero_cat(v) for v in other.metric_state.values()]
        calls.append(1)
        return [tensor, theirs[(len(calls) - 1) % len(theirs)]]

    return make(dist_sync_fn=gather, distributed_available_fn=lambda: True)


def validate_then_evaluate_export(cfg) -> tuple[dict, dict]:
    """Validate an untrained task module in process, export it, and score the export with `launcher evaluate`.

    Returns (in-memory validation metrics, `launcher evaluate` metrics of the exported folder): the
    same weights and data must give the same numbers, whatever the task's export and reload involve.
    """
    import lightning.pytorch as pl
    import torch

    from launcher import export as export_lib
    from launcher.commands import evaluate as evaluate_cmd
    from launcher.config import to_dict
    from launcher.files import write_yaml
    from launcher.training import loop as loop_lib
    from launcher.training import prepare as prepare_lib

    p = prepare_lib.prepare(cfg)
    torch.manual_seed(0)
    module = p.task.module(p.meta, p.tokenizer)
    module.model.eval()
    loader = loop_lib.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)["validation"]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    direct = trainer.validate(module, loader, verbose=False)[0]
    best = os.path.join(cfg.output_dir, "best")
    export_lib.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
    write_yaml(os.path.join(cfg.output_dir, "config.yaml"), to_dict(cfg))
    out = os.path.join(cfg.output_dir, "evaluate.json")
    assert evaluate_cmd.main([os.path.join(cfg.output_dir, "config.yaml"), "--model", best, "--split", "validation", "--output", out]) == 0
    with open(out) as f:
        return direct, json.load(f)
