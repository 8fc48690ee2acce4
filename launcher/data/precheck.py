"""Cheap looks at a data file, before torch, transformers or datasets load: the columns it has (a CSV's
header, the keys of JSON records, a Parquet schema) and the first row whose required cell is empty, in
one streamed pass (csv, json, pyarrow).

A task says which columns it reads as a list of `Need`s (launcher.tasks.precheck); the same list checks
the file here and the loaded `datasets.Dataset` in the task's `check_split` (`files.check_dataset`),
with the same messages. A look that cannot be sure (a remote file, a save_to_disk folder, a JSON layout other
than records, a CSV that pandas may read differently) says nothing: the real reader decides.
"""

from __future__ import annotations

import codecs
import csv
import os
from dataclasses import dataclass, field
from typing import Optional

from launcher.data import files
from launcher.data.files import Need, empty_cell, is_empty, missing_column
from launcher.errors import ConfigError


# ---------------------------------------------------------------------- files


@dataclass
class Look:
    """What one pass over a file told: its columns, the first empty row of each filled column, and
    the values of the columns asked for (`kept`; `typed`: as the real reader types them, i.e. JSON)."""

    columns: list
    first_empty: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)
    typed: bool = False
    path: str = ""


def check_file(key: str, path: str, needs: list[Need], max_rows: Optional[int] = None, keep: tuple = ()) -> Optional[Look]:
    """What `files.check_file` checks, then the `needs` against the file's columns and its first
    `max_rows` rows (all when None). Raises the ConfigError the real reader and check would raise.
    Returns what the pass saw (with the values of the `keep` columns), or None when it cannot be sure."""
    files.check_file(key, path, json_pass=False)
    if "://" in path or os.path.isdir(path):
        return None
    builder = files.builder_for(path)
    filled = [n.column for n in needs if n.filled and n.column is not None]
    if builder == "csv":
        look = _scan_csv(key, path, "\t" if path.lower().endswith(".tsv") else ",", filled, max_rows, keep)
    elif builder == "json":
        look = _scan_json(key, path, filled, max_rows, keep)
    elif builder == "parquet":
        look = _scan_parquet(path, filled, max_rows)
    elif builder == "text":
        look = Look(["text"])  # the text reader's one column; its rows (lines, paragraphs) depend on the task
    else:
        return None
    if look is None:
        return None
    look.path = path
    missing_column(path, look.columns, needs)
    for n in needs:
        if n.filled and n.column in look.first_empty:
            raise empty_cell(path, look.first_empty[n.column], n.column, n.key)
    return look


def _scan_csv(key: str, path: str, delimiter: str, filled: list, max_rows: Optional[int], keep: tuple) -> Optional[Look]:
    # As datasets' csv reader (pandas) sees the file: UTF-8, "-quoting, blank lines skipped, an empty
    # cell is null. pandas also reads "NA", "null", ... as null: those the real check finds later.
    # Kept values are the raw strings (pandas may read them as numbers).
    first: dict = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if not header or len(set(header)) != len(header) or any(not h.strip() for h in header):
                return None  # pandas would rename the columns (Unnamed: 0, a.1): let it
            where = {c: header.index(c) for c in filled if c in header}
            kept = {c: [] for c in keep if c in header}
            if len(where) < len(set(filled)):
                return Look(header)  # a column is missing: that is the error
            row = 0
            for cells in reader:
                if not cells:
                    continue
                if len(cells) > len(header) or (any(cells) and not any(c.strip() for c in cells)):
                    return Look(header)  # a row pandas may read otherwise (an index column, a whitespace line)
                row += 1
                if max_rows is not None and row > max_rows:
                    break
                for c, i in where.items():
                    if c not in first and (i >= len(cells) or not cells[i].strip()):
                        first[c] = row
                for c, values in kept.items():
                    i = header.index(c)
                    values.append(cells[i] if i < len(cells) else "")
                if filled and filled[0] in first and not kept:
                    break  # the first filled column's first empty row is the error
            return Look(header, first, kept)
    except UnicodeDecodeError:
        raise ConfigError(key, f"cannot read {path}: {_utf8_error(path)}", "save the file as UTF-8") from None
    except csv.Error:
        return None


def _scan_json(key: str, path: str, filled: list, max_rows: Optional[int], keep: tuple) -> Optional[Look]:
    # datasets' json reader: JSON Lines of objects or one array of objects; a key missing from a
    # record is null there; the columns are every key, in the order they first appear.
    columns: dict = {}
    first: dict = {}
    kept: dict = {c: [] for c in keep}
    try:
        for row, record in enumerate(files.json_records(key, path), 1):
            if not isinstance(record, dict):
                return None
            for k in record:
                columns.setdefault(k, None)
            if max_rows is not None and row > max_rows:
                continue  # the columns still come from every record
            for c in filled:
                if c not in first and is_empty(record.get(c)):
                    first[c] = row
            for c, values in kept.items():
                values.append(record.get(c))
    except UnicodeDecodeError:
        raise ConfigError(key, f"cannot read {path}: {_utf8_error(path)}", "save the file as UTF-8") from None
    files.mark_checked(path)
    return Look(list(columns), {c: r for c, r in first.items() if c in columns}, {c: v for c, v in kept.items() if c in columns}, typed=True)


def _scan_parquet(path: str, filled: list, max_rows: Optional[int]) -> Optional[Look]:
    import pyarrow.compute as pc  # lazy: Parquet files only (pyarrow loads in a fraction of a second)
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    try:
        pf = pq.ParquetFile(path)
    except Exception:  # not Parquet after all: the real reader says what is wrong
        return None
    present = list(pf.schema_arrow.names)
    wanted = [c for c in dict.fromkeys(filled) if c in present]
    first: dict = {}
    if not wanted or len(wanted) < len(set(filled)):
        return Look(present)
    start = 0
    for batch in pf.iter_batches(columns=wanted, batch_size=65536):
        for c in wanted:
            if c in first:
                continue
            arr = batch.column(c)
            empty = pc.is_null(arr)
            if pt.is_string(arr.type) or pt.is_large_string(arr.type):
                empty = pc.or_kleene(empty, pc.equal(pc.utf8_trim_whitespace(arr), ""))
            elif pt.is_list(arr.type) or pt.is_large_list(arr.type):
                empty = pc.or_kleene(empty, pc.equal(pc.list_value_length(arr), 0))
            i = pc.index(pc.fill_null(empty, True), True).as_py()
            if i >= 0:
                first[c] = start + i + 1
        start += batch.num_rows
        if (max_rows is not None and start >= max_rows) or (filled[0] in first):
            break
    return Look(present, {c: r for c, r in first.items() if max_rows is None or r <= max_rows})


def _utf8_error(path: str) -> str:
    """The first invalid UTF-8 byte of the file, as Python's decoder words it, with its offset in the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                pending = len(e.object) - len(chunk)  # bytes the decoder held back from the previous chunk
                return f"'utf-8' codec can't decode byte 0x{e.object[e.start]:02x} in position {offset - pending + e.start}: {e.reason}"
            if not chunk:
                return "not UTF-8"
            offset += len(chunk)
