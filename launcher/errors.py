"""The project's own exceptions. Imports nothing of launcher, so every layer can raise them."""

from __future__ import annotations

from typing import Optional


class ConfigError(ValueError):
    """A user mistake in the config or the data: reported as one line, exit code 2."""

    def __init__(self, key: str, message: str, fix: str = ""):
        self.key = key
        self.message = message
        self.fix = fix
        text = f"{key}: {message}" if key else message
        if fix:
            text += f" — {fix}"
        super().__init__(text)

    def __reduce__(self):  # keeps key/message/fix when Ray ships the error from a worker
        return (type(self), (self.key, self.message, self.fix))


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite. Deterministic: a restart from a checkpoint would repeat it,
    so the training loop ends the run and the driver raises this, instead of Ray retrying the workers."""


class StorageError(RuntimeError):
    """Run storage or output_dir cannot be written: full, over quota, read-only or not permitted.

    Reported as one line naming the path and the cause (exit code 1). Ray Train registers a
    checkpoint only once it is completely written, so the last registered one stays usable and the
    same command with `--resume` continues from it once the storage is writable again."""

    def __init__(self, path: str, cause: str):
        self.path, self.cause = path, cause
        super().__init__(f"cannot write {path}: {cause} — free space (or make it writable), then rerun the same command "
                         "with --resume to continue from the last complete checkpoint")

    def __reduce__(self):
        return (type(self), (self.path, self.cause))


def config_error_cause(e: Optional[BaseException]) -> Optional[ConfigError]:
    """The ConfigError inside `e`'s cause chain (one raised inside a Ray worker arrives wrapped)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConfigError):
            return e
        e = e.__cause__ or e.__context__
    return None


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
