"""The one parser of every command: a YAML config + `--section.key value` overrides + the command's
own flags → a typed Config and the flag values.

jsonargparse builds the parser (and `--help`) from the dataclasses in launcher.config.schema and
instantiates the Config. Before it runs, every key and value is checked against the schema here
(`values.field_type` / `values.coerce`, the same check searched values get), so mistakes are
reported as one line that names the key and the fix, from structured checks rather than from the
wording of jsonargparse's messages. A jsonargparse error left after those checks is shown as its
first line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any, Optional

import yaml

from launcher import console, model_files
from launcher.config import secrets
from launcher.config.schema import Config
from launcher.config.values import BadValue, all_keys, coerce, field_type, to_dict
from launcher.config.secrets import redact
from launcher.errors import ConfigError


@dataclasses.dataclass
class Flag:
    """A command-line option of a command (not a config key)."""

    help: str
    takes: Optional[type] = None  # None: an on/off switch; str/int: takes a value
    default: Any = None
    repeat: bool = False  # may be given several times (a list)
    required: bool = False
    metavar: Optional[str] = None


#: flags of every command that reads a config
COMMON = {
    "--overwrite": Flag("Replace a non-empty output_dir."),
    "--resume": Flag("Continue the run in output_dir from its latest checkpoint."),
    "--debug": Flag("Show tracebacks."),
    "--verbose": Flag("Also show Ray's own log lines (hidden by default)."),
    "--print-config": Flag("Print the resolved config as YAML and exit."),
}
#: free-form sections: their keys are checked by the task (task_options) or the search (tune.search_space)
FREE = ("task_options", "tune.search_space")


@dataclasses.dataclass
class Parsed:
    cfg: Optional[Config]
    flags: dict  # flag name without dashes (print_config) → value
    config_path: Optional[str] = None
    overrides: list = dataclasses.field(default_factory=list)  # the --section.key value tokens, as given
    raw: dict = dataclasses.field(default_factory=dict)  # dotted key → value as written (YAML, then overrides)

    @property
    def is_search(self) -> bool:
        """The config describes a search: a `tune:` section in the YAML or --tune.* overrides."""
        return any(k == "tune" or k.startswith("tune.") for k in self.raw)


def parse(argv: list[str], prog: str = "launcher train", description: str = "", flags: Optional[dict] = None):
    """→ (Config, flags dict). Raises ConfigError with a one-line message; prints --help and exits."""
    parsed = parse_command(argv, prog, description, flags)
    return parsed.cfg, parsed.flags


def parse_command(argv: list[str], prog: str, description: str = "", flags: Optional[dict] = None,
                  config: bool = True) -> Parsed:
    """Parse a command line. `flags`: the command's own options (COMMON is added when `config`)."""
    argv = [a for a in argv if a != "--"]  # `launcher submit CONFIG -- --key value`: the separator is optional
    options = {**(COMMON if config else {"--debug": COMMON["--debug"]}), **(flags or {})}
    if config:
        argv = _config_as_option(argv)
    parser = _build_parser(prog, description, options, config)
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        shadowed = {n: f for n, f in options.items() if _shadowed(n, config)}
        if shadowed:
            print(f"\n{prog} options:")
            for n, f in shadowed.items():
                print(f"  {n} {f.metavar or ''}".ljust(24) + f.help)
        if config:
            print("\ntask_options: task-specific keys, e.g. --task_options.head pkg.mod:Class (base), "
                  "--task_options.objective causal (language-modeling); README.md lists them per task.")
        raise SystemExit(0)
    config_path, overrides, given = _scan(argv, options, config)
    raw = {**(_flatten(_read_yaml(config_path)) if config_path is not None else {}), **given}
    argv, extracted = _extract(argv, options, config)
    if config:
        check_values(raw)
    _check_flags(argv, options)
    try:
        ns = parser.parse_args(argv)
    except Exception as e:  # noqa: BLE001 - jsonargparse raises argparse.ArgumentError subclasses
        text = " ".join(str(e).split())
        raise ConfigError("config" if config else prog, text[:300], f"see `{prog} --help`") from None
    values = {name.lstrip("-").replace("-", "_"): ns.get(name.lstrip("-").replace("-", "_")) for name in options}
    values.update(extracted)
    for name, flag in options.items():
        key = name.lstrip("-").replace("-", "_")
        if flag.takes is None:
            values[key] = bool(values[key])
    console.set_verbose(values.get("verbose", False))
    cfg = None
    if config:
        for key in values:
            ns.pop(key, None)
        ns.pop("config", None)
        built = parser.instantiate_classes(ns)
        cfg = Config(**{f.name: built[f.name] for f in dataclasses.fields(Config) if f.name in built})

        secrets.check_config(dataclasses.asdict(cfg))  # also before --print-config echoes it
        _resolve_pypi_models(cfg)
    return Parsed(cfg=cfg, flags=values, config_path=config_path, overrides=overrides, raw=raw)


