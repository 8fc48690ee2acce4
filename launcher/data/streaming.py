"""Streaming the training data through Ray Data (`data.streaming`), driver side.

Whether a run streams (`decide`, a pure function of what the files look like), the CPUs Ray Data
keeps free of Train workers (`cpu_split`, pure too), the files and their format, the row count
(parquet metadata, else a Ray Data count), and the Ray Data pipeline: read → check rows → the task's
own tokeniser in `map_batches`, all on the cluster's CPUs. The driver never holds the training data.
The workers' side (batches from their shard) is launcher.data.stream_loader.

Validation and test data stay in memory (read and tokenised on the driver, sharded by launcher as
before): every example is scored exactly once, with the same metrics as an in-memory run.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from launcher.errors import ConfigError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text", ".text": "text"}
MIB = 1024 * 1024


def is_remote(path: str) -> bool:
    return "://" in path


# ---------------------------------------------------------------------- does this run stream?


def decide(setting, remote: bool, n_files: int, size_mb: float, min_mb: float, has_validation: bool,
           listing: bool = False) -> tuple[bool, str]:
    """(stream?, why) for `data.streaming` = `setting` (auto / True / False) and the training files:
    a remote URI, `n_files` files (`listing`: named by a folder or glob) of `size_mb` MiB in all. Auto
    streams a remote URI, a folder or glob, several files, or more than `min_mb` MiB, when a validation
    file is given (a stream holds out no validation rows)."""
    if setting is False:
        return False, "data.streaming false"
    if setting is True:
        return True, "data.streaming true"
    files = [f"{n_files} file{'s' if n_files != 1 else ''}"] if n_files > 1 or listing else []
    reasons = (["a remote URI"] if remote else []) + files
    if not remote and size_mb > min_mb:
        reasons.append(f"{size_mb:.0f} MiB > data.streaming_min_mb {min_mb:g}")
    if not reasons:
        return False, f"auto: {n_files} file of {size_mb:.1f} MiB (streams above data.streaming_min_mb {min_mb:g})"
    if not has_validation:
        return False, f"auto: {', '.join(reasons)} would stream, but data.validation_file is not set (a stream holds out no validation rows)"
    return True, "auto: " + ", ".join(reasons)


@dataclass
class Source:
    """The training files as streaming reads them."""

    path: str
    files: list[str]
    format: str
    size_mb: float

    @property
    def remote(self) -> bool:
        return is_remote(self.path)


def source(path: str, key: str = "data.train_file") -> Source:
    """The files behind `path` (a file, a folder of files, a glob or a remote URI) and their one format.

    A remote URI is not listed here (no credentials or network before Ray starts): its format comes
    from its extension (`s3://bucket/train/*.parquet`, `gs://b/x.jsonl`), else parquet."""
    if is_remote(path):
        base = path.rstrip("/").rsplit("/", 1)[-1]
        return Source(path, [path], _format_of(base) or "parquet", 0.0)
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    elif os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "state.json")):
            return Source(path, [path], "arrow", _size_mb([os.path.join(path, f) for f in os.listdir(path)]))
        files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                       if not f.startswith((".", "_")) and _format_of(f))
    else:
        files = [path] if os.path.exists(path) else []
    if not files:
        raise ConfigError(key, f"no data files match {path}", "give a file, a folder of .parquet/.csv/.json/.jsonl/.txt files, or a glob")
    formats = {_format_of(f) for f in files}
    if None in formats or len(formats) > 1:
        shown = ", ".join(sorted(str(f) for f in formats))
        raise ConfigError(key, f"{path}: the files must share one format (.parquet, .csv, .json/.jsonl or .txt), found: {shown}",
                          "keep one kind of file in the folder or narrow the glob")
    return Source(path, files, formats.pop(), _size_mb(files))


def _format_of(name: str) -> Optional[str]:
    lowered = name.lower()
    return next((fmt for ext, fmt in FORMATS.items() if lowered.endswith(ext)), None)


def _size_mb(files: list[str]) -> float:
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f)) / MIB


@dataclass
class Decision:
    stream: bool
    reason: str
    source: Optional[Source] = None


def decision(cfg) -> Decision:
    """`decide` for a config, with the checks a streaming run needs (ConfigError before Ray starts)."""
    d = cfg.data
    path = d.train_file
    if d.streaming is False:
        saved = os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "state.json"))
        if not is_remote(path) and (any(c in path for c in "*?[") or (os.path.isdir(path) and not saved)):
            raise ConfigError("data.train_file", f"{path} names several files, which only a stream reads (data.streaming false)",
                              "set --data.streaming auto (or true) and give data.validation_file, or point at one local file")
        return Decision(False, "data.streaming false")
    if not is_remote(path) and os.path.isfile(path) and not _format_of(path):
        if d.streaming is True:
            raise ConfigError("data.streaming", f"cannot stream {path}: not a .parquet/.csv/.json/.jsonl/.txt file",
                              "convert it (e.g. to parquet) or set --data.streaming false")
        return Decision(False, f"auto: {os.path.basename(path)} is not a format Ray Data reads")
    src = source(path)
    if src.format == "arrow":
        if d.streaming is True:
            raise ConfigError("data.streaming", f"cannot stream the save_to_disk folder {path}",
                              "write the data as parquet (Dataset.to_parquet) or set --data.streaming false")
        return Decision(False, "auto: a save_to_disk folder is read in memory")
    listing = not src.remote and src.files != [path]
    stream, reason = decide(d.streaming, src.remote, len(src.files), src.size_mb, d.streaming_min_mb, bool(d.validation_file), listing)
    if stream and not d.validation_file:
        raise ConfigError("data.validation_file", "is required when streaming: a stream holds out no validation rows",
                          "give a validation file, or set --data.streaming false to hold out data.validation_split")
    if not stream and listing:
        raise ConfigError("data.train_file", f"{path} names several files, which only a stream reads ({reason})",
                          "set --data.streaming true and give data.validation_file, or point at one local file")
    return Decision(stream, reason, src)


# ---------------------------------------------------------------------- CPUs for Ray Data


DEFAULT_DATA_CPUS = 1.0  # what data.streaming_cpus null means


def data_cpus(cfg) -> float:
    """CPUs a streaming run keeps free of Train workers for Ray Data (0 when the run does not stream;
    `data.streaming` must be resolved: launcher.training.prepare.check does it)."""
    return (cfg.data.streaming_cpus or DEFAULT_DATA_CPUS) if cfg.data.streaming is True else 0.0


@dataclass(frozen=True)
class CpuSplit:
    worker_cpus: float  # CPUs each Train worker reserves
    data_cpus: float  # CPUs left to Ray Data's read and tokenise tasks


def cpu_split(total: float, workers: int, cpus_per_worker: float, keep: Optional[float] = None) -> CpuSplit:
    """How `total` CPUs are shared by `workers` Train workers of `cpus_per_worker` and Ray Data.

    Ray Data runs its tasks on the CPUs the workers do not reserve: workers holding every CPU leave it
    none and the stream never yields a batch. `ray.cpus_per_worker: auto` leaves `keep` CPUs out
    (launcher.distributed.cluster.reserved_cpus); a number that leaves fewer is refused."""
    keep = DEFAULT_DATA_CPUS if keep is None else keep
    left = total - workers * cpus_per_worker
    if left + 1e-9 < keep:
        most = max((total - keep) / workers, 0.0)
        raise ConfigError("ray.cpus_per_worker", f"{workers} workers x {cpus_per_worker:g} CPUs leave Ray Data {max(left, 0):g} of {total:g} CPUs; "
                          f"a stream needs {keep:g} (data.streaming_cpus) to read and tokenise",
                          f"set --ray.cpus_per_worker auto (here {math.floor(most * 100) / 100:g}), lower data.streaming_cpus, or set --data.streaming false")
    return CpuSplit(cpus_per_worker, round(left, 3))


# ---------------------------------------------------------------------- rows and steps


def parquet_rows(files: list[str]) -> Optional[int]:
    """Rows of local parquet files from their footers (no data read); None for anything else."""
    if not files or any(is_remote(f) or _format_of(f) != "parquet" for f in files):
        return None
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in files)


def shard_rows(n: int, world: int) -> int:
    """Rows each worker gets per epoch: Ray Train's `streaming_split(equal=True)` gives every worker
    n // world rows (the last n % world rows of an epoch are not trained on)."""
    return n // world


