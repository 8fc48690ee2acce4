"""`launcher tune`: real searches on Ray.

One ASHA search runs by default on the shared local Ray (tiny BERT, 1 worker x 0.5 CPU per trial);
PBT and --resume after killing the driver are `slow`. The search pieces without Ray are in tests/unit/search/.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from launcher.commands import tune as tune_cmd


def _flip_before_last_validation():
    """A callback that flips the classifier's sign before the last validation: the last epoch scores 1 - accuracy.

    So every trial that learns peaks before its last epoch, whatever the machine's speed.
    """
    import lightning.pytorch as pl
    import torch

    class FlipBeforeLastValidation(pl.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == trainer.max_epochs - 1:
                with torch.no_grad():
                    for p in pl_module.model.classifier.parameters():
                        p.neg_()

    return FlipBeforeLastValidation()


def _search_config(tiny_bert, tmp_path, out, train_rows: int = 256, **tune_section):
    files = {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(train_rows, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(40, seed=2))}
    cfg = base_config(tiny_bert, files, out, train={"max_epochs": 3, "batch_size": 8, "accumulate_grad_batches": 1},
                      checkpoint={"num_to_keep": 1})
    cfg.ray.num_workers, cfg.ray.cpus_per_worker = 1, 0.5
    cfg.logging.csv = False
    for k, v in tune_section.items():
        setattr(cfg.tune, k, v)
    return cfg


@pytest.mark.ray
def test_asha_search_exports_the_best_epoch_of_all_trials(ray_session, tiny_bert, tmp_path, capfd):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test callback travels to the workers
    from launcher.search import trials as trials_lib

    out = str(tmp_path / "search")
    # Grid order decides the story: two learners run first (2 at a time), then a learner that is
    # too slow to keep (ASHA stops it at the first rung) next to one whose loss explodes.
    cfg = _search_config(tiny_bert, tmp_path, out, search_alg="grid", num_samples=1, max_concurrent_trials=2,
                         metric="val_loss", mode="min", search_space={"optim.lr": {"grid": [5e-3, 8e-3, 1e-7, 1e30]}})
    result = tune_cmd.run(cfg, trial_callbacks=[_flip_before_last_validation()])
    assert "[launcher tune]" in capfd.readouterr().err  # the live trial table

    rows = {float(r["optim.lr"]): r for r in result.trials}
    assert rows[1e30]["status"] == "failed" and "NonFiniteLoss" in rows[1e30]["error"], rows[1e30]
    # The two learners have recorded the first rung when the third trial gets there: it is the worst.
    assert rows[1e-7]["status"] == "stopped early" and rows[1e-7]["epochs_run"] == 1, rows[1e-7]
    # The learners may stop each other too (ASHA compares arrivals at a rung), but the first to
    # reach each rung goes on: at least one finishes. The flip makes its last epoch worse than its peak.
    learners = [rows[5e-3], rows[8e-3]]
    assert any(r["status"] == "finished" and r["epochs_run"] == 3 for r in learners), learners
    for r in learners:
        if r["status"] == "finished":
            assert r["best_epoch"] == 2 and r["best_val_loss"] < 0.3 and r["last_val_loss"] > r["best_val_loss"], r

    # best.json and trials.csv agree, and the best is the best epoch of all trials.
    with open(os.path.join(out, "best.json")) as f:
        best = json.load(f)
    with open(os.path.join(out, "trials.csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {r["trial_id"] for r in table} == {r["trial_id"] for r in result.trials}
    top = min((r for r in table if r["best_val_loss"]), key=lambda r: float(r["best_val_loss"]))
    assert best["value"] == pytest.approx(float(top["best_val_loss"])) and best["value"] < 0.3
    mine = next(r for r in table if r["trial_id"] == best["trial_id"])
    assert float(mine["best_val_loss"]) == pytest.approx(best["value"]) and float(mine["best_epoch"]) == best["epoch"] < 3
    assert (best["metric"], best["mode"]) == ("val_loss", "min")
    assert best["config"]["optim"]["lr"] == pytest.approx(float(mine["optim.lr"])) and best["config"]["checkpoint"]["monitor"] == "val_loss"
    assert best["search"]["failed"] == 1 and best["search"]["disk_used_bytes"] > 0
    assert best["search"]["stopped early"] == sum(r["status"] == "stopped early" for r in table) >= 1

    # Re-scoring the export on the validation data gives the reported value (not the flipped last epoch).
    from launcher.commands import evaluate as evaluate_cmd

    capfd.readouterr()
    assert evaluate_cmd.main([os.path.join(out, "config.yaml"), "--model", os.path.join(out, "best"), "--split", "validation"]) == 0
    scored = json.loads(capfd.readouterr().out)
    assert scored["val_loss"] == pytest.approx(best["value"], rel=1e-5) and scored["val_accuracy"] >= 0.9

    # Checkpoint hygiene: stopped and failed trials keep nothing unless they hold the best; finished ones their top-1.
    settings = trials_lib.Settings(metric="val_loss", mode="min", keys=[], output_dir=out,
                                 train_storage=os.path.join(out, "ray", "tune-trials"))
    assert best["checkpoint"] in trials_lib.trial_checkpoints(settings, best["trial_id"])
    for r in result.trials:
        kept = trials_lib.trial_checkpoints(settings, r["trial_id"])
        if r["status"] == "finished":
            assert 1 <= len(kept) <= 2, kept  # its top-1 and Ray's latest
        else:
            assert kept == ([best["checkpoint"]] if r["trial_id"] == best["trial_id"] else []), (r, kept)

    with open(os.path.join(out, "search.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"


@pytest.mark.ray
@pytest.mark.slow
def test_pbt_copies_good_trials_into_poor_ones(ray_session, tiny_bert, tmp_path):
    out = str(tmp_path / "pbt")
    cfg = _search_config(tiny_bert, tmp_path, out, train_rows=128, scheduler="pbt", num_samples=3, max_concurrent_trials=3,
                         seed=3, quantile_fraction=0.34, search_space={"optim.lr": {"loguniform": [1e-5, 1e-2]},
                                                                      "scheduler.warmup_ratio": {"uniform": [0.05, 0.2]}})
    result = tune_cmd.run(cfg)
    copied = [r for r in result.trials if r.get("copied_from")]
    assert copied, result.trials  # at least one trial continued from another trial's checkpoint
    ids = {r["trial_id"] for r in result.trials}
    for r in copied:
        assert set(r["copied_from"].split(";")) <= ids - {r["trial_id"]}
    # Exploit + explore: the copying trial's lr was perturbed from (or resampled near) its source's.
    with open(os.path.join(out, "ray", "tune", "pbt_global.txt")) as f:
        steps = [json.loads(line) for line in f if line.strip()]
    assert steps and any(s[4] != s[5] for s in steps)  # exploited, and explored: old config != new config
    assert all(r["status"] == "finished" for r in result.trials)
    with open(os.path.join(out, "best.json")) as f:
        assert json.load(f)["value"] == pytest.approx(max(float(r["best_val_accuracy"]) for r in result.trials))
    # Tune's copies of the checkpoints (what PBT hands from trial to trial) are gone after the search.
    tune_dir = os.path.join(out, "ray", "tune")
    assert not [d for t in ids for d in os.listdir(os.path.join(tune_dir, t)) if d.startswith("checkpoint_")]


@pytest.mark.ray
@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tiny_bert, tmp_path):
    """`launcher tune CONFIG --resume` continues a search whose driver (and its local Ray) was killed."""
    import yaml

    out = str(tmp_path / "resume")
    # One-worker trials train in a reused trial process and take seconds: enough rows that the kill
    # lands while a trial is mid-way (after its first epoch's checkpoint), which --resume continues.
    cfg = _search_config(tiny_bert, tmp_path, out, train_rows=2048, num_samples=3, max_concurrent_trials=1, scheduler="fifo",
                         search_space={"optim.lr": {"loguniform": [3e-3, 8e-3]}})
    from launcher.config import to_dict

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    status_dir = os.path.join(out, "ray", "tune-trials", "_status")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray of its own
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"  # Tune saves its state every second (default: every 10 s)
    trials_dir = os.path.join(out, "ray", "tune-trials")
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "tune", str(path), "--ray.num_cpus", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not (os.path.isdir(status_dir) and os.listdir(status_dir)):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(1)
        assert os.listdir(status_dir), "no trial finished in time"
        # Wait for a running trial's first checkpoint, then kill once Tune has saved its state after
        # that (the crash to recover from is a later one).
        while time.time() < deadline and not _running_trial_checkpoint(trials_dir, status_dir):
            time.sleep(0.2)
        finished_at = time.time()
        state = os.path.join(out, "ray", "tune")
        while time.time() < deadline and not any(
                f.startswith("experiment_state") and os.path.getmtime(os.path.join(state, f)) > finished_at for f in os.listdir(state)):
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, as a crash would
        proc.wait()
    finished_before = {f.removesuffix(".json") for f in os.listdir(status_dir)}
    assert len(finished_before) < 3

    done = run_cli("tune", str(path), "--resume", "--ray.num_cpus", "2", env={"RAY_ADDRESS": ""}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(out, "trials.csv")) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and all(r["status"] == "finished" for r in table), table
    assert finished_before <= {r["trial_id"] for r in table}
    with open(os.path.join(out, "best.json")) as f:
        best = json.load(f)
    assert best["value"] == pytest.approx(max(float(r["best_val_accuracy"]) for r in table))
    assert not math.isnan(best["value"])


def _running_trial_checkpoint(trials_dir: str, status_dir: str) -> bool:
    """Whether a trial that has not ended has a checkpoint in storage."""
    done = {f.removesuffix(".json") for f in os.listdir(status_dir)}
    for trial in os.listdir(trials_dir):
        path = os.path.join(trials_dir, trial)
        if trial not in done and not trial.startswith("_") and any(d.startswith("checkpoint_") for d in os.listdir(path)):
            return True
    return False
