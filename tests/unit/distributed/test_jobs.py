"""launcher.distributed.jobs: token auth goes to loopback only; cluster checks refuse what would fail."""

from __future__ import annotations

import pytest

from launcher.distributed import jobs
from launcher.config import Config, ConfigError


def _cfg(**ray) -> Config:
    cfg = Config(output_dir="/abs/out")
    cfg.model.name_or_path = "m"
    cfg.data.train_file = "t.csv"
    for k, v in ray.items():
        setattr(cfg.ray, k, v)
    return cfg


def test_token_auth_is_sent_to_loopback_only(tmp_path):
    token = {"RAY_AUTH_TOKEN": "t" * 32}
    assert jobs.wants_token("http://127.0.0.1:8265", token)
    assert jobs.wants_token("http://localhost:8265", token)
    assert not jobs.wants_token("http://10.0.0.5:8265", token)  # never to another host unless asked
    assert not jobs.wants_token("http://127.0.0.1:8265", {**token, "RAY_AUTH_MODE": "disabled"})  # explicit wins
    assert not jobs.wants_token("http://127.0.0.1:8265", {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")})
    err = jobs._api_error(RuntimeError("Authentication required: Unauthorized: Missing authentication token"), "http://h:8265")
    assert "RAY_AUTH_MODE=token" in str(err)


def test_cluster_checks_refuse_what_would_fail():
    fixed = jobs.ClusterInfo(nodes=1, resources={"CPU": 2.0}, autoscaling=False)
    assert jobs.check_cluster(_cfg(num_workers=2, cpus_per_worker=1), fixed, []) == []
    with pytest.raises(ConfigError, match="ray.use_gpu: 2 workers x 1(.0)? GPUs asked, the cluster has 0 GPUs"):
        jobs.check_cluster(_cfg(use_gpu=True), fixed, [])
    with pytest.raises(ConfigError, match="ray.accelerator: tpu"):
        jobs.check_cluster(_cfg(accelerator="tpu"), fixed, [])
    with pytest.raises(ConfigError, match="ray.num_workers"):
        jobs.check_cluster(_cfg(num_workers=4, cpus_per_worker=1), fixed, [])  # auto would give each 0.5

    # An autoscaler may add the GPU nodes: a note, not an error.
    scaling = jobs.ClusterInfo(nodes=1, resources={"CPU": 4.0}, autoscaling=True)
    notes = jobs.check_cluster(_cfg(use_gpu=True, storage_path="s3://b/runs"), scaling, [])
    assert any("autoscaler must add nodes" in n for n in notes)

    multi = jobs.ClusterInfo(nodes=3, resources={"CPU": 12.0, "GPU": 2.0}, autoscaling=False)
    with pytest.raises(ConfigError, match="ray.storage_path: /data/runs is a local folder and the cluster has 3 nodes"):
        jobs.check_cluster(_cfg(storage_path="/data/runs"), multi, [])
    assert jobs.check_cluster(_cfg(storage_path="/data/runs"), multi, ["/data"]) == []
    assert jobs.check_cluster(_cfg(storage_path="gs://b/runs"), multi, []) == []
    with pytest.raises(ConfigError, match="autoscaler that adds nodes"):
        jobs.check_cluster(_cfg(storage_path="/data/runs"), scaling, [])
    notes = jobs.check_cluster(_cfg(), multi, [])
    assert any("LAUNCHER_STORAGE" in n for n in notes)
    cfg = _cfg(storage_path="s3://b/r")
    cfg.output_dir = "runs/x"
    assert jobs.check_cluster(cfg, fixed, []) == []
    cfg.ray.storage_path = None
    assert any("output_dir runs/x is relative" in n for n in jobs.check_cluster(cfg, fixed, []))
