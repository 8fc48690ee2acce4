"""launcher.distributed.trainer: Ray Train's own console lines follow --verbose."""

from __future__ import annotations

import pytest

from launcher import console
from launcher.config import Config
from launcher.config.parsing import parse
from launcher.distributed import trainer


@pytest.fixture(autouse=True)
def _quiet_again(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    yield
    console.set_verbose(False)


def test_ray_train_info_lines_only_with_verbose(tmp_path, monkeypatch):
    pytest.importorskip("ray.train")
    cfg = Config(output_dir=str(tmp_path))
    assert trainer.run_config(cfg, "run", ("val_loss", "min")).logging_config.log_level == "WARNING"
    config = tmp_path / "c.yaml"
    config.write_text("model: {name_or_path: m}\ndata: {train_file: t.csv}\n")
    parse([str(config), "--verbose"])
    assert console.verbose()
    assert trainer.run_config(cfg, "run", ("val_loss", "min")).logging_config.log_level == "INFO"
    parse([str(config)])  # each command's parse sets it
    assert not console.verbose()
    monkeypatch.setenv(console.VERBOSE_ENV, "1")  # a trial actor or worker of a --verbose run
    assert console.ray_log_level() == "INFO"
