"""`launcher COMMAND ...`: the command table. Each entry is the `main(argv)` of one file in launcher/commands."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from launcher.errors import StorageError, config_error_cause, first_line

COMMANDS = {
    "train": "launcher.commands.train:main",
    "tune": "launcher.commands.tune:main",
    "evaluate": "launcher.commands.evaluate:main",
    "predict": "launcher.commands.predict:main",
    "plan": "launcher.commands.plan:main",
    "submit": "launcher.commands.submit:main",
}
USAGE = """usage: launcher COMMAND [ARGS]

Fine-tune Hugging Face models with Lightning on Ray Train, search with Ray Tune.

commands:
{commands}

`launcher COMMAND --help` lists every option with its doc and default."""


def command(name: str):
    """The main(argv) function of a command."""
    module, func = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LAUNCHER_DEBUG") == "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(len(n) for n in COMMANDS)
        lines = [f"  {n.ljust(width)}  {(command(n).__doc__ or '').strip().splitlines()[0]}" for n in COMMANDS]
        print(USAGE.format(commands="\n".join(lines)))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean `launcher {close[0]}`?" if close else "commands: " + ", ".join(COMMANDS)
        print(f"launcher: error: unknown command {name!r} — {hint}", file=sys.stderr)
        return 2
    try:
        return int(command(name)(rest) or 0)
    except KeyboardInterrupt:
        print(f"launcher {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        if debug:
            traceback.print_exc()
        cause = config_error_cause(e)  # a ConfigError raised inside a Ray worker arrives wrapped
        if cause is not None:
            print(f"launcher {name}: error: {cause}", file=sys.stderr)
            return 2
        if isinstance(e, StorageError):  # full or read-only storage: the path and the cause, then --resume
            print(f"launcher {name}: error: {e}", file=sys.stderr)
            return 1
        if not debug:
            print(f"launcher {name}: failed: {type(e).__name__}: {first_line(e, 10**6) if str(e).strip() else ''} "
                  "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
