"""The real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, cwd: str | None = None, env: dict | None = None, timeout: int = 600):
    """Run `python -m launcher ...` in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
