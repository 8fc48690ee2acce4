"""What launcher prints: progress lines, and the one way durations, sizes and values are formatted."""

from __future__ import annotations

import math
import sys
from typing import Optional


def say(line: str) -> None:
    """One line on stderr, flushed.

    Not print(): inside Ray Train workers print() is patched into Ray's logger and also teed to a
    wrapped stderr, which shows every line twice.
    """
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def duration(seconds: float) -> str:
    """0m12s, 3m05s, 1h02m (and ? for an unknown or infinite time)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"


def size(n: Optional[float]) -> str:
    """Bytes as MiB below a GiB, else GiB (? when unknown)."""
    if n is None:
        return "?"
    if n < 2**30:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**30:.2f} GiB"


def value(v) -> str:
    """A searched or reported value for tables and messages: floats with 3 significant digits."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def number(v) -> str:
    """A metric in a table: 4 decimals, blank when absent."""
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
