"""Data files → `datasets` splits on the driver: cheap checks of paths and formats, the readers,
column and empty-cell checks, and the train/validation/test split.

Files are read and tokenised once, on the driver; the workers receive the tokenised Arrow tables
through Ray's object store (launcher.data.sampling).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from launcher.config.schema import Config
from launcher.errors import ConfigError

_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text", ".text": "text"}
SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file", "test": "data.test_file"}


def builder_for(path: str) -> Optional[str]:
    """The `datasets` builder for a file, or None for a `save_to_disk` folder."""
    if os.path.isdir(path):
        return None
    for ext, builder in _BUILDERS.items():
        if path.lower().endswith(ext):
            return builder
    return "unknown"


def check_exists(key: str, path: str) -> None:
    """The file or folder exists and a file is not empty (remote URIs are checked by the reader)."""
    if "://" in path:
        return
    if any(c in path for c in "*?[") and not os.path.exists(path):
        if not glob.glob(path, recursive=True):
            raise ConfigError(key, f"no files match {path}", "check the glob (relative paths are from the current directory)")
        return
    if not os.path.exists(path):
        raise ConfigError(key, f"file not found: {path}", "check the path (relative paths are from the current directory)")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ConfigError(key, f"file is empty: {path}", "give a file with at least one example")


def check_file(key: str, path: str, json_pass: bool = True) -> None:
    """check_exists, then what a look at the file tells without reading it all with `datasets`
    (`json_pass`: parse every line of a JSON file; launcher.data.precheck does that in its own pass)."""
    check_exists(key, path)
    if "://" in path:
        return
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "dataset_info.json")) and not os.path.exists(os.path.join(path, "state.json")):
            raise ConfigError(key, f"{path} is a folder but not a datasets save_to_disk folder", "point it at a data file")
        return
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"file is not readable: {path}", "fix its permissions")
    if builder_for(path) == "unknown":
        raise ConfigError(key, f"unknown file type: {path}", "use .csv, .tsv, .json, .jsonl, .parquet, .txt or a save_to_disk folder")
    if builder_for(path) == "json" and json_pass:
        _check_json_lines(key, path)
    if builder_for(path) == "csv":
        with open(path, "rb") as f:
            lines = [line for _, line in zip(range(2), f) if line.strip()]
        if len(lines) < 2:
            raise ConfigError(key, f"no examples in {path}: only a header line", "add at least one row below the header")


def json_records(key: str, path: str) -> Iterator:
    """The records of a JSON Lines file or of a file holding one JSON array, one by one; a line that is
    not JSON is a ConfigError naming it."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1).strip()
        f.seek(0)
        if head == "[":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(key, f"{path} line {e.lineno}: invalid JSON ({e.msg})", "fix that line") from None
            yield from data
            return
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(key, f"{path} line {lineno}: invalid JSON ({e.msg})", "fix that line (JSON Lines: one object per line)") from None
                yield record


_CHECKED: set = set()  # JSON files parsed whole once already (the cheap checks' pass), by (path, size, mtime)


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def mark_checked(path: str) -> None:
    """Every line of this JSON file parsed: `check_file` need not parse it again while it is unchanged."""
    _CHECKED.add(_stamp(path))


def _check_json_lines(key: str, path: str) -> None:
    if _stamp(path) in _CHECKED:
        return
    for _ in json_records(key, path):
        pass
    mark_checked(path)


def check_paths(cfg: Config) -> None:
    """Cheap existence checks of every data file, before any model or data is loaded."""
    for split, key in SPLIT_KEYS.items():
        path = getattr(cfg.data, f"{split}_file")
        if path:
            check_exists(key, path)


