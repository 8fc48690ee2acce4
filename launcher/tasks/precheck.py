"""Which columns each built-in task reads, declared once, and the cheap checks of a run's model and data
that use it before torch, transformers or datasets load (`check(cfg)`, well under a second).

`needs(task, cfg, options, split)` is the declaration: the task's `check_split` checks the loaded
Dataset against it (launcher.tasks.core.Task.check_split) and `check(cfg)` checks the files against it
(launcher.data.precheck), so both name the same key, file, row and fix. The column options of the
tasks that have them are dataclasses here, which those tasks' Options extend.

Checks of the values (two labels at least, labels or tags seen in training, one tag per word, answers
at their offsets) are written here too and called by the tasks on the loaded data; the precheck runs
them only where the file's values are typed as the real reader types them (JSON; plain-string CSV labels).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

from launcher.config.schema import Config, DataConfig
from launcher.data import precheck as data_precheck
from launcher.data.counting import is_conll
from launcher.data.files import SPLIT_KEYS, Need, check_exists
from launcher.errors import ConfigError
from launcher.model_files import check_model_path, check_tokenizer_folder, tokenizer_source
from launcher.tasks import TASKS, _peft


@dataclass
class SequenceClassificationColumns:
    regression: Optional[bool] = None
    """Force regression (true) or classification (false); default: regression when labels are floats."""


@dataclass
class QuestionAnsweringColumns:
    question_column: str = "question"
    """Column with the question."""
    context_column: str = "context"
    """Column with the context the answer is taken from."""
    answers_column: str = "answers"
    """Column with {"text": [...], "answer_start": [...]} (character offsets into the context)."""
    version_2_with_negative: bool = False
    """SQuAD v2: some questions have no answer in the context (empty answer lists)."""


@dataclass
class TokenClassificationColumns:
    words_column: str = "tokens"
    """Column with each row's list of words (JSON/JSONL/Parquet data)."""
    tags_column: str = "ner_tags"
    """Column with each row's list of tags, one per word (strings like B-PER, or ints with label_names)."""
    label_names: Optional[list] = None
    """Tag names for integer tags (index → name), when the data stores tags as ints without names."""


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


# ---------------------------------------------------------------------- checks of the values

_IOB_TAG = re.compile(r"^(O|[BI]-.+)$")
QA_EXAMPLE = '{"text": ["Paris"], "answer_start": [17]}'


def one_label(label) -> ConfigError:
    return ConfigError("data.label_column", f"only one label ({label!r}) in the training data", "classification needs at least 2 classes")


def unseen_labels(split: str, unseen: list) -> ConfigError:
    return ConfigError(f"data.{split}_file", f"labels not seen in training: {', '.join(unseen[:5])}",
                       "add examples of them to the training data or drop those rows")


def unseen_tags(split: str, unseen: list) -> ConfigError:
    return ConfigError(f"data.{split}_file", f"tags not seen in training: {', '.join(unseen[:5])}",
                       "add sentences with them to the training data or fix those tags")


def check_words_and_tags(key: str, path: str, o, words_col: list, tags_col: list, tag_names: Optional[list]) -> None:
    """token-classification rows: a non-empty list of words each, as many IOB tags (None: no tags)."""
    for i, (words, tags) in enumerate(zip(words_col, tags_col)):
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise ConfigError(key, f"{path} row {i + 1}: {o.words_column!r} must be a non-empty list of words",
                              'e.g. {"tokens": ["Alice", "lives", "in", "Paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}')
        if tags is None:
            continue
        if not isinstance(tags, list) or len(tags) != len(words):
            n = len(tags) if isinstance(tags, list) else "no list of"
            raise ConfigError(key, f"{path} row {i + 1}: {len(words)} words but {n} tags", "give exactly one tag per word")
        for t in tags:
            name = tag_names[t] if tag_names is not None and isinstance(t, int) and 0 <= t < len(tag_names) else t
            if not isinstance(name, str):
                raise ConfigError("task_options.label_names", f"{path} row {i + 1}: integer tag {t!r} has no name",
                                  "store tags as strings, or list their names in task_options.label_names")
            if not _IOB_TAG.match(name):
                raise ConfigError(key, f"{path} row {i + 1}: tag {name!r} is not an IOB tag",
                                  "use O, B-TYPE and I-TYPE tags (task_options.scheme: IOB2 or IOB1)")


def tag_strings(tags_col: list, names: Optional[list]) -> list[list[str]]:
    return [[names[t] if names is not None and isinstance(t, int) else str(t) for t in tags] for tags in tags_col]


def check_answers(key: str, path: str, o, contexts: list, answers: list) -> None:
    """question-answering rows: SQuAD-style answers found at their answer_start in the context."""
    for i, (context, ans) in enumerate(zip(contexts, answers)):
        where = f"{path} row {i + 1}"
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), list) or not isinstance(ans.get("answer_start"), list):
            raise ConfigError(key, f"{where}: {o.answers_column!r} must be {QA_EXAMPLE}", "use JSON/JSONL rows with SQuAD-style answers")
        texts, starts = ans["text"], ans["answer_start"]
        if len(texts) != len(starts):
            raise ConfigError(key, f"{where}: {len(texts)} answer texts but {len(starts)} answer_start values", "give one start per answer")
        if not texts and not o.version_2_with_negative:
            raise ConfigError(key, f"{where}: no answer", "give an answer, or set task_options.version_2_with_negative true for unanswerable questions")
        for text, start in zip(texts, starts):
            if not isinstance(start, int) or not isinstance(text, str) or not text or context[start : start + len(text)] != text:
                found = context.find(text) if isinstance(text, str) and text else -1
                hint = f"it occurs at {found}" if found >= 0 else "the text is not in the context"
                raise ConfigError(key, f"{where}: answer {text!r} is not at answer_start {start} of the context ({hint})",
                                  "answer_start is the character offset of the answer in the context")


