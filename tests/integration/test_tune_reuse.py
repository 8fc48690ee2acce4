"""`launcher tune` with one-worker trials: the loop runs in the Tune trial's process and actors are reused.

What reuse must not break: trials that share an actor share nothing else (identical histories for the
same config, memory back where it was), a trial ASHA stops has stopped before its actor takes the next
trial, and a failed trial is recorded while the search goes on. PBT, --resume, checkpoints and the best
epoch across trials with in-trial training are covered by tests/integration/test_tune.py.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
import tempfile

import pytest

from launcher.commands import tune as tune_cmd
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv


def _probe(folder: str):
    """A Lightning callback that writes what the trial's process looked like to <folder>/<trial>.json:
    its PID, torch threads, the live Ray trial threads at fit start, each training batch's time, and
    its RSS and temporary checkpoint folders at the end of fit."""
    import lightning.pytorch as pl

    class Probe(pl.Callback):
        def __init__(self):
            self.record = {}

        def _write(self, pl_module):
            trial = os.path.basename(pl_module.cfg.output_dir.rstrip("/"))
            with open(os.path.join(folder, f"{trial}.json"), "w") as f:
                json.dump(self.record, f)

        def on_fit_start(self, trainer, pl_module):
            import threading

            import psutil
            import torch
            from ray.air._internal.util import RunnerThread

            self.record = {"pid": os.getpid(), "threads": torch.get_num_threads(), "batches": [],
                           "runner_threads": sum(isinstance(t, RunnerThread) and t.is_alive() for t in threading.enumerate()),
                           "fit_start_rss": psutil.Process().memory_info().rss, "output_dir": pl_module.cfg.output_dir,
                           "cwd": os.getcwd()}
            self._write(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            import time

            self.record["batches"].append(time.time())
            self._write(pl_module)

        def on_fit_end(self, trainer, pl_module):
            import psutil

            self.record["rss"] = psutil.Process().memory_info().rss
            self.record["tmp_dirs"] = len(glob.glob(os.path.join(tempfile.gettempdir(), "launcher-ckpt-*")))
            self._write(pl_module)

    return Probe()


def _config(tiny_bert, tmp_path, rows: int, epochs: int, **tune_section):
    files = {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(rows, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(24, seed=2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "search"), checkpoint={"num_to_keep": 1},
                      train={"max_epochs": epochs, "batch_size": 8, "accumulate_grad_batches": 1})
    cfg.ray.num_workers, cfg.ray.cpus_per_worker = 1, 0.5
    cfg.tune.scheduler, cfg.tune.search_alg, cfg.tune.max_concurrent_trials = "fifo", "grid", 1
    for k, v in tune_section.items():
        setattr(cfg.tune, k, v)
    return cfg


def _probes(folder: str, trials: list[dict]) -> list[dict]:
    """Probe records in the order the trials ran."""
    out = []
    for r in trials:
        with open(os.path.join(folder, f"{r['trial_id']}.json")) as f:
            out.append(dict(json.load(f), row=r))
    return sorted(out, key=lambda p: p["batches"][0] if p["batches"] else float("inf"))


@pytest.fixture
def probe_folder(tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe travels to the trials
    folder = tmp_path / "probes"
    folder.mkdir()
    return str(folder)


@pytest.mark.ray
@pytest.mark.slow
def test_reused_actor_leaks_nothing_between_trials(ray_session, tiny_bert, tmp_path, probe_folder):
    """Ten trials, two configs alternating, one actor: each config's histories are identical to the
    step (seed, model, optimizer, scheduler, loggers, metrics all start afresh), every trial writes
    to its own folder, and the actor's memory stays where the first trial left it (≤ 5 %)."""
    cfg = _config(tiny_bert, tmp_path, rows=64, epochs=2, num_samples=5,
                  search_space={"optim.lr": {"grid": [5e-3, 1e-3]}})
    cfg.logging.csv = True
    result = tune_cmd.run(cfg, trial_callbacks=[_probe(probe_folder)], verbose=False)
    assert len(result.trials) == 10 and all(r["status"] == "finished" for r in result.trials), result.trials
    probes = _probes(probe_folder, result.trials)
    assert len({p["pid"] for p in probes}) == 1, [p["pid"] for p in probes]  # one actor ran all ten
    assert all(p["threads"] == 1 for p in probes)  # 0.5 CPU per trial → one torch thread, every trial

    by_lr: dict = {}
    for p in probes:
        trial_dir = p["output_dir"]
        assert trial_dir == os.path.join(cfg.output_dir, "trials", p["row"]["trial_id"])
        with open(os.path.join(trial_dir, "logs", "csv", "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
        assert rows
        by_lr.setdefault(float(p["row"]["optim.lr"]), []).append(rows)
    assert set(by_lr) == {5e-3, 1e-3}
    for lr, histories in by_lr.items():
        assert len(histories) == 5
        for h in histories[1:]:
            assert h == histories[0], f"lr {lr}: a reused trial's history differs from the first"
    assert by_lr[5e-3][0] != by_lr[1e-3][0]
    val = [float(r["val_loss"]) for r in by_lr[5e-3][0] if r.get("val_loss")]
    assert len(val) == 2  # two epochs, validated once each: no rows from another trial

    rss = [p["rss"] for p in probes]
    growth = (rss[-1] - rss[0]) / rss[0]
    print(f"in-trial RSS over 10 reused trials (MiB): {[round(r / 2**20) for r in rss]}, growth {growth:.4f}")
    assert growth <= 0.05, [round(r / 2**20) for r in rss]
    assert max(p["tmp_dirs"] for p in probes) - min(p["tmp_dirs"] for p in probes) <= 1  # each run removes its own


@pytest.mark.ray
def test_asha_stop_ends_the_trial_before_its_actor_takes_the_next(ray_session, tiny_bert, tmp_path, probe_folder):
    """One trial at a time: a learner, a trial whose loss explodes (failed: its actor is not reused),
    a trial too slow to keep (ASHA stops it after epoch 1), and a learner that gets the stopped trial's
    actor — and starts only once the stopped trial's loop has ended."""
    cfg = _config(tiny_bert, tmp_path, rows=256, epochs=3, scheduler="asha", metric="val_loss", mode="min",
                  num_samples=1, search_space={"optim.lr": {"grid": [5e-3, 1e30, 1e-7, 8e-3]}})
    result = tune_cmd.run(cfg, trial_callbacks=[_probe(probe_folder)], verbose=False)
    rows = {float(r["optim.lr"]): r for r in result.trials}
    assert rows[5e-3]["status"] == "finished", rows
    assert rows[1e30]["status"] == "failed" and "NonFiniteLoss" in rows[1e30]["error"], rows[1e30]
    assert rows[1e-7]["status"] == "stopped early" and rows[1e-7]["epochs_run"] == 1, rows[1e-7]
    assert result.best and result.best["trial_id"] in (rows[5e-3]["trial_id"], rows[8e-3]["trial_id"])

    p = {float(x["row"]["optim.lr"]): x for x in _probes(probe_folder, result.trials)}
    first, failed, stopped, last = p[5e-3], p[1e30], p[1e-7], p[8e-3]
    assert first["pid"] == failed["pid"]  # the learner's actor was reused for the next trial
    assert stopped["pid"] != failed["pid"]  # an actor whose trial failed is not reused
    assert last["pid"] == stopped["pid"]  # the stopped trial's actor was
    steps_per_epoch = 256 // 8
    assert len(stopped["batches"]) == steps_per_epoch  # stopped at the rung: not one batch of epoch 2
    with open(os.path.join(probe_folder, f"{last['row']['trial_id']}.json")) as f:
        assert json.load(f)["runner_threads"] == 1  # the stopped trial's thread is gone
    assert last["batches"][0] > stopped["batches"][-1]
    # Both trials of the reused actor kept their own checkpoints (and the best of all survived hygiene).
    from launcher.search import trials as trials_lib

    settings = trials_lib.Settings(metric="val_loss", mode="min", keys=[], output_dir=cfg.output_dir,
                                   train_storage=os.path.join(cfg.output_dir, "ray", "tune-trials"))
    assert result.best["checkpoint"] in trials_lib.trial_checkpoints(settings, result.best["trial_id"])
    assert trials_lib.trial_checkpoints(settings, rows[1e-7]["trial_id"]) == []
