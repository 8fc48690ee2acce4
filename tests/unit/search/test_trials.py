"""launcher.search.trials: the best epoch across all trials."""

from __future__ import annotations

from launcher.search import trials as trials_lib
from tests.helpers.search import history


def test_select_best_takes_a_mid_run_peak_across_all_trials():
    histories = {
        "a": history([0.60, 0.70, 0.72], "a"),   # best at its last epoch, but lower than b's peak
        "b": history([0.65, 0.91, 0.50], "b"),   # peaks mid-run, then overfits
        "c": history([0.55, float("nan")], "c"),  # diverged
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
