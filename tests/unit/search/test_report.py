"""launcher.search.report: the trials table, its CSV and the plot."""

from __future__ import annotations

import csv

from launcher.search import report as report_lib
from launcher.search import space as space_lib
from launcher.search import trials as trials_lib
from launcher.training.scoring import best_row
from tests.helpers.search import history, space_config


def test_trials_table_and_plot(tmp_path):
    dims = space_lib.parse_space(space_config())
    trials = [
        trials_lib.TrialSummary("t0", "finished", "", {"optim.lr": 1e-4, "scheduler.warmup_ratio": 0.1, "scheduler.name": "cosine"},
                          history([0.6, 0.8, 0.7], "t0"), None, None, 12.3),
        trials_lib.TrialSummary("t1", "stopped early", "", {"optim.lr": 2e-5, "scheduler.warmup_ratio": 0.0, "scheduler.name": "linear"},
                          history([0.5], "t1"), None, None, 4.0),
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
