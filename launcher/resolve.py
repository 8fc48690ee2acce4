"""The one "package.module:Name" resolver: user task classes, base-task heads, lightning_base modules.

Every failure is a ConfigError naming the config key, what was looked for and what was found.
"""

from __future__ import annotations

import importlib
from typing import Optional

from launcher.errors import ConfigError, first_line

# Modules that moved; configs written for the old name keep working.
MOVED = {"launcher.heads": "launcher.tasks.base"}


def split_path(path: str, key: str, example: str = "") -> tuple[str, str]:
    """"package.module:Name" → (module, name); ConfigError when it is not of that form."""
    module_name, sep, name = str(path).partition(":")
    if not sep or not module_name or not name:
        fix = 'use "package.module:Class"' + (f", {example}" if example else "")
        raise ConfigError(key, f"{path!r} is not an import path", fix)
    return module_name, name


def import_object(path: str, key: str, base: Optional[type] = None, what: str = "class", example: str = ""):
    """Import "package.module:Name" and return the object.

    `base`: the object must be a subclass of it (its name is used in messages); `what` describes it.
    """
    module_name, name = split_path(path, key, example)
    try:
        module = importlib.import_module(MOVED.get(module_name, module_name))
    except ImportError as e:
        raise ConfigError(key, f"cannot import {module_name}: {first_line(e)}",
                          "install the package, or run launcher from the folder that holds the module") from None
    except Exception as e:  # noqa: BLE001 - the user's module itself failed while importing
        raise ConfigError(key, f"importing {module_name} failed: {type(e).__name__}: {first_line(e)}", "fix that module") from None
    obj = getattr(module, name, None)
    kind = base.__name__ if base is not None else what
    if obj is None:
        found = sorted(n for n, v in vars(module).items()
                       if isinstance(v, type) and v.__module__ == module.__name__ and (base is None or issubclass(v, base)))
        raise ConfigError(key, f"{module_name} has no {name}", f"{kind} classes there: " + (", ".join(found) or "none"))
    if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
        raise ConfigError(key, f"{path} is not a {_qualified(base)} class", f"{name} must subclass {_qualified(base)}")
    return obj


def _qualified(cls: type) -> str:
    names = {"Module": "torch.nn.Module", "Task": "launcher.tasks.Task"}
    return names.get(cls.__name__, cls.__name__)
