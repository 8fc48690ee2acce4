"""The one rule that ranks validation results, and the names checkpoints are stored under.

A result counts when its metric is finite; a better value wins by the mode (min/max); an equal
value reached at a later epoch wins over the earlier one (as Ray's top-k checkpoint ordering does,
so the epoch launcher calls best is always one whose checkpoint Ray kept). Used by the workers'
best tracking, the export of `launcher train`, and the best epoch across the trials of a search.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

#: a Lightning checkpoint inside each Ray checkpoint folder
CHECKPOINT_NAME = "checkpoint.ckpt"
# What Ray ranks checkpoints by: the monitored metric where it is finite, else a finite "worst" value.
# (Ray's run snapshot stores NaN/inf as null, and a restored run, after a driver restart or with
# --resume, fails to rank a null score; step checkpoints carry no validation metric at all.)
CHECKPOINT_SCORE = "checkpoint_score"
WORST_SCORE = 1e30


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_better(value: float, best: Optional[float], mode: str) -> bool:
    """Strictly better than `best` (None: anything is better)."""
    return best is None or (value > best if mode == "max" else value < best)


def at_least_as_good(value: float, best: Optional[float], mode: str) -> bool:
    """Better than or equal to `best`: a later result with the same value takes the place of an earlier one."""
    return best is None or not is_better(best, value, mode)


def best_row(rows: list[dict], metric: str, mode: str, usable: Callable[[dict], bool] = lambda r: True) -> Optional[dict]:
    """The report with the best finite `metric`, ties to the later epoch; rows that are not `usable` are skipped."""
    best = None
    for row in sorted(rows, key=lambda r: r.get("epoch") or 0):
        v = row.get(metric)
        if finite(v) and usable(row) and (best is None or at_least_as_good(v, best[metric], mode)):
            best = row
    return best


def checkpoint_score(value, mode: str) -> float:
    """The value Ray ranks a checkpoint by: the metric when finite, else the worst value for `mode`."""
    if finite(value):
        return float(value)
    return -WORST_SCORE if mode == "max" else WORST_SCORE


def dedupe_by_epoch(reports: list[dict]) -> list[dict]:
    """Validation reports, one per epoch in epoch order: a report repeated after a restart replaces the earlier one."""
    by_epoch = {}
    for r in reports:
        if r.get("kind") == "val" and isinstance(r.get("epoch"), (int, float)):
            by_epoch[r["epoch"]] = dict(r)
    return [by_epoch[k] for k in sorted(by_epoch)]
