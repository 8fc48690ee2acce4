"""Every private API launcher relies on (launcher/compat.py) still behaves as it did for the versions
compat.py names: an upgrade that changes one fails here, by name, instead of somewhere in a run."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from launcher import compat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", sorted(compat.checks()))
def test_private_api_still_there(name):
    compat.checks()[name]()


def test_private_apis_are_used_only_in_compat():
    """`obj._name` of another library appears in launcher/compat.py only: what
    `grep -rn "\\._[a-z]" launcher/` finds elsewhere is the project's own (self._x, cls._x, its modules' _helpers)."""
    out = subprocess.run(["grep", "-rn", r"\._[a-z]", "launcher/", "--include=*.py"], cwd=ROOT, capture_output=True, text=True).stdout
    offending = []
    for line in out.splitlines():
        path, _, code = line.split(":", 2)
        code = code.split("#", 1)[0]
        if path == "launcher/compat.py":
            continue
        for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\._[a-z]", code):
            if m.group(1) not in OWN:
                offending.append(line)
                break
    assert not offending, "private APIs of other libraries outside launcher/compat.py:\n" + "\n".join(offending)


#: names before `._x` that are the project's own objects or modules
OWN = {"self", "cls", "seq2seq"}
