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


def test_claim_dir_refuses_a_second_run_of_the_same_folder(tmp_path):
    """Two runs of one output_dir at the same time (jobs submitted together): the second is refused
    with one line; once the first ends the folder can be claimed again. Nothing is written into it."""
    import subprocess
    import sys

    from launcher.errors import ConfigError
    from launcher.files import claim_dir

    out = str(tmp_path / "run")
    other = [sys.executable, "-c", "import sys; from launcher.files import claim_dir\n"
             "try:\n    with claim_dir(sys.argv[1]): pass\nexcept Exception as e: print(e)", out]
    with claim_dir(out):
        assert os.listdir(out) == []
        r = subprocess.run(other, capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() == f"output_dir: {out} is in use by another run right now — wait for that run to end, or choose another output_dir"
        with pytest.raises(ConfigError, match="in use by another run"):
            with claim_dir(out):
                pass
    r = subprocess.run(other, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
