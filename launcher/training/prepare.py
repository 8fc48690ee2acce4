"""Driver side, before Ray: everything that can fail on bad config or data, then the tokenised splits.

`check(cfg)` is the cheap part (config, task name, paths, model folder, columns and empty cells from
one streamed pass over the files: well under a second); `prepare(cfg)` loads
the task, its tokenizer and data and tokenises every split once, for all workers (and all trials).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from launcher import tasks
from launcher.config import Config, validate
from launcher.data import streaming
from launcher.data.files import check_paths, file_of
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
    #: data.streaming: the training split as a Ray Data stream (`splits` then holds validation/test only)
    stream: Optional[streaming.Stream] = None


def check(cfg: Config) -> streaming.Decision:
    """Config, task name, data paths, whether the training data streams (launcher.data.streaming),
    then the model folder and the data files' columns and empty cells (launcher.tasks.precheck; a
    stream's rows are checked in the stream): the checks that load no model and import no ML library.
    `data.streaming: auto` is resolved to true or false here, for everything after."""
    validate(cfg)
    tasks.check_name(cfg.task)
    check_paths(cfg)
    decided = streaming.decision(cfg)
    cfg.data.streaming = decided.stream
    if decided.stream:
        tasks.check_streams(cfg.task)
    else:
        precheck.check(cfg)
    return decided


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
    decided = streaming.decision(cfg)
    if decided.stream:
        return prepare_stream(cfg, task, tokenizer, decided.source)
    splits = task.load()
    tokenized, meta = task.prepare(splits, tokenizer)
    for name, ds in tokenized.items():
        if len(ds) == 0:
            raise ConfigError(f"data.{name}_file", f"no {name} examples left after preprocessing", "check the data and data.max_length")
    return Prepared(task=task, splits=tokenized, meta=meta, tokenizer=tokenizer, sizes={k: len(v) for k, v in tokenized.items()})


def prepare_stream(cfg: Config, task, tokenizer, source: streaming.Source) -> Prepared:
    """A streaming run (Ray is up): the training rows stay a Ray Data stream, whose label set (or
    other meta) and row count come from Ray Data on the cluster; validation and test are read and
    tokenised here as in memory, so they are scored exactly once per example."""
    try:
        required = task.stream_columns()
    except NotImplementedError:
        raise ConfigError("data.streaming", f"task {cfg.task} does not stream (it has no stream_columns/encoder)",
                          "set --data.streaming false") from None
    d = cfg.data
    stream = streaming.Stream(source, encode=None, required=required, columns=list(required.values()),
                              on_bad_rows=d.on_bad_rows, max_rows=d.max_train_samples)
    raw = stream.read()
    meta = task.stream_meta(raw.limit(d.max_train_samples) if d.max_train_samples else raw)
    splits = {}
    for split in ("validation", "test"):
        path = getattr(d, f"{split}_file")
        if path:
            ds = task.read(f"data.{split}_file", path)
            if d.max_eval_samples:
                ds = ds.select(range(min(d.max_eval_samples, len(ds))))
            task.check_split(split, file_of(cfg, split), ds)
            splits[split] = ds
    tokenized, shipped_meta = task.prepare(splits, tokenizer, meta)
    stream.encode = task.encoder(tokenizer, meta)
    stream.count(raw)
    if not stream.rows:
        raise ConfigError("data.train_file", f"no training rows in {source.path}", "check the files (and data.on_bad_rows)")
    sizes = {"train": stream.rows, **{k: len(v) for k, v in tokenized.items()}}
    return Prepared(task=task, splits=tokenized, meta=shipped_meta, tokenizer=tokenizer, sizes=sizes, stream=stream)
