"""launcher.training.prepare: output_dir protection and the run state in shared storage."""

from __future__ import annotations

import os

import pytest

from tests.helpers.config import base_config
from launcher.config import ConfigError


def test_non_empty_output_dir_needs_overwrite(tmp_path, tiny_bert, sentiment_files):
    from tests.helpers.config import base_config
    from launcher.training import prepare as prepare_lib

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    cfg = base_config(tiny_bert, sentiment_files, str(out))
    with pytest.raises(ConfigError, match="output_dir: .* is not empty — pass --overwrite"):
        prepare_lib.check_output_dir(cfg, overwrite=False, resume=False)
    assert (out / "results.json").read_text() == "{}"


def test_output_dir_never_overwritten_without_a_flag(tmp_path, tiny_bert, sentiment_files):
    from launcher import storage
    from launcher.training import prepare as prepare_lib

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    cfg = base_config(tiny_bert, sentiment_files, str(out))
    with pytest.raises(ConfigError, match="is not empty — pass --overwrite"):
        prepare_lib.check_output_dir(cfg, overwrite=False, resume=False)
    prepare_lib.check_output_dir(cfg, overwrite=True, resume=False)
    prepare_lib.check_output_dir(cfg, overwrite=False, resume=True)
    assert (out / "results.json").read_text() == "{}"

    # Shared storage remembers runs by output_dir: a fresh run never silently continues one.
    cfg.ray.storage_path = str(tmp_path / "shared")
    name = storage.run_name(cfg)
    with pytest.raises(ConfigError, match="no earlier run to resume"):
        storage.check_run_state(cfg, name, overwrite=False, resume=True)
    os.makedirs(tmp_path / "shared" / name / "checkpoint_2026-01-01_00-00-00.000000")
    with pytest.raises(ConfigError, match="--resume to continue it or --overwrite"):
        storage.check_run_state(cfg, name, overwrite=False, resume=False)
    storage.check_run_state(cfg, name, overwrite=False, resume=True)
    storage.check_run_state(cfg, name, overwrite=True, resume=False)
