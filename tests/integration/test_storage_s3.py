"""Run storage on S3 end to end: `launcher train` and `launcher tune` against a real S3-compatible server
(moto, server mode) on loopback.

The training run is a `launcher train` subprocess with the AWS_* variables pointing pyarrow at
the server, so Ray's workers and the driver upload checkpoints exactly as on a cloud cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.cluster import isolated_ray_env
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from launcher import storage


def _run_with_bucket(s3, command: str, cfg_dict: dict, tmp_path) -> subprocess.CompletedProcess:
    """`launcher COMMAND cfg.yaml` in a subprocess whose AWS_* variables point at the S3 server."""
    import yaml

    cfg_path = str(tmp_path / "cfg.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg_dict, f)
    with isolated_ray_env(**s3.env) as env:
        r = subprocess.run([sys.executable, "-m", "launcher", command, cfg_path, "--ray.num_cpus", "2"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.ray
@pytest.mark.slow
def test_training_with_s3_storage_and_predict_from_the_bucket(s3, tiny_bert, tmp_path, sentiment_files):
    """Checkpoints and the exported model land in the bucket; `launcher predict` reads the model from there."""
    from launcher.commands import plan as plan_cmd
    from launcher.config import to_dict

    out = str(tmp_path / "out")
    storage_uri = f"s3://{s3.bucket}/runs"
    cfg = base_config(tiny_bert, sentiment_files, out, ray={"storage_path": storage_uri, "num_workers": 1, "cpus_per_worker": 1},
                      train={"max_epochs": 2})
    cfg.checkpoint.num_to_keep = 1
    r = _run_with_bucket(s3, "train", {k: v for k, v in to_dict(cfg).items() if k != "tune"}, tmp_path)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    name = storage.run_name(cfg)
    assert results["best_model_uri"] == f"{storage_uri}/{name}/best"
    assert "exported model (copy in run storage): " + results["best_model_uri"] in r.stdout

    keys = s3.keys(f"runs/{name}/")
    checkpoints = {k.split("/")[2] for k in keys if k.split("/")[2].startswith("checkpoint_") and k.count("/") > 2}
    assert len(checkpoints) == 1  # num_to_keep: 1 of the 2 epochs' checkpoints is left
    assert any(k.endswith("/checkpoint.ckpt") for k in keys)
    best = {k.split("/best/", 1)[1] for k in keys if "/best/" in k}
    assert {"config.json", "model.safetensors", "launcher.json", "tokenizer.json"} <= best
    assert sorted(best) == sorted(os.listdir(os.path.join(out, "best")))

    # plan's step count is what the run did.
    assert plan_cmd.build(cfg)["steps"]["optimizer_steps_total"] == results["global_step"]

    inputs = write_csv(str(tmp_path / "in.csv"), [{"text": r["text"]} for r in sentiment_rows(5, seed=9)])
    pred = str(tmp_path / "pred.jsonl")
    env = {**os.environ, **s3.env}
    r = subprocess.run([sys.executable, "-m", "launcher", "predict", "--model", results["best_model_uri"], "--input", inputs,
                        "--output", pred], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(pred) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 5 and all(row["label"] in ("neg", "pos") for row in rows)


@pytest.mark.ray
@pytest.mark.slow
def test_tune_with_s3_storage_publishes_the_best_model(s3, tiny_bert, tmp_path, sentiment_files):
    """A search in bucket storage leaves its best model in the bucket too (the output_dir may not outlive the job)."""
    from launcher.config import to_dict

    out = str(tmp_path / "search")
    storage_uri = f"s3://{s3.bucket}/searches"
    cfg = base_config(tiny_bert, sentiment_files, out, ray={"storage_path": storage_uri, "num_workers": 1, "cpus_per_worker": 1},
                      train={"max_epochs": 1})
    cfg_dict = to_dict(cfg)
    cfg_dict["tune"].update(num_samples=2, scheduler="fifo", search_alg="grid", max_concurrent_trials=1,
                            search_space={"optim.lr": {"grid": [1e-3, 5e-3]}})
    _run_with_bucket(s3, "tune", cfg_dict, tmp_path)
    with open(os.path.join(out, "best.json")) as f:
        best = json.load(f)
    name = storage.run_name(cfg)
    assert best["best_model_uri"] == f"{storage_uri}/{name}-tune/best"
    keys = s3.keys(f"searches/{name}-tune/best/")
    assert sorted(k.split("/best/", 1)[1] for k in keys) == sorted(os.listdir(os.path.join(out, "best")))
