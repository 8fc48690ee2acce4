"""The TPU path on CPU PJRT (`make test-xla`): torch-xla inside Ray Train workers, no TPU needed.

Runs in .venv-xla (torch 2.9 + torch-xla 2.9) with PJRT_DEVICE=CPU, which runs torch-xla's real
XLA compiler and runtime on the CPU. Needs torch_xla (`make venv-xla`): skipped without it, failed under CI.
What these tests cannot show is listed in docs/tpu.md.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from tests.helpers.requires import missing

if not missing("torch_xla"):  # .venv-xla: not in the main venv, where PJRT_DEVICE would mean "XLA on CPU"
    # Before the shared local Ray starts: its workers inherit this process's environment.
    os.environ.setdefault("PJRT_DEVICE", "CPU")
    # XLA's CPU backend without LLVM optimisation: compiles several times faster on 2 shared cores,
    # and compile time, not step time, is what these tiny models spend. Test speed only.
    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from tests.helpers.cli import run_cli  # noqa: E402
from tests.helpers.config import base_config  # noqa: E402
from tests.helpers.data import sentiment_rows, write_csv  # noqa: E402
from tests.helpers.paths import REPO  # noqa: E402

from launcher.commands import train as train_cmd  # noqa: E402
from launcher.data.sampling import optimizer_steps_per_epoch  # noqa: E402

pytestmark = [pytest.mark.xla, pytest.mark.requires("torch_xla", install="make venv-xla"), pytest.mark.timeout(1500)]

MAIN_PYTHON = os.path.join(REPO, ".venv", "bin", "python")


def spread_files(tmp_path, n_train: int = 72) -> dict:
    """Texts of 3 to 27 words: after tokenisation they fall into all three buckets of max_length 32."""
    return {
        "train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(n_train, seed=11, min_len=2, max_len=26)),
        "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(20, seed=12, min_len=2, max_len=26)),
        "test": write_csv(str(tmp_path / "test.csv"), sentiment_rows(20, seed=13, min_len=2, max_len=26)),
    }


def tpu_config(model, files, out, **sections):
    cfg = base_config(model, files, out, **sections)
    cfg.ray.accelerator = "tpu"
    cfg.data.max_length = 32
    return cfg


def logged_epochs(out: str) -> list[dict]:
    """Rows of logs/csv/metrics.csv that carry the per-validation XLA stats, in order."""
    with open(os.path.join(out, "logs", "csv", "metrics.csv")) as f:
        return [r for r in csv.DictReader(f) if r.get("xla_compilations")]


def load_in_main_venv(model_dir: str) -> dict:
    """Load the exported folder with plain transformers + torch 2.13 (no torch-xla) and classify a text."""
    code = ("import json, sys, torch; from transformers import pipeline; "
            "clf = pipeline('text-classification', model=sys.argv[1]); "
            "print(json.dumps(clf('a great and lovely film')[0]))")
    proc = subprocess.run([MAIN_PYTHON, "-c", code, model_dir], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PJRT_DEVICE="", HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_one_worker_steps_compile_count_export_and_resume(ray_session, tiny_bert, tmp_path):
    """1 worker, 3 epochs, accumulation 2 over 15 batches per epoch; then --resume for a 4th epoch."""
    files = spread_files(tmp_path, n_train=120)
    out = str(tmp_path / "run")
    cfg = tpu_config(tiny_bert, files, out, train={"max_epochs": 3, "batch_size": 8, "accumulate_grad_batches": 2,
                                                   "group_by_length": False},
                     ray={"num_workers": 1, "cpus_per_worker": 1})
    results = train_cmd.run(cfg)

    steps = optimizer_steps_per_epoch(120, 1, 8, 2)  # 15 batches -> 8 optimizer steps (the last one after 1 batch)
    assert steps == 8 and results["global_step"] == 3 * steps
    assert [e["epoch"] for e in results["epochs"]] == [1.0, 2.0, 3.0]
    assert results["test"] and 0.0 <= results["test"]["test_accuracy"] <= 1.0

    # Fixed shapes: the graphs are compiled in the first epochs and reused after that. What epoch 3
    # may still add is Lightning's bookkeeping between epochs (tiny graphs; 1-2 seen), not one per
    # batch: unbucketed, a new shape comes every few of its 17 batches (test_tpu_setup.py).
    counts = [int(float(r["xla_compilations"])) for r in logged_epochs(out)]  # at the end of each epoch
    assert len(counts) == 3, counts
    assert counts[2] - counts[1] <= 3, f"XLA graphs compiled by the end of epochs 1-3: {counts}"

    # The checkpoint holds CPU tensors and the export is an ordinary transformers folder.
    run_dir = os.path.join(out, "ray", "train")
    ckpt_dirs = [d for d in os.listdir(run_dir) if d.startswith("checkpoint_") and os.path.isdir(os.path.join(run_dir, d))]
    assert ckpt_dirs
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(results["best_model"])
    assert model.config.id2label == {0: "neg", 1: "pos"}
    if os.path.exists(MAIN_PYTHON):
        pred = load_in_main_venv(results["best_model"])
        assert pred["label"] in ("neg", "pos")
        ckpt = os.path.join(run_dir, sorted(ckpt_dirs)[-1], "checkpoint.ckpt")
        code = ("import sys, torch; s = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
                "print(s['global_step'], {t.device.type for t in s['state_dict'].values()})")
        proc = subprocess.run([MAIN_PYTHON, "-c", code, ckpt], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split(" ", 1)[1].strip() == "{'cpu'}"

    # Resume: the same output_dir with one more epoch continues from the last checkpoint.
    cfg.train.max_epochs = 4
    resumed = train_cmd.run(cfg, resume=True)
    assert resumed["global_step"] == 4 * steps
    assert resumed["epochs"][-1]["epoch"] == 4.0 and resumed["epochs_completed"] == 4


@pytest.mark.ray
def test_two_workers_stay_identical_bf16_mixed(ray_session, tiny_bert, tmp_path):
    """2 Ray workers, each its own XLA process; gradients averaged over Ray's gloo group."""
    files = spread_files(tmp_path, n_train=60)
    out = str(tmp_path / "two")
    cfg = tpu_config(tiny_bert, files, out, train={"max_epochs": 2, "batch_size": 8, "accumulate_grad_batches": 2,
                                                   "precision": "bf16-mixed"},
                     ray={"num_workers": 2, "cpus_per_worker": 0.5})
    results = train_cmd.run(cfg)
    assert results["global_step"] == 2 * optimizer_steps_per_epoch(60, 2, 8, 2)
    rows = logged_epochs(out)
    assert len(rows) == 2
    # Sum of all weights, compared across the two workers after each epoch.
    assert all(float(r["xla_replica_spread"]) == 0.0 for r in rows), [r["xla_replica_spread"] for r in rows]
    assert results["best_model"] and os.path.exists(os.path.join(results["best_model"], "model.safetensors"))


