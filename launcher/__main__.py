"""`launcher COMMAND ...`: the command table is COMMANDS below; each entry is one function."""

from __future__ import annotations

import os
import sys
import traceback

from launcher.config import ConfigError

USAGE = """usage: launcher COMMAND [ARGS]

Fine-tune Hugging Face models with Lightning on Ray Train, search with Ray Tune.

commands:
{commands}

`launcher COMMAND --help` lists every option with its doc and default."""


def cmd_train(argv: list[str]) -> int:
    """Train a task on Ray Train workers and export the best epoch to <output_dir>/best."""
    from launcher import cli

    cfg, flags = cli.parse(argv, "launcher train", cmd_train.__doc__)
    if flags["print_config"]:
        cli.print_config(cfg)
        return 0
    from launcher import train

    results = train.run(cfg, overwrite=flags["overwrite"], resume=flags["resume"])
    print(f"[launcher] {train.summary_line(results)}; global_step {results['global_step']}; "
          f"wall {results['train_wall_time_s']:.1f}s")
    if results.get("test"):
        print("[launcher] test: " + " ".join(f"{k} {v:.4f}" for k, v in results["test"].items() if isinstance(v, float)))
    print(f"[launcher] results: {os.path.join(cfg.output_dir, 'results.json')}")
    print(f"[launcher] exported model: {results['best_model']}")
    if results.get("best_model_uri"):
        print(f"[launcher] exported model (copy in run storage): {results['best_model_uri']}")
    return 0


def cmd_evaluate(argv: list[str]) -> int:
    """Score an exported model on a config's validation (or test) data: launcher evaluate CONFIG --model DIR."""
    from launcher import evaluate

    return evaluate.main(argv)


def cmd_predict(argv: list[str]) -> int:
    """Predict with an exported model: launcher predict --model DIR --input FILE --output FILE."""
    from launcher import evaluate

    return evaluate.predict_main(argv)


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
}


def _optional_commands() -> None:
    # Commands whose modules are optional parts of the package register themselves here.
    import importlib.util

    for name, module, func in (("tune", "launcher.tune", "main"), ("submit", "launcher.submit", "main"),
                               ("plan", "launcher.plan", "main")):
        if importlib.util.find_spec(module) is not None and name not in COMMANDS:
            def run(argv, module=module, func=func):
                import importlib

                return getattr(importlib.import_module(module), func)(argv)

            run.__doc__ = _first_doc_line(module)
            COMMANDS[name] = run


def _first_doc_line(module: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    try:
        with open(spec.origin) as f:
            text = f.read()
        doc = text.split('"""')[1].strip().splitlines()[0]
        return doc
    except (OSError, IndexError, AttributeError):
        return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _optional_commands()
    debug = "--debug" in argv or os.environ.get("LAUNCHER_DEBUG") == "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(len(n) for n in COMMANDS)
        lines = "\n".join(f"  {n.ljust(width)}  {(f.__doc__ or '').strip().splitlines()[0]}" for n, f in COMMANDS.items())
        print(USAGE.format(commands=lines))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean `launcher {close[0]}`?" if close else "commands: " + ", ".join(COMMANDS)
        print(f"launcher: error: unknown command {name!r} — {hint}", file=sys.stderr)
        return 2
    try:
        return int(COMMANDS[name](rest) or 0)
    except ConfigError as e:
        if debug:
            traceback.print_exc()
        print(f"launcher {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"launcher {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        cause = _config_error_cause(e)
        if cause is not None:
            if debug:
                traceback.print_exc()
            print(f"launcher {name}: error: {cause}", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        else:
            print(f"launcher {name}: failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                  "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _config_error_cause(e: BaseException):
    """A ConfigError raised inside a Ray worker arrives wrapped; find it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConfigError):
            return e
        e = e.__cause__ or e.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
