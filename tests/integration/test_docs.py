"""The README documents every config key (generated from the dataclasses) and the two set-up commands."""

from __future__ import annotations

import os

from launcher.config import values as schema_values
from launcher.config import reference
from tests.helpers.paths import REPO

ROOT = str(REPO)


def test_readme_config_reference_is_current():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split(reference.BEGIN)[1].split(reference.END)[0]
    assert section.strip() == reference.reference().strip(), "run: python -m launcher.docs --write README.md"
    for key in schema_values.all_keys():
        if "." in key or key in ("task", "output_dir", "task_options"):
            assert f"`{key}`" in section or f"`{key}:`" in section, key


def test_readme_shows_the_two_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert "make demo" in text and "make test" in text


def test_every_example_config_parses_and_starts_with_its_command():
    from launcher.config import parsing
    from launcher.config import validate

    folder = os.path.join(ROOT, "examples", "configs")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    assert names
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for name in names:
            path = os.path.join("examples", "configs", name)
            first = open(path).readline()
            assert first.startswith("# launcher ") or first.startswith("# python "), (name, first)
            cfg, _ = parsing.parse([path], prog="launcher train")
            validate(cfg)
    finally:
        os.chdir(cwd)


def test_fault_table_names_tests_that_exist():
    """docs/faults.md: every test its table cites is a real file (and function), in the tier the row says."""
    import re

    text = open(os.path.join(ROOT, "docs", "faults.md")).read()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 10
    for row in rows:
        tiers = {t.strip() for t in row.rstrip(" |").rsplit("|", 1)[1].split(",")}
        assert tiers <= {"default", "slow", "xla"}, row
        for path, name in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", row):
            source = open(os.path.join(ROOT, path)).read()
            if name:
                assert f"def {name}(" in source, (path, name)


def test_every_lightning_base_example_starts_with_its_command():
    folder = os.path.join(ROOT, "examples", "lightning_base")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".py"))
    assert len(names) >= 3
    for name in names:
        first = open(os.path.join(folder, name)).readline()
        assert first.startswith(f"# python examples/lightning_base/{name} "), (name, first)