# A CSV cell pandas reads as a string, unchanged: not a number, a bool or one of its null words.
_NOT_PLAIN = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
              "NULL", "NaN", "None", "n/a", "nan", "null", "true", "false", "True", "False", "TRUE", "FALSE"}


def _plain_strings(values: Optional[list], typed: bool) -> bool:
    if values is None:
        return False
    if typed:
        return all(isinstance(v, str) for v in values)
    for v in values:
        if v in _NOT_PLAIN:
            return False
        try:
            float(v)
            return False
        except ValueError:
            pass
    return True


def _label_values(cfg: Config, o, looks: dict) -> None:
    """sequence-classification: at least two labels in training, none elsewhere that training lacks
    (string labels only: numbers and regression are typed by the real reader)."""
    col = cfg.data.label_column
    if o.regression is not None or "train" not in looks:
        return
    train = looks["train"]
    if not _plain_strings(train.kept.get(col), train.typed):
        return
    labels = sorted(set(train.kept[col]))
    if len(labels) < 2:
        raise one_label(labels[0])
    if not cfg.data.validation_file:
        return  # validation is held out of the train file
    for split in ("validation", "test"):
        look = looks.get(split)
        if look is not None and _plain_strings(look.kept.get(col), look.typed):
            unseen = sorted(set(look.kept[col]) - set(labels))
            if unseen:
                raise unseen_labels(split, unseen)


def _word_tag_values(cfg: Config, o, looks: dict) -> None:
    if not all(look.typed for look in looks.values()):
        return  # JSON only (a Parquet column may carry ClassLabel names)
    names = [str(n) for n in o.label_names] if o.label_names else None
    for split, look in looks.items():
        check_words_and_tags(SPLIT_KEYS[split], look.path, o, look.kept[o.words_column], look.kept[o.tags_column], names)
    if "train" not in looks or not cfg.data.validation_file:
        return
    known = {t for row in tag_strings(looks["train"].kept[o.tags_column], names) for t in row}
    for split in ("validation", "test"):
        if split in looks:
            unseen = sorted({t for row in tag_strings(looks[split].kept[o.tags_column], names) for t in row} - known)
            if unseen:
                raise unseen_tags(split, unseen)


def _answer_values(cfg: Config, o, looks: dict) -> None:
    for split, look in looks.items():
        if look.typed:
            check_answers(SPLIT_KEYS[split], look.path, o, look.kept[o.context_column], look.kept[o.answers_column])


@dataclass
class Declared:
    """A task's columns: its column options (or None), the columns it reads per split, and an
    optional check of their values across the files (`keep`: the columns that check reads)."""

    options: Optional[type]
    needs: Callable[[DataConfig, object, str], list[Need]]
    values: Optional[Callable[[Config, object, dict], None]] = None
    keep: Callable[[DataConfig, object], tuple] = lambda d, o: ()


COLUMNS: dict[str, Declared] = {
    "sequence-classification": Declared(SequenceClassificationColumns, _sequence_classification, _label_values,
                                        lambda d, o: (d.label_column,)),
    "token-classification": Declared(TokenClassificationColumns, _token_classification, _word_tag_values,
                                     lambda d, o: (o.words_column, o.tags_column)),
    "question-answering": Declared(QuestionAnsweringColumns, _question_answering, _answer_values,
                                   lambda d, o: (o.context_column, o.answers_column)),
    "base": Declared(None, _texts),
    "language-modeling": Declared(PromptColumns, _language_modeling),
    "pretraining": Declared(None, _pretraining),
    "summarization": Declared(None, _summarization),
    "translation": Declared(None, _translation),
}
assert set(COLUMNS) == set(TASKS), "every built-in task declares its columns"


def needs(task: str, cfg: Config, options, split: str) -> list[Need]:
    """The columns `task` reads from the `split` file ("predict": a `launcher predict` input);
    `options`: the task's Options (or its column options). A task not listed here declares none."""
    entry = COLUMNS.get(task)
    return entry.needs(cfg.data, options, split) if entry else []


def column_options(task: str, given: dict):
    """The task's column options from `task_options`, or None when they cannot be told without the
    task's full Options (a misspelt column option: the task reports it by name)."""
    cls = COLUMNS[task].options
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
    looks = {}
    for split, path in given.items():
        if cfg.task not in COLUMNS or (cfg.task == "token-classification" and is_conll(path, fmt)):
            check_exists(SPLIT_KEYS[split], path)  # the task's own reader (a user's task, CoNLL): the rest is its business
            continue
        if options is False:
            data_precheck.check_file(SPLIT_KEYS[split], path, [])
            continue
        declared = COLUMNS[cfg.task]
        look = data_precheck.check_file(SPLIT_KEYS[split], path, needs(cfg.task, cfg, options, split), _rows_used(cfg, split),
                                        keep=declared.keep(d, options) if declared.values else ())
        if look is not None:
            looks[split] = look
    if options is not False and COLUMNS[cfg.task].values and len(looks) == len(given):
        COLUMNS[cfg.task].values(cfg, options, looks)


def _rows_used(cfg: Config, split: str) -> Optional[int]:
    """How many leading rows of the file the run reads: data.max_*_samples cut the file's first rows,
    except when validation is held out of a shuffled train file (then every row may be used)."""
    d = cfg.data
    if split == "train":
        return d.max_train_samples if d.validation_file else None
    return d.max_eval_samples
