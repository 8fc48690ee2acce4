"""Configs and trial histories for the search tests (no Ray)."""

from __future__ import annotations


def space_config(**space):
    """A minimal valid Config whose tune.search_space is `space`."""
    from launcher.config import Config

    cfg = Config()
    cfg.model.name_or_path, cfg.data.train_file = "m", "t.csv"
    cfg.tune.search_space = space
    return cfg


def history(values: list, trial: str) -> list[dict]:
    """Per-epoch validation rows of one trial, each with its checkpoint path."""
    return [{"epoch": float(i + 1), "val_accuracy": v, "kind": "val", "checkpoint_path": f"/{trial}/ckpt{i + 1}"}
            for i, v in enumerate(values)]