def batches_per_rank(n: int, world: int, batch_size: int) -> int:
    return math.ceil(shard_rows(n, world) / batch_size)


def optimizer_steps_per_epoch(n: int, world: int, batch_size: int, accumulation: int) -> int:
    return math.ceil(batches_per_rank(n, world, batch_size) / accumulation)


# ---------------------------------------------------------------------- the Ray Data pipeline


class BadRows(Exception):
    """A row a stream cannot train on; the message names the file and the row."""


@dataclass
class Stream:
    """What the driver knows of a stream: where it reads, how it tokenises, how many rows it trains."""

    source: Source
    encode: Callable[[dict], dict]  # the task's own batch tokeniser (dict of lists → dict of lists)
    required: dict[str, str]  # config key → column every row must have, non-empty
    columns: list[str]  # the columns the tokeniser reads
    on_bad_rows: str = "error"
    max_rows: Optional[int] = None
    text_options: dict = field(default_factory=dict)
    rows: Optional[int] = None  # training rows per epoch
    rows_from: str = ""  # how `rows` was obtained
    skipped_rows: int = 0

    def read(self):
        """The raw rows as a Ray Data dataset (lazy: nothing is read yet), with each row's file."""
        import ray.data

        paths = self.source.files if not self.source.remote else self.source.path
        fmt = self.source.format
        if fmt == "parquet":
            ds = ray.data.read_parquet(paths, include_paths=True)
        elif fmt == "csv":
            tsv = any(str(p).lower().endswith(".tsv") for p in ([paths] if isinstance(paths, str) else paths))
            options = {}
            if tsv:
                import pyarrow.csv as pcsv

                options["parse_options"] = pcsv.ParseOptions(delimiter="\t")
            ds = ray.data.read_csv(paths, include_paths=True, **options)
        elif fmt == "json":
            ds = ray.data.read_json(paths, include_paths=True)
        else:
            ds = ray.data.read_text(paths, include_paths=True, drop_empty_lines=not self.text_options.get("keep_empty", False))
        return ds

    def count(self, ds=None) -> None:
        """Set `rows` (and `skipped_rows` with on_bad_rows skip): parquet metadata, else a Ray Data count."""
        if self.on_bad_rows == "skip":
            ds = ds if ds is not None else self.read()
            totals = ds.map_batches(RowCheck(self.required, count_only=True), batch_format="pyarrow").sum(["ok", "bad"])
            n, self.skipped_rows = int(totals["sum(ok)"]), int(totals["sum(bad)"])
            self.rows_from = "Ray Data count of the valid rows (data.on_bad_rows skip)"
        else:
            n = parquet_rows(self.source.files)
            self.rows_from = "parquet metadata"
            if n is None:
                n = (ds if ds is not None else self.read()).count()
                self.rows_from = "Ray Data count"
        self.rows = min(n, self.max_rows) if self.max_rows else n
        if self.max_rows and n > self.max_rows:
            self.rows_from += f", then data.max_train_samples {self.max_rows}"

    def dataset(self):
        """The tokenised training rows: read → check rows → the task's tokeniser, as Ray Data operators."""
        ds = self.read().map_batches(RowCheck(self.required, skip=self.on_bad_rows == "skip"), batch_format="pyarrow")
        if self.max_rows:
            ds = ds.limit(self.max_rows)
        return ds.map_batches(Tokenise(self.encode, self.columns), batch_format="pyarrow")


