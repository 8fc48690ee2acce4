"""The TPU path's driver side, without torch-xla or TPUs (runs in the main venv): precision, resources, checks.

Training through torch-xla is in tests/xla/test_xla.py (`make test-xla`).
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers.config import base_config

from launcher.distributed import cluster
from launcher.distributed import trainer as trainer_lib
from launcher.commands import train as train_cmd
from launcher.config import ConfigError, validate


HAS_XLA = importlib.util.find_spec("torch_xla") is not None


def tpu_cfg(tmp_path, model="unused", **ray):
    cfg = base_config(model, {"train": "unused.csv"}, str(tmp_path / "out"), ray={"accelerator": "tpu", **ray})
    return cfg


def test_tpu_precision_choices(tmp_path, tiny_bert, sentiment_files):
    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "o"), ray={"accelerator": "tpu"}, train={"precision": "16-mixed"})
    with pytest.raises(ConfigError, match="train.precision.*bf16"):
        validate(cfg)
    cfg.train.precision = "bf16-mixed"
    validate(cfg)


def test_tpu_workers_reserve_a_whole_host_each_and_spread(tmp_path, monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    cfg = tpu_cfg(tmp_path, num_workers=2, tpus_per_worker=4)
    assert trainer_lib.worker_resources(cfg)["TPU"] == 4.0
    assert trainer_lib.placement_strategy(cfg) == "STRICT_SPREAD"
    cfg.ray.num_workers = 1
    assert trainer_lib.placement_strategy(cfg) == cfg.ray.placement_strategy
    # The CPU lane asks for no TPU resources: the workers run XLA on CPU.
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    assert "TPU" not in trainer_lib.worker_resources(cfg)


def test_no_tpus_fails_with_what_the_cluster_has(tmp_path, monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    cfg = tpu_cfg(tmp_path, num_workers=1)
    with pytest.raises(ConfigError, match=r"ray.accelerator.*has 0 TPU chips.*CPU=8") as e:
        cluster._check_tpus(cfg, {"CPU": 8.0, "memory": 1e10}, hosts=[0.0], scalable=[])
    assert "--ray.accelerator cpu" in str(e.value)
    # Two workers need two hosts with 4 free chips each; one v4-8 host is not enough.
    cfg.ray.num_workers = 2
    with pytest.raises(ConfigError, match="chips per host: 4"):
        cluster._check_tpus(cfg, {"CPU": 240.0, "TPU": 4.0}, hosts=[4.0, 0.0], scalable=[])
    cluster._check_tpus(cfg, {"CPU": 480.0, "TPU": 8.0}, hosts=[4.0, 4.0, 0.0], scalable=[])
    # An autoscaling cluster that starts without TPUs passes when its TPU node type can supply them.
    cluster._check_tpus(cfg, {"CPU": 8.0}, hosts=[0.0], scalable=[4.0, 4.0])
    with pytest.raises(ConfigError, match="the autoscaler can add 1 TPU host"):
        cluster._check_tpus(cfg, {"CPU": 8.0}, hosts=[0.0], scalable=[4.0])
    cfg.ray.tpus_per_worker = 8
    with pytest.raises(ConfigError, match="8 TPU chips"):
        cluster._check_tpus(cfg, {"CPU": 480.0, "TPU": 8.0}, hosts=[4.0, 4.0], scalable=[])


@pytest.mark.skipif(HAS_XLA, reason="needs an environment without torch-xla")
def test_cpu_lane_without_torch_xla_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    cfg = tpu_cfg(tmp_path)
    with pytest.raises(ConfigError, match=r"torch-xla.*launcher\[tpu\]"):
        cluster._check_tpus(cfg, {"CPU": 2.0})


@pytest.mark.ray
def test_train_on_a_cluster_without_tpus_stops_before_training(ray_session, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "o"), ray={"accelerator": "tpu", "num_workers": 1})
    with pytest.raises(ConfigError, match=r"has 0 TPU chips.*CPU=2"):
        train_cmd.run(cfg)
    assert not (tmp_path / "o" / "results.json").exists()
