"""launcher.config.schema: every section is a dataclass whose fields carry docstrings (they become --help)."""

from __future__ import annotations

import dataclasses

from launcher.config import Config



def test_all_sections_are_dataclasses_with_docs():
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            cls = f.default_factory
            source = __import__("inspect").getsource(cls)
            for g in dataclasses.fields(cls):
                assert f'{g.name}:' in source and '"""' in source.split(f"{g.name}:", 1)[1].split("\n", 2)[1], (cls.__name__, g.name)