def raw_values(config_path: Optional[str], overrides: list[str]) -> dict:
    """Dotted key → value as written in the YAML, then in the `--key value` overrides (before
    defaults, type conversion and pypi: resolution)."""
    raw = _flatten(_read_yaml(config_path)) if config_path else {}
    raw.update(_scan(overrides, {}, True)[2])
    return raw


def check_values(raw: dict) -> None:
    """Each dotted key must be a config key and its value must fit the key's type."""
    keys = all_keys(Config)
    for key, value in raw.items():
        if key.startswith(tuple(f + "." for f in FREE)):
            continue
        try:
            tp = field_type(key)
        except KeyError:
            raise unknown_key(key, keys) from None
        if dataclasses.is_dataclass(tp):
            raise ConfigError(key, f"is a section, not a key: give its keys (e.g. {key}.{dataclasses.fields(tp)[0].name})")
        try:
            coerce(tp, value)
        except BadValue as e:
            raise bad_value(key, e) from None


def bad_value(key: str, e: BadValue) -> ConfigError:
    """The command-line / YAML wording of a value that does not fit its key."""
    got = e.value if isinstance(e.value, str) else repr(e.value)
    if e.expected == "choice":
        return ConfigError(key, f"invalid choice {got!r}", "choose one of: " + ", ".join(map(str, e.choices))
                           + (" (or null)" if e.optional else ""))
    kind = f"{e.expected} or null" if e.optional else e.expected
    article = "an" if e.expected[:1] in "aeiou" else "a"
    return ConfigError(key, f"expected {kind}, got {got!r}", f"give {article} {e.expected} value")


def unknown_key(key: str, keys: Optional[list[str]] = None, what: str = "unknown key", fallback: str = "") -> ConfigError:
    """Names the unknown key and the closest known one (or one with the same last part)."""
    keys = keys if keys is not None else all_keys(Config)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1] or difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else (fallback or "see `launcher train --help` for all keys")
    return ConfigError(key, what, hint)


def print_config(cfg: Config, file=None) -> None:
    yaml.safe_dump(redact(to_dict(cfg)), file or sys.stdout, sort_keys=False)


# ---------------------------------------------------------------------- pieces


def _config_as_option(argv: list[str]) -> list[str]:
    """`CONFIG.yaml --a.b 1` → `--config CONFIG.yaml --a.b 1`."""
    if argv and not argv[0].startswith("-"):
        path = argv[0]
        if not os.path.exists(path):
            raise ConfigError("CONFIG", f"config file not found: {path}", "check the path")
        argv = ["--config", path] + argv[1:]
    return argv


def _shadowed(name: str, config: bool) -> bool:
    """A command flag named like a config section (`launcher evaluate --model DIR` vs the `model:`
    section): jsonargparse cannot hold both, so such flags are read here and shown in the help's epilog."""
    return config and name[2:] in {f.name for f in dataclasses.fields(Config)}


