"""A Config's values by dotted key (`optim.lr`): the keys there are, their types, the one coercer
that decides whether a value fits a field, and dict round-trips (for Ray workers and export files)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from launcher.config.schema import SECTIONS, Config


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Rebuild a Config from `to_dict` output (used inside Ray workers and by `evaluate`)."""
    kwargs = {}
    for f in dataclasses.fields(Config):
        if f.name not in d:
            continue
        value = d[f.name]
        sub = SECTIONS.get(f.name)
        if sub is not None and isinstance(value, dict):
            names = {g.name for g in dataclasses.fields(sub)}
            value = sub(**{k: v for k, v in value.items() if k in names})
        kwargs[f.name] = value
    return Config(**kwargs)


def all_keys(cls=None, prefix: str = "") -> list[str]:
    """Every dotted key of the config (sections and their fields)."""
    cls = cls or Config
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        keys.append(name)
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            keys.extend(all_keys(f.default_factory, name + "."))
    return keys


class BadValue(Exception):
    """A value that does not fit a config field's type: `expected` is one of int, float, bool, str,
    choice; `choices` lists a choice field's values; `optional` whether null is allowed too."""

    def __init__(self, expected: str, value, choices: tuple = (), optional: bool = False):
        super().__init__(f"expected {expected}, got {value!r}")
        self.expected, self.value, self.choices, self.optional = expected, value, tuple(choices), optional


def field_type(key: str):
    """The type annotation of a dotted key such as `optim.lr`; KeyError when there is no such field."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise KeyError(key)
        tp = hints[part]
        if i == len(parts) - 1:
            return tp
        if not dataclasses.is_dataclass(tp):
            raise KeyError(key)
        cls = tp
    raise KeyError(key)


def coerce(tp, value):
    """`value` as the field type `tp` wants it (strings as a YAML file or a command line give them:
    "1e-4" → 1e-4, "true" → True, "null" → None); raises BadValue. The one place that decides whether
    a value fits a field: command-line and YAML checks, searched values and lightning_base flags use it."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(options) < len(typing.get_args(tp))
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~"))):
            return None
        errors = []
        for option in options:  # Union[float, Literal["auto"]]: the first that takes the value
            try:
                return coerce(option, value)
            except BadValue as e:
                errors.append(e)
        if len(errors) == 1:
            raise BadValue(errors[0].expected, value, errors[0].choices, optional=optional) from None
        expected = " or ".join(" or ".join(map(repr, e.choices)) if e.expected == "choice" else e.expected for e in errors)
        raise BadValue(expected, value, optional=optional) from None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise BadValue("choice", value, choices)
        return value
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise BadValue("bool", value)
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise BadValue("int", value) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadValue("int", value)
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise BadValue("float", value) from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadValue("float", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise BadValue("str", value)
        return value
    return value  # dicts and lists: checked by whoever reads them (tasks, the search space)


def set_value(cfg: Config, key: str, value) -> None:
    """Set a dotted key (`optim.lr`) on `cfg`, coerced to the field's type; KeyError / BadValue."""
    tp = field_type(key)
    section, _, leaf = key.rpartition(".")
    target: Any = cfg
    for part in section.split(".") if section else []:
        target = getattr(target, part)
    setattr(target, leaf, coerce(tp, value))
