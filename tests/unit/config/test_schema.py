"""launcher.config.schema: every section is a dataclass whose fields carry docstrings (they become --help)."""

from __future__ import annotations

import dataclasses

import pytest

from launcher.config import Config



def test_all_sections_are_dataclasses_with_docs():
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            cls = f.default_factory
            source = __import__("inspect").getsource(cls)
            for g in dataclasses.fields(cls):
                assert f'{g.name}:' in source and '"""' in source.split(f"{g.name}:", 1)[1].split("\n", 2)[1], (cls.__name__, g.name)


def test_cpus_per_worker_takes_a_number_or_auto():
    from launcher.config.parsing import bad_value
    from launcher.config.values import BadValue, coerce, field_type

    tp = field_type("ray.cpus_per_worker")
    assert coerce(tp, "auto") == "auto" and coerce(tp, "0.5") == 0.5 and coerce(tp, 2) == 2.0
    with pytest.raises(BadValue) as e:
        coerce(tp, "many")
    assert str(bad_value("ray.cpus_per_worker", e.value)) == \
        "ray.cpus_per_worker: expected float or 'auto', got 'many' — give a float or 'auto' value"
