"""Config parsing for every command: YAML file + `--section.key value` overrides → typed Config.

jsonargparse builds the parser (and `--help`) from the dataclasses in launcher.config; this module
turns its errors into one line that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from typing import Optional

from launcher.config import Config, ConfigError

FLAGS = {
    "--overwrite": "Replace a non-empty output_dir.",
    "--resume": "Continue the run in output_dir from its latest checkpoint.",
    "--debug": "Show tracebacks.",
}


def all_keys(cls=Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        keys.append(name)
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            keys.extend(all_keys(f.default_factory, name + "."))
    return keys


def build_parser(prog: str, description: str, config_cls=Config, extra_flags: Optional[dict] = None):
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, default_env=False,
                            usage=f"{prog} CONFIG.yaml [--section.key value ...] [--print-config]")
    parser.add_argument("--config", action=ActionConfigFile, help="The YAML config (also accepted as the first positional argument).")
    for flag, text in {**FLAGS, **(extra_flags or {})}.items():
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("--print-config", action="store_true", help="Print the resolved config as YAML and exit.")
    parser.add_class_arguments(config_cls, nested_key=None, as_group=True)
    return parser


def _split_argv(argv: list[str]) -> list[str]:
    """`CONFIG.yaml --a.b 1` → `--config CONFIG.yaml --a.b 1`; also accepts `--a.b=1`."""
    if argv and not argv[0].startswith("-"):
        path = argv[0]
        if not os.path.exists(path):
            raise ConfigError("CONFIG", f"config file not found: {path}", "check the path")
        argv = ["--config", path] + argv[1:]
    return argv


def parse(argv: list[str], prog: str = "launcher train", description: str = "", config_cls=Config,
          extra_flags: Optional[dict] = None):
    """→ (Config, flags dict). Raises ConfigError with a one-line message."""
    argv = _split_argv(list(argv))
    argv, task_options = _pop_task_options(argv)
    _check_yaml(argv)
    parser = build_parser(prog, description, config_cls, extra_flags)
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        print(_task_options_help())
        raise SystemExit(0)
    try:
        ns = parser.parse_args(argv)
    except Exception as e:  # jsonargparse raises ArgumentError / ValueError subclasses
        raise translate_error(str(e), config_cls) from None
    flags = {k.lstrip("-").replace("-", "_"): bool(ns.get(k.lstrip("-").replace("-", "_"))) for k in {**FLAGS, **(extra_flags or {})}}
    flags["print_config"] = bool(ns.get("print_config"))
    for k in list(flags):
        ns.pop(k, None) if hasattr(ns, "pop") else None
    ns.pop("config", None)
    cfg = parser.instantiate(ns) if hasattr(parser, "instantiate") else parser.instantiate_classes(ns)
    cfg = config_cls(**{f.name: cfg[f.name] for f in dataclasses.fields(config_cls) if f.name in cfg})
    cfg.task_options = {**(cfg.task_options or {}), **task_options}
    from launcher import secrets

    secrets.check_config(dataclasses.asdict(cfg))  # also before --print-config echoes it
    if hasattr(cfg, "model") and cfg.model.name_or_path.startswith("pypi:"):
        from launcher import models

        cfg.model.gguf_file = cfg.model.gguf_file or models.gguf_file(cfg.model.name_or_path)
        cfg.model.name_or_path = models.resolve(cfg.model.name_or_path)
    return cfg, flags


def _pop_task_options(argv: list[str]) -> tuple[list[str], dict]:
    """`--task_options.k v` pairs (task-specific keys, validated by the task itself)."""
    import yaml

    rest, options, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--task_options."):
            key, _, value = a[len("--task_options."):].partition("=")
            if not _:
                if i + 1 >= len(argv):
                    raise ConfigError(f"task_options.{key}", "needs a value")
                value = argv[i + 1]
                i += 1
            options[key] = yaml.safe_load(value)
        else:
            rest.append(a)
        i += 1
    return rest, options


def _check_yaml(argv: list[str]) -> None:
    """YAML syntax errors with the line, and unknown top-level sections, before jsonargparse sees them."""
    import yaml

    if "--config" not in argv:
        return
    path = argv[argv.index("--config") + 1]
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("CONFIG", f"config file not found: {path}", "check the path") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, f"YAML syntax error at{where}: {getattr(e, 'problem', e)}", "fix the YAML at that line") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(path, "the config must be a YAML mapping of sections (task:, model:, data:, ...)", "see examples/configs/")


def translate_error(message: str, config_cls=Config) -> ConfigError:
    keys = all_keys(config_cls)
    text = " ".join(message.split())
    m = re.search(r"Group '([\w.]+)' does not accept (?:nested key|option) '([\w.]+)'", text)
    if m:
        return _unknown(f"{m.group(1)}.{m.group(2)}", keys)
    m = re.search(r"[Kk]ey '?\"?([\w.]+)'?\"? is not expected", text)
    if m:
        return _unknown(m.group(1), keys)
    m = re.search(r"unrecognized arguments: (--?[\w.\-]+)", text)
    if m:
        return _unknown(m.group(1).lstrip("-"), keys)
    m = re.search(r"Option '([\w.]+)' is not accepted", text)  # an unknown section in the YAML
    if m:
        return _unknown(m.group(1), keys)
    m = re.search(r'Parser key "([\w.]+)": Does not validate against any of the Union subtypes Subtypes: \[(.*?)\] Errors:.*'
                  r"Given value: (.+)$", text)
    if m:  # Optional[...] keys: name the accepted choices or type, not jsonargparse's union internals
        key, subtypes, got = m.groups()
        choices = re.findall(r"'([^']+)'", subtypes.split("]")[0]) if "Literal" in subtypes else []
        if choices:
            return ConfigError(key, f"invalid choice {got.strip()!r}", "choose one of: " + ", ".join(choices) + " (or null)")
        kinds = [k for k in re.findall(r"<class '(\w+)'>", subtypes) if k != "NoneType"]
        kind = " or ".join(kinds) or "value"
        return ConfigError(key, f"expected {kind} or null, got {got.strip()!r}", f"give {_a(kind)} {kind} value")
    m = re.search(r'Parser key "([\w.]+)":.*?Expected a (.+?)\. Got value: (.+?)(?: - |$)', text)
    if m:
        key, expected, got = m.groups()
        lit = re.findall(r"'([^']+)'", expected) if "Literal" in expected else []
        if lit:
            return ConfigError(key, f"invalid choice {got.strip()!r}", "choose one of: " + ", ".join(lit))
        kind = re.sub(r"<class '(\w+)'>", r"\1", expected)
        return ConfigError(key, f"expected {kind}, got {got.strip()!r}", f"give {_a(kind)} {kind} value")
    m = re.search(r'Parser key "([\w.]+)":\s*(.*)', text)
    if m:
        return ConfigError(m.group(1), m.group(2)[:200])
    return ConfigError("config", text[:300])


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _unknown(key: str, keys: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1] or difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see `launcher train --help` for all keys"
    return ConfigError(key, "unknown key", hint)


def _task_options_help() -> str:
    return ("\ntask_options: task-specific keys, e.g. --task_options.head pkg.mod:Class (base), "
            "--task_options.objective causal (language-modeling); README.md lists them per task.")


def print_config(cfg: Config, file=None) -> None:
    import yaml

    from launcher.config import to_dict
    from launcher.export import redact

    yaml.safe_dump(redact(to_dict(cfg)), file or sys.stdout, sort_keys=False)
