"""Small result files written whole or not at all: write to a temporary name, fsync, rename.

Secrets never reach a file: every writer here passes its content through `config.secrets.redact`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from typing import Any

import yaml

from launcher.config.secrets import redact
from launcher.errors import ConfigError


def atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose a file whose data is not on disk yet
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, json.dumps(redact(obj), indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_yaml(path: str, obj: Any) -> None:
    atomic_write(path, yaml.safe_dump(redact(obj), sort_keys=False))


def write_kv(path: str, metrics: dict) -> None:
    """`key = value` lines, sorted (as the original Lightning transformers example wrote them)."""
    atomic_write(path, "".join(f"{k} = {_plain(v)}\n" for k, v in sorted(redact(metrics).items())))


def clear_dir(path: str) -> None:
    """Remove everything inside `path` (the folder itself stays)."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)


@contextlib.contextmanager
def claim_dir(path: str, key: str = "output_dir"):
    """Create `path` and hold an exclusive lock on it while the block runs: a second run started on the
    same folder at the same time (two jobs on one cluster, two shells) is refused with a ConfigError
    instead of mixing its files and its run storage with this one's. The lock is the folder's own
    (flock on its descriptor): nothing is written into it, and it ends with the process, however that ends."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(key, f"{path} is in use by another run right now", "wait for that run to end, or choose another output_dir") from None
        yield path
    finally:
        os.close(fd)  # releases the lock


def _plain(v):
    """Tensors and numpy scalars as plain numbers (never `tensor(0.5)`)."""
    item = getattr(v, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    return v


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
