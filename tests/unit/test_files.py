"""launcher.files: writes are atomic (the whole file or the old one, never half)."""

from __future__ import annotations

import json
import os

import pytest

from launcher import files as files_lib


def test_atomic_write_is_complete_or_absent(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files_lib.write_json(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        files_lib.write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}  # the old file, whole
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file left behind
    with pytest.raises(OSError):
        files_lib.write_json(str(tmp_path / "new.json"), {"b": 1})
    assert not (tmp_path / "new.json").exists()
