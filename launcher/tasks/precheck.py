"""Which columns each built-in task reads, declared once, and the cheap checks of a run's model and data
that use it before torch, transformers or datasets load (`check(cfg)`, well under a second).

`needs(task, cfg, options, split)` is the declaration: the task's `check_split` checks the loaded
Dataset against it (launcher.tasks.core.Task.check_split) and `check(cfg)` checks the files against it
(launcher.data.precheck), so both name the same key, file, row and fix. The column options of the
tasks that have them are dataclasses here, which those tasks' Options extend.

What needs the model, the tokenizer or the whole data (labels seen in training, tags per word, answer
offsets) is left to the task's own checks in `prepare`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

from launcher.config.schema import Config, DataConfig
from launcher.data import precheck as data_precheck
from launcher.data.counting import is_conll
from launcher.data.files import SPLIT_KEYS, Need
from launcher.errors import ConfigError
from launcher.model_files import check_model_path, check_tokenizer_folder, tokenizer_source
from launcher.tasks import TASKS, _peft


@dataclass
class QuestionAnsweringColumns:
    question_column: str = "question"
    """Column with the question."""
    context_column: str = "context"
    """Column with the context the answer is taken from."""
    answers_column: str = "answers"
    """Column with {"text": [...], "answer_start": [...]} (character offsets into the context)."""


@dataclass
class TokenClassificationColumns:
    words_column: str = "tokens"
    """Column with each row's list of words (JSON/JSONL/Parquet data)."""
    tags_column: str = "ner_tags"
    """Column with each row's list of tags, one per word (strings like B-PER, or ints with label_names)."""


@dataclass
class PromptColumns:
    prompt_column: Optional[str] = None
    """Prompt → response data (causal only): the prompt column; the loss is on the response (chat template when the tokenizer has one)."""
    response_column: Optional[str] = None
    """Prompt → response data: the response column (set with prompt_column)."""


def _texts(d: DataConfig, o, split: str) -> list[Need]:
    return [Need("data.text_column", d.text_column, filled=True), Need("data.text_pair_column", d.text_pair_column)]


def _sequence_classification(d: DataConfig, o, split: str) -> list[Need]:
    return _texts(d, o, split) + ([Need("data.label_column", d.label_column, filled=True)] if split != "predict" else [])


def _question_answering(d: DataConfig, o, split: str) -> list[Need]:
    return [Need("task_options.question_column", o.question_column, filled=True),
            Need("task_options.context_column", o.context_column, filled=True)] + (
        [Need("task_options.answers_column", o.answers_column)] if split != "predict" else [])


def _token_classification(d: DataConfig, o, split: str) -> list[Need]:
    return [Need("task_options.words_column", o.words_column)] + ([Need("task_options.tags_column", o.tags_column)] if split != "predict" else [])


def _language_modeling(d: DataConfig, o, split: str) -> list[Need]:
    if o.prompt_column:
        return [Need("task_options.prompt_column", o.prompt_column)] + (
            [Need("task_options.response_column", o.response_column)] if split != "predict" else [])
    return [Need("data.text_column", d.text_column)]


def _pretraining(d: DataConfig, o, split: str) -> list[Need]:
    return [Need("data.text_column", d.text_column)]


def _summarization(d: DataConfig, o, split: str) -> list[Need]:
    key = "data.source_column" if d.source_column else "data.text_column"
    return [Need(key, d.source_column or d.text_column, filled=True)] + (
        [Need("data.target_column", d.target_column or "summary", filled=True)] if split != "predict" else [])


def _translation(d: DataConfig, o, split: str) -> list[Need]:
    if not d.source_column:  # rows of {"translation": {lang: text}}: checked by the task
        return []
    return [Need("data.source_column", d.source_column, filled=True)] + (
        [Need("data.target_column", d.target_column, filled=True)] if split != "predict" else [])