def _extract(argv: list[str], options: dict, config: bool) -> tuple[list[str], dict]:
    """(argv without the shadowed flags, their values)."""
    rest, values, i = [], {}, 0
    for name, flag in options.items():
        if _shadowed(name, config):
            values[name.lstrip("-").replace("-", "_")] = [] if flag.repeat else flag.default
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in options and _shadowed(name, config):
            if not eq:
                value = argv[i + 1]  # _scan checked that it is there
                i += 1
            key = name.lstrip("-").replace("-", "_")
            value = options[name].takes(value) if options[name].takes else True
            values[key] = values[key] + [value] if options[name].repeat else value
        else:
            rest.append(argv[i])
        i += 1
    return rest, values


def _build_parser(prog: str, description: str, options: dict, config: bool):
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    usage = f"{prog} CONFIG.yaml [--section.key value ...] [options]" if config else None
    shadowed = {n: f for n, f in options.items() if _shadowed(n, config)}
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, default_env=False, usage=usage)
    if config:
        parser.add_argument("--config", action=ActionConfigFile, help="The YAML config (also accepted as the first positional argument).")
    for name, flag in options.items():
        if name in shadowed:
            continue
        if flag.takes is None:
            parser.add_argument(name, action="store_true", help=flag.help)
        elif flag.repeat:
            parser.add_argument(name, type=flag.takes, action="append", default=list(flag.default or []), help=flag.help,
                                metavar=flag.metavar)
        else:
            parser.add_argument(name, type=flag.takes, default=flag.default, help=flag.help, metavar=flag.metavar)
    if config:
        parser.add_class_arguments(Config, nested_key=None, as_group=True)
    return parser


def _scan(argv: list[str], options: dict, config: bool) -> tuple[Optional[str], list[str], dict]:
    """(config path, the override tokens, {dotted key: value}) of a command line."""
    config_path, overrides, given, i = None, [], {}, 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        takes_value = name == "--config" or (name in options and options[name].takes is not None)
        if name in options or name == "--config":
            if takes_value and not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(name, "needs a value")
                value = argv[i + 1]
                i += 1
            if name == "--config":
                config_path = value
            i += 1
            continue
        if not config or not name.startswith("--"):
            raise ConfigError(name, "unexpected argument", "options start with -- (see --help)") if not name.startswith("--") \
                else ConfigError(name, "unknown option", "see --help")
        key = name[2:]
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(key, "needs a value")
            value = argv[i + 1]
            overrides += [name, value]
            i += 1
        else:
            overrides.append(token)
        given[key] = _yaml_scalar(value)
        i += 1
    return config_path, overrides, given


def _check_flags(argv: list[str], options: dict) -> None:
    given = {a.partition("=")[0] for a in argv}
    for name, flag in options.items():
        if flag.required and name not in given:
            raise ConfigError(name, "is required", f"add {name} {flag.metavar or 'VALUE'}")


def _yaml_scalar(text: str):
    """A command-line value as YAML reads it (1 → int, true → bool, {a: 1} → dict); text that is not YAML stays text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read_yaml(path: str) -> dict:
    """The config file as a mapping; YAML syntax errors with their line."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("CONFIG", f"config file not found: {path}", "check the path") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(path, f"YAML syntax error at{where}: {getattr(e, 'problem', e)}", "fix the YAML at that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "the config must be a YAML mapping of sections (task:, model:, data:, ...)", "see examples/configs/")
    return data


def _flatten(data: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1}} → {"optim.lr": 1}; free-form sections stay whole."""
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREE and _is_section(dotted):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _is_section(key: str) -> bool:
    try:
        return dataclasses.is_dataclass(field_type(key))
    except KeyError:
        return False


def _resolve_pypi_models(cfg: Config) -> None:
    """`pypi:PACKAGE` model names → the model folder inside the installed package."""
    if cfg.model.name_or_path.startswith("pypi:"):
        cfg.model.gguf_file = cfg.model.gguf_file or model_files.gguf_file(cfg.model.name_or_path)
        cfg.model.name_or_path = model_files.resolve(cfg.model.name_or_path)