def read_file(key: str, path: str, **text_options):
    """One file → a `datasets.Dataset`. `text_options` go to the .txt reader (keep_linebreaks, sample_by)."""
    check_file(key, path)
    import datasets

    datasets.disable_progress_bars()
    builder = builder_for(path)
    if builder is None:
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            raise ConfigError(key, f"{path} holds several splits ({', '.join(ds)})", "point at one split's folder")
        return ds
    kwargs = {"delimiter": "\t"} if path.lower().endswith(".tsv") else {}
    if builder == "text":
        kwargs.update(text_options)

    quiet = _DropErrors()  # datasets logs the failure before raising it: the ConfigError below says it once
    handlers = logging.getLogger("datasets").handlers
    for h in handlers:
        h.addFilter(quiet)
    try:
        ds = datasets.load_dataset(builder, data_files={"x": path}, split="x", **kwargs)
    except Exception as e:  # pyarrow/pandas parse errors: keep the root cause's message, name the file
        chain = [e]
        while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        root = next((c for c in chain if isinstance(c, UnicodeDecodeError)), chain[-1])
        fix = "save the file as UTF-8" if isinstance(root, UnicodeDecodeError) else "check the file's format"
        raise ConfigError(key, f"cannot read {path}: {str(root).splitlines()[0][:200]}", fix) from e
    finally:
        for h in handlers:
            h.removeFilter(quiet)
    if len(ds) == 0:
        raise ConfigError(key, f"no examples in {path}", "give a file with at least one example")
    return ds


class _DropErrors:
    def filter(self, record) -> bool:
        return record.levelno < 40  # logging.ERROR


@dataclass(frozen=True)
class Need:
    """A column a task reads: the config key that names it, its name (None: not used) and whether every
    cell must be filled (not null, blank or an empty list). Tasks list theirs in launcher.tasks.precheck;
    the same list checks the file before anything loads (launcher.data.precheck) and the loaded Dataset."""

    key: str
    column: Optional[str]
    filled: bool = False


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def missing_column(path: str, present: list, needs: Iterable[Need]) -> None:
    """The first needed column not in `present`, named by its key, with the columns that are there."""
    for n in needs:
        if n.column is not None and n.column not in present:
            raise ConfigError(n.key, f"column {n.column!r} not in {path}", "present columns: " + ", ".join(map(str, present)))


def empty_cell(path: str, row: int, column: str, key: str) -> ConfigError:
    """`row` counts examples from 1 (a CSV's header is not one)."""
    return ConfigError(key, f"{path} row {row}: empty {column!r}", "fill or drop that row")


def check_dataset(path: str, ds, needs: list[Need]) -> None:
    """The `needs` against a loaded datasets.Dataset: columns first, then empty cells column by column."""
    missing_column(path, ds.column_names, needs)
    for n in needs:
        if n.filled and n.column is not None:
            for i, v in enumerate(ds[n.column]):
                if is_empty(v):
                    raise empty_cell(path, i + 1, n.column, n.key)


def load_splits(cfg: Config, reader: Callable[[str, str], object] = read_file) -> dict:
    """train/validation(/test) Datasets; validation is held out from train when not given."""
    d = cfg.data
    splits = {"train": reader("data.train_file", d.train_file)}
    if d.validation_file:
        splits["validation"] = reader("data.validation_file", d.validation_file)
    else:
        if len(splits["train"]) < 2:
            raise ConfigError("data.train_file", "needs at least 2 examples to hold out validation data", "add data or set data.validation_file")
        parts = splits["train"].train_test_split(test_size=d.validation_split, seed=cfg.train.seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
    if d.test_file:
        splits["test"] = reader("data.test_file", d.test_file)
    if d.max_train_samples:
        splits["train"] = splits["train"].select(range(min(d.max_train_samples, len(splits["train"]))))
    if d.max_eval_samples:
        for name in ("validation", "test"):
            if name in splits:
                splits[name] = splits[name].select(range(min(d.max_eval_samples, len(splits[name]))))
    return splits


def file_of(cfg: Config, split: str) -> str:
    return getattr(cfg.data, f"{split}_file") or cfg.data.train_file
