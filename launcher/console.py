"""What launcher prints: progress lines, and the one way durations, sizes and values are formatted."""

from __future__ import annotations

import math
import os
import sys
from typing import Optional

# --verbose: Ray's own INFO lines (Train's "Reporting training result N: ...", worker-group starts,
# ray.init's banner) reach the terminal too. Trial actors and workers read it from the environment,
# which launcher.distributed.cluster.init_ray passes to them.
VERBOSE_ENV = "LAUNCHER_VERBOSE"
_verbose = False


def set_verbose(on: bool) -> None:
    """Set by each command's parse of its flags (`--verbose`)."""
    global _verbose
    _verbose = bool(on)


def verbose() -> bool:
    return _verbose or os.environ.get(VERBOSE_ENV) == "1"


def ray_log_level() -> str:
    """The level of Ray's own log lines on the console: launcher's lines and Ray's warnings and
    errors by default, everything with --verbose (Ray's log files keep every level either way)."""
    return "INFO" if verbose() else "WARNING"


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
