"""What a search leaves for people: trials.csv, search.png and the summary lines."""

from __future__ import annotations

import csv
import io
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Optional

from launcher.console import value as fmt_value
from launcher.files import atomic_write
from launcher.search.space import Dimension
from launcher.search.trials import STATUSES, TrialSummary
from launcher.training.scoring import finite


@dataclass
class TuneResult:
    """What `run()` returns: where the best model went, and one row per trial."""

    best_dir: Optional[str]
    best: Optional[dict]
    trials: list[dict]
    metric: str
    mode: str
    output_dir: str
    disk_bytes: int = 0
    result_grid: Any = None

    @property
    def best_value(self) -> Optional[float]:
        return self.best["value"] if self.best else None


def trials_table(trials: list[TrialSummary], keys: list[str], metric: str) -> list[dict]:
    """Rows of trials.csv: id, status, error, each searched key, best/last metric, epochs, wall time."""
    rows = []
    for t in trials:
        row = {"trial_id": t.trial_id, "status": t.status, "error": t.error}
        row.update({k: t.params.get(k) for k in keys})
        row.update({
            f"best_{metric}": t.best.get(metric) if t.best else None,
            "best_epoch": t.best.get("epoch") if t.best else None,
            f"last_{metric}": t.last.get(metric) if t.last else None,
            "epochs_run": t.epochs_run,
            "wall_time_s": round(t.wall_s, 1),
        })
        if any(x.copied_from for x in trials):
            row["copied_from"] = ";".join(t.copied_from)
        rows.append(row)
    return rows


def write_csv(path: str, rows: list[dict]) -> None:
    buf = io.StringIO()
    columns = list(rows[0]) if rows else ["trial_id", "status", "error"]
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write(path, buf.getvalue())


def plot_search(path: str, trials: list[TrialSummary], dims: list[Dimension], metric: str, mode: str,
                best_trial: Optional[str] = None) -> str:
    """search.png: the best metric of each trial against each searched key, and every learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - matplotlib.ticker.NullFormatter below

    colors = {"finished": "tab:blue", "stopped early": "tab:orange", "failed": "tab:red", "not started": "tab:gray"}
    n = len(dims) + 1
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, d in zip(flat, dims):
        for status, color in colors.items():
            pts = [(t.params.get(d.key), t.best[metric]) for t in trials if t.status == status and t.best and d.key in t.params]
            if not pts:
                continue
            xs = [_category_x(d, x) for x, _ in pts] if d.categorical else [x for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts], c=color, label=status, s=36, alpha=0.85, edgecolors="none")
        failed = [t.params.get(d.key) for t in trials if t.status == "failed" and d.key in t.params]
        if failed:
            # No value to plot: a cross on the bottom edge marks where they were.
            xs = [_category_x(d, x) for x in failed] if d.categorical else failed
            ax.scatter(xs, [0.02] * len(xs), marker="x", c=colors["failed"], label="failed", transform=ax.get_xaxis_transform())
        if d.categorical:
            ax.set_xticks(range(len(d.args)))
            ax.set_xticklabels([str(a) for a in d.args], rotation=20)
            ax.set_xlim(-0.5, len(d.args) - 0.5)
        if d.log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(d.key)
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    curves = flat[len(dims)]
    for t in trials:
        pts = [(r["epoch"], r[metric]) for r in t.history if finite(r.get(metric)) and finite(r.get("epoch"))]
        if not pts:
            continue
        style = "-" if t.status == "finished" else "--"
        width = 2.5 if t.trial_id == best_trial else 1.0
        curves.plot([p[0] for p in pts], [p[1] for p in pts], style, lw=width, color=colors.get(t.status, "k"), alpha=0.8,
                    marker="o", ms=3)
        if t.best and finite(t.best.get("epoch")):
            curves.scatter([t.best["epoch"]], [t.best[metric]], marker="*", s=80 if t.trial_id == best_trial else 30,
                           color="gold" if t.trial_id == best_trial else colors.get(t.status, "k"), zorder=3)
    curves.set_xlabel("epoch")
    curves.set_ylabel(metric)
    curves.set_title(f"learning curves ({mode}); dashed: stopped early/failed", fontsize=9)
    curves.grid(alpha=0.3)
    for ax in flat[len(dims) + 1:]:
        ax.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    if handles:
        curves.legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(f"launcher tune: {len(trials)} trials, {metric}")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _category_x(d: Dimension, value) -> float:
    try:
        i = list(d.args).index(value)
    except ValueError:
        return float("nan")
    return i + random.Random(hash(str(value))).uniform(-0.12, 0.12)


def summary_text(result: TuneResult, summary: dict) -> str:
    counts = ", ".join(f"{summary[s]} {s}" for s in STATUSES if summary.get(s))
    lines = [f"[launcher] {summary['trials']} trials ({counts}) in {summary['wall_time_s']:.0f}s; "
             f"checkpoints on disk: {summary['disk_used_bytes'] / 2**20:.1f} MiB"]
    if result.best:
        b = result.best
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in b["params"].items())
        lines.append(f"[launcher] best {b['metric']} = {b['value']:.4f}: trial {b['trial_id']} at epoch {b['epoch']:g} ({params})")
        lines.append(f"[launcher] exported model: {b['best_model']}" + (f" (copy: {b['best_model_uri']})" if b.get("best_model_uri") else ""))
    else:
        lines.append("[launcher] no trial produced a finite " + result.metric)
    lines.append(f"[launcher] trials: {os.path.join(result.output_dir, 'trials.csv')}; plot: {os.path.join(result.output_dir, 'search.png')}")
    return "\n".join(lines)
