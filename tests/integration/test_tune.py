"""`launcher tune`: search-space checks, best-epoch selection, outputs, and real searches on Ray.

The fast tests need no Ray. One ASHA search runs by default on the shared local Ray (tiny BERT,
1 worker x 0.5 CPU per trial); PBT and --resume after killing the driver are `slow`.
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

from conftest import base_config, run_cli, sentiment_rows, write_csv
from launcher.commands import tune as tune_cmd
from launcher.search import report as report_lib
from launcher.search import space as space_lib
from launcher.search import trials as trials_lib
from launcher.training.scoring import best_row
from launcher.config import Config, ConfigError


def _cfg(**space) -> Config:
    cfg = Config()
    cfg.model.name_or_path, cfg.data.train_file = "m", "t.csv"
    cfg.tune.search_space = space
    return cfg


# ====================================================================== search space (no Ray)


def test_default_space_is_lr_warmup_and_schedule():
    dims = space_lib.parse_space(_cfg())
    assert [(d.key, d.kind) for d in dims] == [("optim.lr", "loguniform"), ("scheduler.warmup_ratio", "uniform"),
                                               ("scheduler.name", "choice")]
    space_lib.validate_search(_cfg(), dims)  # the default space itself is valid


@pytest.mark.parametrize("space, message", [
    ({"optim.lrr": {"uniform": [1e-5, 1e-4]}}, "tune.search_space.optim.lrr: unknown config key — did you mean optim.lr?"),
    ({"batch_size": {"choice": [8, 16]}}, "tune.search_space.batch_size: unknown config key — did you mean train.batch_size?"),
    ({"optim": {"choice": [1]}}, "tune.search_space.optim: is a section, not a key — search one of its keys, e.g. optim.name"),
    ({"data.max_length": {"choice": [64, 128]}}, "cannot be searched: the data is tokenised once for all trials"),
    ({"model.name_or_path": {"choice": ["a", "b"]}}, "cannot be searched: every trial fine-tunes the same model"),
    ({"optim.lr": {"logunifrm": [1e-5, 1e-4]}}, "unknown sampler 'logunifrm' — did you mean loguniform?"),
    ({"optim.lr": {"loguniform": [0, 1e-4]}}, "loguniform needs low > 0, got 0"),
    ({"optim.lr": {"uniform": [1e-4, 1e-5]}}, "uniform needs low < high"),
    ({"optim.lr": [1e-5, 1e-4]}, "expected one sampler, got [1e-05, 0.0001]"),
    ({"train.batch_size": {"randint": [8.5, 32]}}, "randint needs integers"),
    ({"scheduler.name": {"choice": ["linear", "cosin"]}}, "'cosin' is not a valid value — choose among: linear, cosine"),
    ({"train.batch_size": {"choice": [8, 16.5]}}, "train.batch_size: expected an integer, got 16.5"),
    ({"train.batch_size": {"randint": [0, 32]}}, "the sample train.batch_size=0 gives an invalid config: train.batch_size: must be >= 1"),
    ({"scheduler.warmup_ratio": {"uniform": [0.0, 1.5]}}, "scheduler.warmup_ratio: must be in [0, 1), got 1.5 — narrow the range"),
])
def test_search_space_errors_name_the_key_and_the_fix(space, message):
    cfg = _cfg(**{})
    cfg.tune.search_space = space
    with pytest.raises(ConfigError) as e:
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    assert message in str(e.value)


def test_joint_samples_are_validated_too():
    # Each value is fine alone; together polynomial's lr_end (1e-4) is not below every sampled lr.
    cfg = _cfg(**{"optim.lr": {"loguniform": [1e-5, 1e-3]}, "scheduler.name": {"choice": ["polynomial"]}})
    cfg.scheduler.lr_end = 1e-4
    with pytest.raises(ConfigError, match=r"scheduler.lr_end: must be >= 0 and below optim.lr"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))


def test_search_settings_are_checked():
    cfg = _cfg(**{"optim.lr": {"loguniform": [1e-5, 1e-4]}})
    cfg.tune.search_alg = "grid"
    with pytest.raises(ConfigError, match="grid search needs listed values, but optim.lr is a range"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    cfg.tune.search_space = {"optim.lr": {"grid": [1e-5, 1e-4]}, "scheduler.name": {"choice": ["linear", "cosine"]}}
    space_lib.validate_search(cfg, space_lib.parse_space(cfg))  # listed values (numbers or not) make a grid
    cfg.tune.search_space = {"optim.lr": {"loguniform": [1e-5, 1e-4]}}
    cfg.tune.search_alg, cfg.tune.scheduler, cfg.tune.num_samples = "random", "pbt", 1
    with pytest.raises(ConfigError, match="pbt needs at least 2 trials"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    cfg.tune.num_samples, cfg.tune.quantile_fraction = 4, 0.7
    with pytest.raises(ConfigError, match=r"tune.quantile_fraction: must be in \(0, 0.5\]"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))


def test_optuna_missing_names_the_extra():
    try:
        import optuna  # noqa: F401
    except ImportError:
        cfg = _cfg()
        cfg.tune.search_alg = "optuna"
        with pytest.raises(ConfigError, match=r"pip install 'launcher\[optuna\]'"):
            space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    else:
        pytest.skip("optuna is installed")


def test_apply_params_sets_typed_values_on_a_copy():
    cfg = _cfg()
    out = space_lib.apply_params(cfg, {"optim.lr": 3e-5, "train.batch_size": 32.0, "scheduler.name": "cosine",
                                  "train.gradient_clip_val": None})
    assert (out.optim.lr, out.train.batch_size, out.scheduler.name, out.train.gradient_clip_val) == (3e-5, 32, "cosine", None)
    assert isinstance(out.train.batch_size, int) and cfg.optim.lr == 5e-5  # the base config is untouched


def test_metric_defaults_to_the_tasks_monitor():
    cfg = _cfg()
    assert space_lib.resolve_metric(cfg) == ("val_accuracy", "max")
    cfg.checkpoint.monitor = "val_loss"
    assert space_lib.resolve_metric(cfg) == ("val_loss", "min")
    cfg.tune.metric, cfg.tune.mode = "val_f1", "max"
    assert space_lib.resolve_metric(cfg) == ("val_f1", "max")


# ====================================================================== best selection (no Ray)


def _history(values: list, trial: str) -> list[dict]:
    return [{"epoch": float(i + 1), "val_accuracy": v, "kind": "val", "checkpoint_path": f"/{trial}/ckpt{i + 1}"}
            for i, v in enumerate(values)]


def test_select_best_takes_a_mid_run_peak_across_all_trials():
    histories = {
        "a": _history([0.60, 0.70, 0.72], "a"),   # best at its last epoch, but lower than b's peak
        "b": _history([0.65, 0.91, 0.50], "b"),   # peaks mid-run, then overfits
        "c": _history([0.55, float("nan")], "c"),  # diverged
    }
    trial, row = trials_lib.select_best(histories, "val_accuracy", "max")
    assert (trial, row["epoch"], row["val_accuracy"]) == ("b", 2.0, 0.91)
    # Its checkpoint is gone: the next best epoch that still has one wins.
    trial, row = trials_lib.select_best(histories, "val_accuracy", "max", usable=lambda r: r["checkpoint_path"] != "/b/ckpt2")
    assert (trial, row["epoch"]) == ("a", 3.0)


def test_select_best_min_mode_ties_and_empty():
    histories = {"a": [{"epoch": 1.0, "val_loss": 0.4}, {"epoch": 2.0, "val_loss": 0.3}, {"epoch": 3.0, "val_loss": 0.3}],
                 "b": [{"epoch": 1.0, "val_loss": 0.35}]}
    trial, row = trials_lib.select_best(histories, "val_loss", "min")
    assert (trial, row["epoch"]) == ("a", 3.0)  # ties: the later epoch, as Ray's top-k keeps it
    assert trials_lib.select_best({"a": [{"epoch": 1.0, "val_loss": float("nan")}], "b": []}, "val_loss", "min") is None


def test_trials_table_and_plot(tmp_path):
    dims = space_lib.parse_space(_cfg())
    trials = [
        trials_lib.TrialSummary("t0", "finished", "", {"optim.lr": 1e-4, "scheduler.warmup_ratio": 0.1, "scheduler.name": "cosine"},
                          _history([0.6, 0.8, 0.7], "t0"), None, None, 12.3),
        trials_lib.TrialSummary("t1", "stopped early", "", {"optim.lr": 2e-5, "scheduler.warmup_ratio": 0.0, "scheduler.name": "linear"},
                          _history([0.5], "t1"), None, None, 4.0),
        trials_lib.TrialSummary("t2", "failed", "NonFiniteLoss: loss is nan at step 3", {"optim.lr": 1.9e-4, "scheduler.warmup_ratio": 0.2,
                          "scheduler.name": "polynomial"}, [], None, None, 2.0),
    ]
    for t in trials:
        t.best, t.last = best_row(t.history, "val_accuracy", "max"), (t.history or [None])[-1]
    rows = report_lib.trials_table(trials, [d.key for d in dims], "val_accuracy")
    assert list(rows[0]) == ["trial_id", "status", "error", "optim.lr", "scheduler.warmup_ratio", "scheduler.name",
                             "best_val_accuracy", "best_epoch", "last_val_accuracy", "epochs_run", "wall_time_s"]
    assert rows[0]["best_val_accuracy"] == 0.8 and rows[0]["best_epoch"] == 2.0 and rows[0]["last_val_accuracy"] == 0.7
    assert rows[2]["status"] == "failed" and rows[2]["best_val_accuracy"] is None and rows[2]["epochs_run"] == 0
    report_lib.write_csv(str(tmp_path / "trials.csv"), rows)
    with open(tmp_path / "trials.csv") as f:
        back = list(csv.DictReader(f))
    assert back[2]["error"] == "NonFiniteLoss: loss is nan at step 3" and back[1]["status"] == "stopped early"
    png = report_lib.plot_search(str(tmp_path / "search.png"), trials, dims, "val_accuracy", "max", best_trial="t0")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ====================================================================== Ray-side pieces without a cluster


def test_pbt_explore_stays_in_range():
    from launcher.search.tuner import clip_to_bounds

    cfg = {"optim.lr": 3e-4, "scheduler.warmup_ratio": -0.01, "train.batch_size": 40.2, "scheduler.name": "cosine"}
    out = clip_to_bounds(cfg, {"optim.lr": (1e-5, 2e-4), "scheduler.warmup_ratio": (0.0, 0.2), "train.batch_size": (8, 32)})
    assert out == {"optim.lr": 2e-4, "scheduler.warmup_ratio": 0.0, "train.batch_size": 32, "scheduler.name": "cosine"}


def test_use_trial_hyperparameters_after_a_copied_checkpoint():
    """After Lightning restored another trial's optimizer/scheduler (lr 1e-3), this trial's lr (4e-4) applies at the restored step."""
    import torch
    from types import SimpleNamespace

    from launcher import optim as optim_lib
    from launcher.training.hyperparams import UseTrialHyperparameters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    theirs = _cfg()
    theirs.optim.lr, theirs.optim.weight_decay, theirs.scheduler.warmup_steps = 1e-3, 0.1, 10
    opt = optim_lib.build_optimizer(model, theirs.optim)
    sched = optim_lib.build_scheduler(opt, theirs.scheduler, 100)
    for _ in range(30):
        opt.step()
        sched.step()
    mine = space_lib.apply_params(theirs, {"optim.lr": 4e-4, "optim.weight_decay": 0.0})
    # What Lightning leaves after restoring: their state, with this trial's schedule shape (same here).
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    UseTrialHyperparameters().on_train_start(trainer, SimpleNamespace(model=model, cfg=mine))
    expected = 4e-4 * (100 - 30) / (100 - 10)  # linear decay after 10 warmup steps, at step 30
    assert sched.last_epoch == 30
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected])
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-4 * (100 - 31) / 90)


def test_error_line_finds_the_cause():
    from launcher.errors import NonFiniteLoss
    from launcher.search.trial import error_line

    assert error_line(NonFiniteLoss("loss is nan at step 3 (epoch 1, batch 4): lower optim.lr")).startswith(
        "NonFiniteLoss: loss is nan at step 3")
    wrapped = RuntimeError("Training failed.\nTraceback (most recent call last):\n  File x\nValueError: bad shape (3, 4)")
    assert error_line(wrapped) == "ValueError: bad shape (3, 4)"


def test_cli_help_lists_the_tune_section():
    proc = run_cli("tune", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--tune.num_samples" in proc.stdout and "--tune.search_space" in proc.stdout and "--resume" in proc.stdout
    proc = run_cli("--help")
    assert "tune" in proc.stdout


def test_cli_rejects_a_bad_search_space_before_ray(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name_or_path: m}\ndata: {train_file: t.csv}\ntune:\n  search_space:\n    optim.lrr: {loguniform: [1.0e-5, 1.0e-4]}\n")
    start = time.time()
    proc = run_cli("tune", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["launcher tune: error: tune.search_space.optim.lrr: unknown config key — did you mean optim.lr?"]
    assert time.time() - start < 30


# ====================================================================== real searches


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
    cfg = _search_config(tiny_bert, tmp_path, out, num_samples=3, max_concurrent_trials=1, scheduler="fifo",
                         search_space={"optim.lr": {"loguniform": [3e-3, 8e-3]}})
    from launcher.config import to_dict

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    status_dir = os.path.join(out, "ray", "tune-trials", "_status")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray of its own
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "tune", str(path), "--ray.num_cpus", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not (os.path.isdir(status_dir) and os.listdir(status_dir)):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(1)
        assert os.listdir(status_dir), "no trial finished in time"
        # Kill once Tune has saved its state after that (the crash to recover from is a later one).
        finished_at = max(os.path.getmtime(os.path.join(status_dir, f)) for f in os.listdir(status_dir))
        state = os.path.join(out, "ray", "tune")
        while time.time() < deadline and not any(
                f.startswith("experiment_state") and os.path.getmtime(os.path.join(state, f)) > finished_at for f in os.listdir(state)):
            time.sleep(0.5)
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
