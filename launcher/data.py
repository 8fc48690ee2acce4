"""Data files → `datasets` splits on the driver, and samplers/loaders inside the Ray workers.

Files are read and tokenised once, on the driver; the workers receive the tokenised Arrow tables
through Ray's object store (works on every node, no shared disk needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Iterator, Optional

from launcher.config import Config, ConfigError

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


def check_file(key: str, path: str) -> None:
    if "://" in path:
        return  # remote URIs are checked by the reader
    if not os.path.exists(path):
        raise ConfigError(key, f"file not found: {path}", "check the path (relative paths are from the current directory)")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "dataset_info.json")) and not os.path.exists(os.path.join(path, "state.json")):
            raise ConfigError(key, f"{path} is a folder but not a datasets save_to_disk folder", "point it at a data file")
        return
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"file is not readable: {path}", "fix its permissions")
    if os.path.getsize(path) == 0:
        raise ConfigError(key, f"file is empty: {path}", "give a file with at least one example")
    if builder_for(path) == "unknown":
        raise ConfigError(key, f"unknown file type: {path}", "use .csv, .tsv, .json, .jsonl, .parquet, .txt or a save_to_disk folder")
    if builder_for(path) == "json":
        _check_json_lines(key, path)
    if builder_for(path) == "csv":
        with open(path, "rb") as f:
            lines = [line for _, line in zip(range(2), f) if line.strip()]
        if len(lines) < 2:
            raise ConfigError(key, f"no examples in {path}: only a header line", "add at least one row below the header")


def _check_json_lines(key: str, path: str) -> None:
    with open(path, encoding="utf-8") as f:
        head = f.read(1).strip()
        f.seek(0)
        if head == "[":
            try:
                json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(key, f"{path} line {e.lineno}: invalid JSON ({e.msg})", "fix that line") from None
            return
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(key, f"{path} line {lineno}: invalid JSON ({e.msg})", "fix that line (JSON Lines: one object per line)") from None


def check_paths(cfg: Config) -> None:
    """Cheap existence checks of every data file, before any model or data is loaded."""
    for split, key in SPLIT_KEYS.items():
        path = getattr(cfg.data, f"{split}_file")
        if path and "://" not in path:
            if not os.path.exists(path):
                raise ConfigError(key, f"file not found: {path}", "check the path (relative paths are from the current directory)")
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise ConfigError(key, f"file is empty: {path}", "give a file with at least one example")


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
    import logging

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


def require_columns(key: str, path: str, ds, columns: dict[str, Optional[str]]) -> None:
    """`columns` maps config key → column name; names a missing one and lists the present ones."""
    for ckey, col in columns.items():
        if col is not None and col not in ds.column_names:
            raise ConfigError(ckey, f"column {col!r} not in {path}", "present columns: " + ", ".join(ds.column_names))


def check_no_empty(path: str, ds, column: str, key: str) -> None:
    """Names the first row whose cell is empty or null."""
    values = ds[column]
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ConfigError(key, f"{path} row {i + 1}: empty {column!r}", "fill or drop that row")


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


# ---------------------------------------------------------------- driver → workers


def to_table(ds):
    """A self-contained Arrow table (no cache-file paths) that Ray can ship to any node."""
    return ds.flatten_indices().with_format(None).data.table


def from_table(table):
    import datasets

    return datasets.Dataset(table)


# ---------------------------------------------------------------- step arithmetic


def batches_per_rank(n: int, world: int, batch_size: int) -> int:
    """Training batches each rank runs per epoch (TrainBatchSampler pads ranks to equal counts)."""
    return math.ceil(math.ceil(n / world) / batch_size)


def optimizer_steps_per_epoch(n: int, world: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps per epoch: Lightning steps after every `accumulation` batches and after the last one."""
    return math.ceil(batches_per_rank(n, world, batch_size) / accumulation)


def optimizer_steps(n: int, world: int, batch_size: int, accumulation: int, epochs: int, max_steps: int = -1) -> int:
    """Total optimizer steps of a run (what `global_step` ends at)."""
    total = optimizer_steps_per_epoch(n, world, batch_size, accumulation) * epochs
    return min(total, max_steps) if max_steps > 0 else total


# ---------------------------------------------------------------- samplers (inside workers)


class TrainBatchSampler:
    """Shuffled, optionally length-grouped batches of this rank's shard.

    Written by hand because neither torch nor Lightning has a distributed *length-grouped* batch
    sampler, and we need exact control of the per-rank batch count: every rank gets
    ceil(ceil(N / world) / batch_size) batches (indices padded by wrapping, as DistributedSampler
    does), so optimizer-step counts are identical on every rank and known in advance.
    """

    def __init__(self, lengths: list[int], batch_size: int, rank: int, world: int, seed: int, group_by_length: bool):
        self.lengths = lengths
        self.batch_size = batch_size
        self.rank, self.world, self.seed = rank, world, seed
        self.group_by_length = group_by_length
        self.epoch = 0
        self.per_rank = math.ceil(len(lengths) / world)
        # Resuming mid-epoch: the next iteration starts at batch `start` of `epoch` (see
        # launcher.resume.ResumableLoader); `offset` is where the current iteration started.
        self.start = 0
        self.offset = 0

    @property
    def sampler(self) -> "TrainBatchSampler":
        # Lightning calls set_epoch on `loader.sampler` and `loader.batch_sampler.sampler`, never on
        # the batch sampler itself: without this every epoch would repeat epoch 0's order.
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Continue `epoch` after its first `batches_done` batches (the next epoch when it was complete)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.start = epoch, batches_done

    def __len__(self) -> int:
        return batches_per_rank(len(self.lengths), self.world, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # The same epoch order as an uninterrupted run, minus the batches already trained.
        self.offset, self.start = self.start, 0
        yield from self.epoch_batches()[self.offset:]

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches of `self.epoch`, in order."""
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        total = self.per_rank * self.world
        order += order[: total - len(order)]  # wrap so every rank gets the same count
        mine = order[self.rank : total : self.world]
        if self.group_by_length and len(mine) > self.batch_size:
            # Sort within mega-batches of 50 batches (as HF's LengthGroupedSampler does): little
            # padding, while batch order stays random.
            mega = self.batch_size * 50
            chunks = [sorted(mine[i : i + mega], key=lambda j: -self.lengths[j]) for i in range(0, len(mine), mega)]
            batches = [c[i : i + self.batch_size] for c in chunks for i in range(0, len(c), self.batch_size)]
            # Keep the short remainder batch last so batch sizes match the ungrouped order.
            full = [b for b in batches if len(b) == self.batch_size]
            rest = [b for b in batches if len(b) != self.batch_size]
            perm = torch.randperm(len(full), generator=g).tolist()
            return [full[i] for i in perm] + rest
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]


class EvalShard:
    """This rank's share of an evaluation set, padded to equal length with marked pad rows.

    DistributedSampler pads by repeating examples, which double-counts them in metrics; here the
    repeats carry `_pad=1` so metrics skip them: every example is scored exactly once, and every
    rank runs the same number of batches.
    """

    def __init__(self, dataset, rank: int, world: int):
        self.dataset = dataset
        n = len(dataset)
        per_rank = math.ceil(n / world) if n else 0
        self.indices = [i for i in range(rank, per_rank * world, world)]
        self.n = n

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = self.indices[i]
        item = dict(self.dataset[j if j < self.n else 0])
        item["_pad"] = int(j >= self.n)
        item["_index"] = j if j < self.n else -1
        return item
