"""Driver-side Tune callbacks of `launcher tune`: the live trial table and checkpoint hygiene."""

from __future__ import annotations

import sys
import time
from typing import Optional

from ray import tune

from launcher.console import duration, number
from launcher.console import value as fmt_value
from launcher.search.trials import Settings, delete_trial_checkpoints, read_status
from launcher.training.scoring import finite, is_better


class LiveTable(tune.Callback):
    """A trial table on stderr whenever something changed (at most every `every_s` seconds), and at the end."""

    def __init__(self, settings: Settings, every_s: Optional[float] = 10.0):
        self.settings = settings
        self.every_s = every_s
        self.last_print = 0.0
        self.dirty = False
        self.start = time.time()
        self.best: dict = {}
        self.last: dict = {}
        self.status: dict = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        m = self.settings.metric
        self.last[trial.trial_id] = result
        v = result.get(m)
        if finite(v) and is_better(v, (self.best.get(trial.trial_id) or {}).get(m), self.settings.mode):
            self.best[trial.trial_id] = {m: v, "epoch": result.get("epoch")}
        self.dirty = True

    def on_trial_start(self, iteration, trials, trial, **info):
        self.dirty = True

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = read_status(self.settings, trial.trial_id).get("status") == "finished"
        self.dirty = True

    def on_trial_error(self, iteration, trials, trial, **info):
        self.dirty = True

    def on_step_end(self, iteration, trials, **info):
        if self.every_s is not None and self.dirty and time.time() - self.last_print >= self.every_s:
            self.print(trials)

    def on_experiment_end(self, trials, **info):
        if self.every_s is not None:
            self.print(trials)

    def print(self, trials) -> None:
        print(self.render(trials), file=sys.stderr, flush=True)
        self.last_print, self.dirty = time.time(), False

    def render(self, trials) -> str:
        m, keys = self.settings.metric, self.settings.keys
        rows = []
        for t in sorted(trials, key=lambda t: t.trial_id):
            last, best = self.last.get(t.trial_id, {}), self.best.get(t.trial_id, {})
            rows.append([t.trial_id, self._state(t)] + [fmt_value(t.config.get(k)) for k in keys] +
                        [fmt_value(last.get("epoch", "")), number(last.get(m)), number(best.get(m)), fmt_value(best.get("epoch", ""))])
        head = ["trial", "status"] + keys + ["epoch", m, f"best {m}", "at epoch"]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head] + rows]
        overall = None
        for tid, b in self.best.items():
            if overall is None or is_better(b[m], overall[1][m], self.settings.mode):
                overall = (tid, b)
        states = [self._state(t) for t in trials]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        best_text = f"; best {m} {overall[1][m]:.4f} (trial {overall[0]}, epoch {fmt_value(overall[1]['epoch'])})" if overall else ""
        title = f"[launcher tune] {duration(time.time() - self.start)}: {counts}{best_text}"
        return "\n".join([title] + lines)

    def _state(self, trial) -> str:
        if trial.status == "TERMINATED":
            return "finished" if self.status.get(trial.trial_id) else "stopped"
        return {"ERROR": "failed"}.get(trial.status, trial.status.lower())


class CheckpointHygiene(tune.Callback):
    """Deletes the checkpoints of trials that were stopped early or failed, unless one is the best so far.

    A stopped trial cannot become better later, so its checkpoints only matter when one of them holds
    the best value seen so far. Deletion waits a few seconds for the trial's Train job to wind down.
    """

    def __init__(self, settings: Settings, delay_s: float = 10.0):
        self.settings = settings
        self.delay_s = delay_s
        self.best: Optional[tuple] = None
        self.pending: list = []
        self.deleted = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        v, path = result.get(self.settings.metric), result.get("checkpoint_path")
        if finite(v) and path and (self.best is None or is_better(v, self.best[0], self.settings.mode)):
            self.best = (v, path)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if read_status(self.settings, trial.trial_id).get("status") != "finished":
            self.pending.append((time.time(), trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.pending.append((time.time(), trial.trial_id))

    def on_step_end(self, iteration, trials, **info):
        now = time.time()
        due = [p for p in self.pending if now - p[0] >= self.delay_s]
        self.pending = [p for p in self.pending if now - p[0] < self.delay_s]
        keep = {self.best[1]} if self.best else set()
        for _, trial_id in due:
            self.deleted += delete_trial_checkpoints(self.settings, trial_id, keep)
