"""A search's trials in storage: where their checkpoints and status files are, what each reported,
and which epoch of which trial is the best (the one rule of launcher.training.scoring).

Paths below are paths inside the storage's pyarrow filesystem (local folder, s3://, gs://):
`checkpoint_path` in a report is Ray Train's checkpoint.path in the trials' storage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from launcher import storage
from launcher.training.scoring import best_row, dedupe_by_epoch, is_better

STATUS_DIR = "_status"
STATUSES = ("finished", "stopped early", "failed", "not started")


@dataclass
class Settings:
    """What every trial driver and driver-side callback needs to know about the search."""

    metric: str
    mode: str
    keys: list
    output_dir: str
    train_storage: str
    tune_checkpoints: bool = False
    #: trials train in the Tune trial's own process (one worker), actors reused (launcher.search.trial)
    in_trial: bool = False
    bounds: dict = field(default_factory=dict)
    experiment: str = ""


@dataclass
class TrialSummary:
    trial_id: str
    status: str
    error: str
    params: dict
    history: list
    best: Optional[dict]
    last: Optional[dict]
    wall_s: float
    copied_from: list = field(default_factory=list)
    tune_path: str = ""

    @property
    def epochs_run(self) -> float:
        return max((r.get("epoch") or 0 for r in self.history), default=0)


def _fs(settings: Settings):
    return storage.filesystem(settings.train_storage)


def checkpoint_at(settings: Settings, path: str):
    from ray.train import Checkpoint

    return Checkpoint(path, filesystem=_fs(settings)[0])


def checkpoint_exists(settings: Settings, path) -> bool:
    import pyarrow.fs

    if not isinstance(path, str) or not path:
        return False
    return _fs(settings)[0].get_file_info(path).type == pyarrow.fs.FileType.Directory


def _list_dirs(fs, path: str) -> list[str]:
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    return [i.path for i in infos if i.type == pyarrow.fs.FileType.Directory]


def _delete(fs, path: str) -> None:
    try:
        fs.delete_dir(path)
    except OSError:
        pass  # already gone (Ray's own top-k cleanup, or an earlier sweep)


def disk_usage(uri: str) -> int:
    """Bytes under a storage folder or URI."""
    import pyarrow.fs

    fs, path = storage.filesystem(uri)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    return sum(i.size or 0 for i in infos if i.type == pyarrow.fs.FileType.File)


def write_status(settings: Settings, trial_id: str, status: dict) -> None:
    """<trials storage>/_status/<trial>.json: written by the trial driver when its job ended by itself."""
    fs, root = _fs(settings)
    fs.create_dir(f"{root}/{STATUS_DIR}", recursive=True)
    with fs.open_output_stream(f"{root}/{STATUS_DIR}/{trial_id}.json") as f:
        f.write(json.dumps(status, default=str).encode())


def read_status(settings: Settings, trial_id: str) -> dict:
    fs, root = _fs(settings)
    try:
        with fs.open_input_stream(f"{root}/{STATUS_DIR}/{trial_id}.json") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return {}


def trial_checkpoints(settings: Settings, trial_id: str) -> list[str]:
    """Every Train checkpoint a trial still has (its own job and, under PBT, the jobs after each copy)."""
    fs, root = _fs(settings)
    out = []
    for run_dir in _list_dirs(fs, root):
        base = run_dir.rstrip("/").rsplit("/", 1)[-1]
        if base == trial_id or base.startswith(trial_id + "-"):
            out += [d for d in _list_dirs(fs, run_dir) if d.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]
    return out


def delete_trial_checkpoints(settings: Settings, trial_id: str, keep: set, tune_dir: Optional[str] = None) -> int:
    """Delete a trial's checkpoints except those in `keep` (and Tune's copies in `tune_dir`); returns how many."""
    fs, _ = _fs(settings)
    doomed = [c for c in trial_checkpoints(settings, trial_id) if c not in keep]
    if tune_dir:
        doomed += _tune_copies(fs, tune_dir)
    for d in doomed:
        _delete(fs, d)
    return len(doomed)


def _tune_copies(fs, tune_dir: str) -> list[str]:
    return [d for d in _list_dirs(fs, tune_dir) if d.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]


def clean_checkpoints(trials: list, settings: Settings, keep: set, search_done: bool) -> None:
    """Stopped and failed trials keep nothing but the global best; finished ones keep their top-k.

    Tune's own copies (PBT) only serve exploits and restores, so they go once the search is over.
    """
    fs, _ = _fs(settings)
    for t in trials:
        if t.status != "finished":
            delete_trial_checkpoints(settings, t.trial_id, keep, t.tune_path if search_done else None)
        elif search_done and t.tune_path:
            for d in _tune_copies(fs, t.tune_path):
                _delete(fs, d)


def summarize(grid, settings: Settings) -> list:
    """ResultGrid → one TrialSummary per trial (history of validation reports, status, error)."""
    from launcher.search.trial import error_line

    out = []
    for result in grid:
        path = result.path or ""
        # Trial folders are named by trial id (trial_name). Not result.metrics["trial_id"]: after a
        # PBT copy, Tune's last result of a trial can be the one that came with the copied checkpoint.
        trial_id = os.path.basename(path.rstrip("/")) or (result.metrics or {}).get("trial_id")
        rows = read_results(result)
        history = dedupe_by_epoch(rows)
        status = read_status(settings, trial_id)
        if result.error is not None or status.get("status") == "failed":
            state, error = "failed", status.get("error") or error_line(result.error)
        elif status.get("status") == "finished":
            state, error = "finished", ""
        elif not rows:
            state, error = "not started", ""
        else:
            state, error = "stopped early", ""
        best = best_row(history, settings.metric, settings.mode)
        # The values that trained the trial's best epoch: under PBT they change along the way.
        config = (best or (history[-1] if history else {})).get("config") or result.config or {}
        out.append(TrialSummary(
            trial_id=trial_id, status=state, error=error, params={k: config.get(k) for k in settings.keys},
            history=history, best=best,
            last=next((r for r in reversed(history) if r.get(settings.metric) is not None), None),
            wall_s=float(status.get("wall_s") or (rows[-1].get("time_total_s") if rows else 0) or 0),
            copied_from=[c["from"] for c in copies(settings, trial_id)], tune_path=path,
        ))
    return sorted(out, key=lambda t: t.trial_id)


def read_results(result) -> list[dict]:
    """Every result a trial reported, from its result.json (progress.csv keeps only the first row's columns)."""
    if not result.path:
        return []
    fs = getattr(result, "filesystem", None) or storage.filesystem(result.path)[0]
    try:
        with fs.open_input_stream(f"{result.path.rstrip('/')}/result.json") as f:
            text = f.read().decode()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line cut short when the driver was killed mid-write
    return rows


def copies(settings: Settings, trial_id: str) -> list[dict]:
    """The checkpoints of other trials this trial continued from (PBT), oldest first."""
    fs, root = _fs(settings)
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{STATUS_DIR}", allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        if info.base_name.startswith(f"{trial_id}.copy-"):
            found.append(read_status(settings, info.base_name.removesuffix(".json")))
    return sorted((c for c in found if c), key=lambda c: c.get("time", 0))


def select_best(histories: dict[str, list[dict]], metric: str, mode: str,
                usable: Callable[[dict], bool] = lambda r: True) -> Optional[tuple[str, dict]]:
    """(trial id, report) of the best epoch across ALL trials — a mid-run peak beats later, lower epochs.

    `histories` maps trial id → its validation reports (dicts with `metric`, `epoch`, `checkpoint_path`).
    Reports whose checkpoint is gone (`usable` false) are skipped. Ties go to the earlier trial.
    """
    pick = None
    for trial_id, history in histories.items():
        row = best_row(history, metric, mode, usable)
        if row is not None and (pick is None or is_better(row[metric], pick[1][metric], mode)):
            pick = (trial_id, row)
    return pick
