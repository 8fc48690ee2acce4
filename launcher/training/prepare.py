"""Driver side, before Ray: everything that can fail on bad config or data, then the tokenised splits.

`check(cfg)` is the cheap part (config, task name, paths, model folder, columns and empty cells from
one streamed pass over the files: well under a second); `prepare(cfg)` loads
the task, its tokenizer and data and tokenises every split once, for all workers (and all trials).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from launcher import tasks
from launcher.config import Config, validate
from launcher.data.files import check_paths
from launcher.errors import ConfigError
from launcher.tasks import precheck


@dataclass
class Prepared:
    """What the driver hands to workers: tokenised splits (or Ray object refs of them), meta, tokenizer."""

    task: Any
    splits: dict
    meta: dict
    tokenizer: Any
    sizes: dict = field(default_factory=dict)


def check(cfg: Config) -> None:
    """Config, task name, data paths, then the model folder and the data files' columns and empty
    cells (launcher.tasks.precheck): the checks that load no model and import no ML library."""
    validate(cfg)
    tasks.check_name(cfg.task)
    check_paths(cfg)
    precheck.check(cfg)


def check_output_dir(cfg: Config, overwrite: bool, resume: bool) -> None:
    out = cfg.output_dir
    if os.path.isdir(out) and os.listdir(out) and not (overwrite or resume):
        raise ConfigError("output_dir", f"{out} is not empty", "pass --overwrite to replace it, --resume to continue it, or choose another output_dir")


def absolute_paths(cfg: Config) -> None:
    """Relative output_dir and local model paths → absolute, on the driver.

    Ray Train workers run in a folder of their own (and a Ray job's driver in its working_dir),
    so a relative path in the config would point somewhere else in the workers.
    """
    cfg.output_dir = os.path.abspath(cfg.output_dir)
    for attr in ("name_or_path", "tokenizer"):
        value = getattr(cfg.model, attr)
        if value and not os.path.isabs(value) and os.path.exists(value):
            setattr(cfg.model, attr, os.path.abspath(value))


def prepare(cfg: Config) -> Prepared:
    """Load the task's model config, tokenizer and data, and tokenise every split. Raises ConfigError.

    Expects `check(cfg)` to have passed (the flows call it first, before anything slow).
    """
    absolute_paths(cfg)
    task = tasks.get_task(cfg.task)(cfg)
    model_config = task.model_config()
    tokenizer = task.load_tokenizer()
    task.check_max_length(model_config, cfg.data.max_length)
    if hasattr(task, "check_model"):
        task.check_model(model_config, tokenizer)
    splits = task.load()
    tokenized, meta = task.prepare(splits, tokenizer)
    for name, ds in tokenized.items():
        if len(ds) == 0:
            raise ConfigError(f"data.{name}_file", f"no {name} examples left after preprocessing", "check the data and data.max_length")
    return Prepared(task=task, splits=tokenized, meta=meta, tokenizer=tokenizer, sizes={k: len(v) for k, v in tokenized.items()})
