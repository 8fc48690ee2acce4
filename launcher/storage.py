"""Run storage: local folders, NFS paths and s3:// / gs:// URIs, through pyarrow filesystems.

Ray Train keeps checkpoints wherever `ray.storage_path` points (it uses the same pyarrow
filesystems). This module adds what launcher itself does there: a run name that cannot collide
with other runs in a shared bucket, a copy of the exported best/ model next to the run, and
fetching such a model back for `launcher predict` / `launcher evaluate`.

Credentials and endpoints come from the usual environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL,
GOOGLE_APPLICATION_CREDENTIALS, instance roles); pyarrow reads them, launcher never logs them.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import shutil
import sys
import tempfile
from typing import Optional

from launcher import compat
from launcher.config import Config
from launcher.config.secrets import mask
from launcher.errors import ConfigError, StorageError


def is_uri(path: Optional[str]) -> bool:
    """s3://, gs://, hdfs://... (a `file://` URI is a local path in disguise, treat it as one)."""
    return bool(path) and "://" in path and not path.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a folder or URI, keeping a URI's query (`?endpoint_override=...`) at the end."""
    if not is_uri(uri):
        return os.path.join(uri, *parts)
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p.strip("/")]]) + sep + query


def filesystem(uri: str, key: str = "ray.storage_path"):
    """(pyarrow FileSystem, path inside it) for a URI or a local path."""
    import pyarrow.fs as pafs

    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with the scheme or bucket problem
        raise ConfigError(key, f"cannot open {redact_uri(uri)}: {str(e).splitlines()[0][:200]}",
                          "use s3://bucket/prefix or gs://bucket/prefix with credentials in the environment") from None


def redact_uri(uri: str) -> str:
    """A URI fit for printing and results files: user:password@ and credential query values
    (pyarrow accepts `?access_key=...&secret_key=...`) masked by the config's one masking rule."""
    return mask(uri)


def upload_dir(local_dir: str, uri: str) -> str:
    """Replace the folder at `uri` with a copy of `local_dir`; returns `uri`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)  # a stale best/ of an earlier export must not mix with this one
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return uri


def download_dir(uri: str, local_dir: str, key: str = "--model") -> str:
    """Copy the folder at `uri` into `local_dir` (created); returns `local_dir`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, key)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        what = "nothing" if info.type == pafs.FileType.NotFound else "a file, not a folder"
        raise ConfigError(key, f"{redact_uri(uri)} is {what}", "give the URI of an exported best/ folder, e.g. s3://bucket/runs/<run>/best")
    os.makedirs(local_dir, exist_ok=True)
    pafs.copy_files(path, local_dir, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local_dir


def delete(uri: str) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def local_model(path: str, key: str = "--model") -> str:
    """A local folder for `path`: the folder itself, or a download of a URI into a temporary
    folder that is removed when the process exits."""
    if not is_uri(path):
        return path
    tmp = tempfile.mkdtemp(prefix="launcher-model-")
    atexit.register(shutil.rmtree, tmp, True)
    print(f"[launcher] downloading {redact_uri(path)} to {tmp}", file=sys.stderr)
    return download_dir(path, os.path.join(tmp, "model"), key)


# ---------------------------------------------------------------------- run names


def run_name(cfg: Config) -> str:
    """Ray's RunConfig name for `launcher train`.

    Under the default storage (<output_dir>/ray) the run is alone and keeps the plain name
    "train". Storage shared by many runs (a bucket, an NFS folder, $LAUNCHER_STORAGE) gets a
    name derived from the absolute output_dir: Ray Train restores whatever run of the same
    name it finds there, so a shared name would make a new run continue an old one. The same
    output_dir maps to the same name, which keeps `--resume` working.
    """
    store = cfg.storage_path()
    if not is_uri(store) and os.path.abspath(store) == cfg.default_storage_path():
        return "train"
    out = os.path.abspath(cfg.output_dir)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.basename(out.rstrip("/")) or "run").strip("-") or "run"
    return f"{slug}-{hashlib.sha1(out.encode()).hexdigest()[:8]}"


def check_run_state(cfg: Config, name: str, overwrite: bool, resume: bool) -> None:
    """Ray Train continues whatever run of the same name it finds in storage. Make that explicit:
    `--resume` needs an earlier run there, and a fresh run must not silently continue one.
    Raises ConfigError; runs before any model or data is loaded."""
    run = join(cfg.storage_path(), name)
    found = _has_checkpoints(run)
    if resume and not found:
        raise ConfigError("--resume", f"no earlier run to resume in {redact_uri(run)}",
                          "run without --resume, or set ray.storage_path to the storage of the run to continue")
    if found and not resume and not overwrite:
        raise ConfigError("output_dir", f"an earlier run of {cfg.output_dir} is in {redact_uri(run)}",
                          "pass --resume to continue it or --overwrite to start over")


def _has_checkpoints(run: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(run)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return False
    return any(os.path.basename(f.path).startswith("checkpoint_") for f in fs.get_file_info(pafs.FileSelector(path)))


def clear_run(cfg: Config, name: str) -> None:
    """Delete a previous run of this name in shared storage (`launcher train --overwrite`)."""
    storage = cfg.storage_path()
    if name != "train" or is_uri(storage):
        delete(join(storage, name))


def publish_best(best_dir: str, storage: str, name: str) -> Optional[str]:
    """When run storage is a URI, copy the exported best/ to <storage>/<name>/best; returns that URI."""
    if not is_uri(storage) or not os.path.isdir(best_dir):
        return None
    return upload_dir(best_dir, join(storage, name, "best"))


# ---------------------------------------------------------------------- storage that refuses writes


#: errno values that mean "this storage cannot take the write" rather than a bug in the code
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
_ERRNO_IN_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)  # how pyarrow words an OSError it raises without errno


def _causes(e: Optional[BaseException]):
    """`e` and every exception inside it: __cause__ / __context__, and what Ray Train's TrainingFailedError
    carries (`worker_failures` per rank and `controller_failure`, public in Ray 2.60)."""
    todo, seen = [e], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "controller_failure", None), compat.train_user_exception(e)]
        todo += list((getattr(e, "worker_failures", None) or {}).values())


def storage_error_cause(e: Optional[BaseException], path: str) -> Optional[StorageError]:
    """A StorageError for `path` when `e`, or an error inside it, is a write the storage refused."""
    for c in _causes(e):
        if isinstance(c, StorageError):
            return c
        if not isinstance(c, OSError):
            continue
        code = c.errno
        if code is None:
            found = _ERRNO_IN_TEXT.search(str(c))
            code = int(found.group(1)) if found else None
        if code in (errno.EACCES, errno.EPERM) and not (c.filename and _inside(str(c.filename), path)):
            continue  # a refused read elsewhere (a data file, a model folder) is not this storage's fault
        if code in STORAGE_ERRNOS:
            where = f" writing {c.filename}" if c.filename else ""
            return StorageError(path, f"{STORAGE_ERRNOS[code]} ({errno.errorcode[code]}{where})")
    return None


def _inside(filename: str, path: str) -> bool:
    if is_uri(path):
        return True  # pyarrow names bucket paths its own way
    full, root = os.path.abspath(filename), os.path.abspath(path)
    return full == root or full.startswith(root.rstrip("/") + "/")


@contextlib.contextmanager
def storage_errors(path: str):
    """Turn a write that the storage at `path` refused (anywhere inside the raised error) into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        cause = storage_error_cause(e, path)
        if cause is None:
            raise
        raise cause from e