# task name → (its column options, or None; the columns it reads)
COLUMNS: dict[str, tuple[Optional[type], Callable[[DataConfig, object, str], list[Need]]]] = {
    "sequence-classification": (None, _sequence_classification),
    "token-classification": (TokenClassificationColumns, _token_classification),
    "question-answering": (QuestionAnsweringColumns, _question_answering),
    "base": (None, _texts),
    "language-modeling": (PromptColumns, _language_modeling),
    "pretraining": (None, _pretraining),
    "summarization": (None, _summarization),
    "translation": (None, _translation),
}
assert set(COLUMNS) == set(TASKS), "every built-in task declares its columns"


def needs(task: str, cfg: Config, options, split: str) -> list[Need]:
    """The columns `task` reads from the `split` file ("predict": a `launcher predict` input);
    `options`: the task's Options (or its column options). A task not listed here declares none."""
    entry = COLUMNS.get(task)
    return entry[1](cfg.data, options, split) if entry else []


def column_options(task: str, given: dict):
    """The task's column options from `task_options`, or None when they cannot be told without the
    task's full Options (a misspelt column option: the task reports it by name)."""
    cls = COLUMNS[task][0]
    if cls is None:
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    if any(k not in names and difflib.get_close_matches(k, names, n=1) for k in given):
        return False
    try:
        return cls(**{k: v for k, v in given.items() if k in names})
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------- the checks


def check(cfg: Config) -> None:
    """Model folder, tokenizer files, positions, data files, their columns and empty cells: what can be
    told from the files' headers and one streamed pass. Raises the ConfigError the full check would."""
    check_model(cfg)
    check_data(cfg)


def check_model(cfg: Config) -> None:
    """The model folder exists and has config.json (or is an adapter or GGUF folder), the tokenizer
    folder has tokenizer files, and data.max_length fits the positions config.json gives."""
    m = cfg.model
    check_model_path(m.name_or_path)
    folder = os.path.expanduser(m.name_or_path)
    adapter = _peft.adapter_folder(folder)
    config = os.path.join(folder, "config.json")
    if os.path.isdir(folder) and not adapter and not m.gguf_file and not os.path.exists(config):
        raise ConfigError("model.name_or_path", f"cannot load a model config from {m.name_or_path}: no config.json in that folder",
                          "point it at a folder made by save_pretrained (with config.json)")
    path, key, gguf = tokenizer_source(m)
    check_model_path(path, key)
    check_tokenizer_folder(path, key, gguf)
    if os.path.isfile(config) and not adapter and not m.gguf_file:
        limit = _positions(config)
        if limit and cfg.data.max_length > limit:
            # launcher.tasks.core.Task.check_max_length's message, which checks the loaded config
            raise ConfigError("data.max_length", f"{cfg.data.max_length} is above the model's {limit} positions",
                              f"use --data.max_length {limit} or less")


def _positions(config_json: str) -> Optional[int]:
    """launcher.tasks.core.max_positions of a config.json (None when it cannot be read)."""
    try:
        with open(config_json) as f:
            values = json.load(f)
    except (OSError, ValueError):
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = values.get(attr) if isinstance(values, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_data(cfg: Config) -> None:
    """Every data file: exists, readable, a known type, parses (JSON); then the task's columns and
    filled cells (built-in tasks). Files first, then columns, split by split, as the task loads them."""
    d = cfg.data
    given = {split: getattr(d, f"{split}_file") for split in SPLIT_KEYS}
    given = {split: path for split, path in given.items() if path}
    given_options = cfg.task_options or {}
    options = column_options(cfg.task, given_options) if cfg.task in COLUMNS else False
    fmt = given_options.get("format")
    fmt = None if fmt is not None and str(fmt).lower() == "auto" else fmt
    for split, path in given.items():
        if options is False or (cfg.task == "token-classification" and is_conll(path, fmt)):
            data_precheck.check_file(SPLIT_KEYS[split], path, [])  # the task's own reader: columns are its business
            continue
        data_precheck.check_file(SPLIT_KEYS[split], path, needs(cfg.task, cfg, options, split), _rows_used(cfg, split))


def _rows_used(cfg: Config, split: str) -> Optional[int]:
    """How many leading rows of the file the run reads: data.max_*_samples cut the file's first rows,
    except when validation is held out of a shuffled train file (then every row may be used)."""
    d = cfg.data
    if split == "train":
        return d.max_train_samples if d.validation_file else None
    return d.max_eval_samples
