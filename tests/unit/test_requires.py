"""tests/helpers/requires.py: a missing test dependency skips a test locally and fails it under CI,
whether the test says so with the `requires` marker, the `requires()` call or a bare importorskip."""

from __future__ import annotations

import pytest

TESTS = '''
import pytest
from tests.helpers.requires import requires

@pytest.mark.requires("json", install="(stdlib)")
def test_present():
    pass

@pytest.mark.requires("json", "no_such_module_xyz", install="make test-deps")
def test_marker():
    pass

def test_call():
    requires("no_such_module_xyz.sub", install="pip install xyz")

def test_importorskip():
    pytest.importorskip("no_such_module_xyz")

def test_other_skip():
    pytest.skip("not a dependency: stays a skip")
'''


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=TESTS, test_module_level='import pytest\npytest.importorskip("no_such_module_xyz")\n'
                                                           'def test_never():\n    pass\n')
    return pytester


# The plugin module is already loaded by this session: the inner run cannot assert-rewrite it (harmless).
PLUGIN = ["-p", "tests.helpers.requires", "-W", "ignore::pytest.PytestAssertRewriteWarning", "--continue-on-collection-errors"]


def test_missing_dependencies_skip_locally(suite):
    result = suite.runpytest(*PLUGIN, "--missing-deps=skip", "-rs")
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*missing dependency no_such_module_xyz: make test-deps*",
                                 "*missing dependency no_such_module_xyz.sub: pip install xyz*"])


def test_missing_dependencies_fail_under_ci(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")  # what .ci/run sets: the default becomes --missing-deps=fail
    result = suite.runpytest(*PLUGIN, "-rfE")
    # A marker fails in setup (an error), a requires() call or importorskip in the test (a failure), a
    # module-level importorskip at collection (an error); a skip for another reason stays a skip.
    result.assert_outcomes(passed=1, failed=2, skipped=1, errors=2)
    result.stdout.fnmatch_lines(["*missing dependency no_such_module_xyz: make test-deps*"])