def _null_or_empty(column):
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = pc.is_null(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        bad = pc.or_(bad, pc.equal(pc.utf8_trim_whitespace(pc.fill_null(column, "")), ""))
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        bad = pc.or_(bad, pc.equal(pc.fill_null(pc.list_value_length(column), 0), 0))
    return pc.fill_null(bad, True)


class RowCheck:
    """Ray Data operator: every row has each required column, non-empty. Error: BadRows naming the
    file and the row; skip: drop such rows. `count_only`: one row of (ok, bad) counts per batch."""

    def __init__(self, required: dict[str, str], skip: bool = False, count_only: bool = False):
        self.required, self.skip, self.count_only = required, skip, count_only

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        bad = pa.array([False] * batch.num_rows)
        for key, col in self.required.items():
            if col not in batch.column_names:
                if not (self.skip or self.count_only):
                    path = batch.column("path")[0].as_py() if "path" in batch.column_names and batch.num_rows else "?"
                    present = ", ".join(c for c in batch.column_names if c != "path")
                    raise BadRows(f"{key}: column {col!r} not in {path} (present: {present}); fix: give every file the same columns")
                bad = pa.array([True] * batch.num_rows)
                continue
            bad = pc.or_(bad, _null_or_empty(batch.column(col)))
        n_bad = pc.sum(bad).as_py() or 0
        if self.count_only:
            return pa.table({"ok": [batch.num_rows - n_bad], "bad": [n_bad]})
        if n_bad and not self.skip:
            first = pc.index(bad, True).as_py()
            path = batch.column("path")[first].as_py() if "path" in batch.column_names else "?"
            key, col = next((k, c) for k, c in self.required.items() if c not in batch.column_names or
                            _null_or_empty(batch.column(c).slice(first, 1))[0].as_py())
            where = locate_bad_row(path, col)
            raise BadRows(f"{key}: {path} row {where}: empty {col!r}; fix: fill or drop that row, or set --data.on_bad_rows skip")
        return batch.filter(pc.invert(bad)) if n_bad else batch


def locate_bad_row(path: str, column: str) -> str:
    """The 1-based row of `path` whose `column` is first empty or null (read again, error path only)."""
    try:
        import pyarrow.compute as pc

        fmt = _format_of(path)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=[column])
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            opts = pcsv.ParseOptions(delimiter="\t") if path.lower().endswith(".tsv") else pcsv.ParseOptions()
            table = pcsv.read_csv(path, parse_options=opts)
        elif fmt == "json":
            import pyarrow.json as pjson

            table = pjson.read_json(path)
        else:
            return "?"
        if column not in table.column_names:
            return "? (column missing)"
        return str(pc.index(_null_or_empty(table.column(column).combine_chunks()), True).as_py() + 1)
    except Exception:  # noqa: BLE001 - the message still names the file
        return "?"


class Tokenise:
    """Ray Data operator: the task's batch tokeniser over a pyarrow batch → a pyarrow batch."""

    def __init__(self, encode: Callable[[dict], dict], columns: list[str]):
        self.encode, self.columns = encode, columns

    def __call__(self, batch):
        import pyarrow as pa

        data = {c: batch.column(c).to_pylist() for c in self.columns if c in batch.column_names}
        out = self.encode(data)
        return pa.table({k: list(v) for k, v in dict(out).items()})