def test_cli_spmd_two_devices_bf16_true(tiny_bert, tmp_path):
    """`launcher train CFG --ray.accelerator tpu` with PJRT_DEVICE=CPU and 2 XLA devices in the worker (SPMD)."""
    files = spread_files(tmp_path, n_train=48)
    out = str(tmp_path / "cli")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(
        f"task: sequence-classification\noutput_dir: {out}\nmodel: {{name_or_path: {tiny_bert}}}\n"
        f"data: {{train_file: {files['train']}, validation_file: {files['validation']}, max_length: 32}}\n"
        "optim: {lr: 0.005}\ntrain: {max_epochs: 1, batch_size: 8, precision: bf16-true}\n"
        "ray: {num_workers: 1, cpus_per_worker: 1, num_cpus: 2, max_failures: 0}\nlogging: {tensorboard: false}\n")
    proc = run_cli("train", str(cfg_path), "--ray.accelerator", "tpu", timeout=1200,
                   env={"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2", "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 local / 2 runtime devices" in proc.stderr and "SPMD" in proc.stderr
    assert "graphs compiled" in proc.stderr
    results = json.loads(open(os.path.join(out, "results.json")).read())
    assert results["global_step"] == optimizer_steps_per_epoch(48, 1, 8, 1)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "best"))
