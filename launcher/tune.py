"""Search learning rate, warmup and schedule (or any training key) with Ray Tune; export the best epoch of all trials.

`run()` is the whole flow, top to bottom: check the config and the search space (no Ray yet) →
tokenise once on the driver → one Ray Tune trial per sample, each running the same Ray Train loop as
`launcher train` (see launcher.tune_ray) → pick the best epoch across every trial → export it to
<output_dir>/best and write best.json, trials.csv and search.png.

This module stays cheap to import (no torch, no ray at import time): `launcher tune --help` and
config mistakes answer in about a second.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import io
import math
import os
import random
import sys
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from launcher import config as config_lib
from launcher.config import Config, ConfigError

#: searched when `tune.search_space` is empty: the three knobs that matter most when fine-tuning
DEFAULT_SPACE = {
    "optim.lr": {"loguniform": [1.0e-5, 2.0e-4]},
    "scheduler.warmup_ratio": {"uniform": [0.0, 0.2]},
    "scheduler.name": {"choice": ["linear", "cosine", "cosine_w_restarts", "polynomial"]},
}

#: sampler → (argument shape, example) for messages
SAMPLERS = {
    "loguniform": ("[low, high], 0 < low < high", "{loguniform: [1.0e-5, 2.0e-4]}"),
    "uniform": ("[low, high], low < high", "{uniform: [0.0, 0.2]}"),
    "quniform": ("[low, high, step]", "{quniform: [0.0, 0.3, 0.05]}"),
    "randint": ("[low, high) integers", "{randint: [1, 5]}"),
    "choice": ("[value, ...]", "{choice: [linear, cosine]}"),
    "grid": ("[value, ...], every value is tried", "{grid: [16, 32]}"),
}

# Keys fixed for the whole search: the data is tokenised once for all trials, the model is loaded
# from the same folder, and the tune section and storage describe the search itself.
_FIXED = {
    "task": "the task is fixed for a search",
    "task_options": "task options can change the tokenised data, which is prepared once for all trials",
    "output_dir": "the search writes one output_dir",
    "model": "every trial fine-tunes the same model (tokenised once)",
    "data": "the data is tokenised once for all trials",
    "tune": "the search settings are not searchable",
    "ray.address": "all trials run on one cluster",
    "ray.storage_path": "all trials share one storage",
    "ray.num_cpus": "all trials run on one cluster",
    "checkpoint.monitor": "trials are ranked by tune.metric",
    "checkpoint.mode": "trials are ranked by tune.mode",
}
_ALLOWED_DATA_KEYS = {"data.num_workers"}  # DataLoader processes: not part of the tokenised data

STATUSES = ("finished", "stopped early", "failed", "not started")


# ====================================================================== search space


@dataclass
class Dimension:
    """One searched config key and how Tune samples it."""

    key: str
    kind: str
    args: list

    def domain(self, grid: bool = False):
        """The Ray Tune sampler (grid=True turns a choice into a grid)."""
        from ray import tune

        a = self.args
        if self.kind == "grid" or (grid and self.kind == "choice"):
            return tune.grid_search(list(a))
        return {"loguniform": lambda: tune.loguniform(a[0], a[1]), "uniform": lambda: tune.uniform(a[0], a[1]),
                "quniform": lambda: tune.quniform(a[0], a[1], a[2]), "randint": lambda: tune.randint(a[0], a[1]),
                "choice": lambda: tune.choice(list(a))}[self.kind]()

    def mutation(self):
        """What PBT may perturb the key to: a list for categories, the sampler for ranges."""
        return list(self.args) if self.kind in ("choice", "grid") else self.domain()

    def bounds(self) -> Optional[tuple]:
        if self.kind in ("loguniform", "uniform", "quniform"):
            return (self.args[0], self.args[1])
        if self.kind == "randint":
            return (self.args[0], self.args[1] - 1)
        return None

    def edge_values(self) -> list:
        """Values that every sample lies between (or is one of): validated before Ray starts."""
        a = self.args
        if self.kind in ("choice", "grid"):
            return list(a)
        if self.kind == "loguniform":
            return [a[0], math.sqrt(a[0] * a[1]), a[1]]
        if self.kind == "randint":
            return [a[0], a[1] - 1]
        return [a[0], (a[0] + a[1]) / 2, a[1]]

    def sample(self, rng: random.Random):
        a = self.args
        if self.kind in ("choice", "grid"):
            return rng.choice(list(a))
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
        if self.kind == "randint":
            return rng.randrange(a[0], a[1])
        value = rng.uniform(a[0], a[1])
        return round(value / a[2]) * a[2] if self.kind == "quniform" else value

    @property
    def numeric(self) -> bool:
        return all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in self.args)

    @property
    def categorical(self) -> bool:
        """Plotted as categories: choice/grid of strings (or booleans)."""
        return self.kind in ("choice", "grid") and not self.numeric

    @property
    def log_scale(self) -> bool:
        if self.kind == "loguniform":
            return True
        values = [a for a in self.args if isinstance(a, (int, float))] if self.kind in ("choice", "grid") and self.numeric else []
        return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def searchable_keys() -> list[str]:
    from launcher.cli import all_keys

    return [k for k in all_keys(Config) if "." in k and _fixed_reason(k) is None]


def _fixed_reason(key: str) -> Optional[str]:
    if key in _ALLOWED_DATA_KEYS:
        return None
    for prefix, reason in _FIXED.items():
        if key == prefix or key.startswith(prefix + "."):
            return reason
    return None


def _first_leaf(section: str) -> str:
    cls = type(getattr(Config(), section))
    return dataclasses.fields(cls)[0].name if dataclasses.is_dataclass(cls) else "key"


def parse_space(cfg: Config) -> list[Dimension]:
    """`tune.search_space` (or the default space) → Dimensions. Raises ConfigError naming the key."""
    space = cfg.tune.search_space or DEFAULT_SPACE
    if not isinstance(space, dict):
        raise ConfigError("tune.search_space", "must be a mapping of config keys to samplers", "e.g. optim.lr: {loguniform: [1.0e-5, 2.0e-4]}")
    from launcher.cli import all_keys

    known = set(all_keys(Config))
    dims = []
    for key, spec in space.items():
        where = f"tune.search_space.{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), searchable_keys(), n=1, cutoff=0.5)
            if not close:
                leaf = str(key).rsplit(".", 1)[-1]
                close = [k for k in searchable_keys() if k.rsplit(".", 1)[-1] == leaf][:1]
            raise ConfigError(where, "unknown config key", f"did you mean {close[0]}?" if close else "search keys like optim.lr, train.batch_size")
        reason = _fixed_reason(key)
        if reason:
            raise ConfigError(where, f"cannot be searched: {reason}", "search optimizer, scheduler, train or ray keys")
        if "." not in key:
            raise ConfigError(where, "is a section, not a key", f"search one of its keys, e.g. {key}.{_first_leaf(key)}")
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(where, f"expected one sampler, got {spec!r}",
                              "use one of " + ", ".join(f"{k}: {v[0]}" for k, v in SAMPLERS.items()))
        kind, args = next(iter(spec.items()))
        if kind not in SAMPLERS:
            close = difflib.get_close_matches(str(kind), list(SAMPLERS), n=1)
            raise ConfigError(where, f"unknown sampler {kind!r}",
                              f"did you mean {close[0]}?" if close else "choose one of: " + ", ".join(SAMPLERS))
        dims.append(Dimension(key, kind, _check_args(where, kind, args)))
    return dims


def _check_args(where: str, kind: str, args) -> list:
    shape, example = SAMPLERS[kind]
    fix = f"give {kind}: {shape}, e.g. {example}"
    if not isinstance(args, (list, tuple)) or not args:
        raise ConfigError(where, f"{kind} needs a list, got {args!r}", fix)
    args = list(args)
    if kind in ("choice", "grid"):
        return args
    numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
    size = 3 if kind == "quniform" else 2
    if len(args) != size or not numeric:
        raise ConfigError(where, f"{kind} needs {size} numbers, got {args!r}", fix)
    low, high = args[0], args[1]
    if low >= high:
        raise ConfigError(where, f"{kind} needs low < high, got {args!r}", fix)
    if kind == "loguniform" and low <= 0:
        raise ConfigError(where, f"loguniform needs low > 0, got {low}", fix)
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(where, f"randint needs integers, got {args!r}", fix)
    if kind == "quniform" and not args[2] > 0:
        raise ConfigError(where, f"quniform needs a step > 0, got {args[2]}", fix)
    return args


def apply_params(cfg: Config, params: dict) -> Config:
    """A copy of `cfg` with dotted keys set, values checked against the dataclass field types."""
    out = copy.deepcopy(cfg)
    for key, value in params.items():
        section_name, _, leaf = key.partition(".")
        section = getattr(out, section_name)
        hints = typing.get_type_hints(type(section))
        if leaf not in hints:
            raise ConfigError(f"tune.search_space.{key}", "unknown config key")
        setattr(section, leaf, _coerce(key, hints[leaf], value))
    return out


def _coerce(key: str, tp, value):
    where = f"tune.search_space.{key}"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(where, f"{value!r} is not a valid value", "choose among: " + ", ".join(map(str, choices)))
        return value
    if origin is typing.Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        return _coerce(key, options[0], value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true/false, got {value!r}", "use choice: [true, false]")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(where, f"expected an integer, got {value!r}", "use randint, or choice/grid of integers")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(where, f"expected a number, got {value!r}", "use loguniform/uniform, or choice/grid of numbers")
        return float(value)
    if tp is str and not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {value!r}", "quote the values")
    return value


def resolve_metric(cfg: Config) -> tuple[str, str]:
    """tune.metric / tune.mode, defaulting to checkpoint.monitor and the task's main metric."""
    from launcher.tasks import TASKS, get_task

    metric = cfg.tune.metric or cfg.checkpoint.monitor
    if not metric:
        metric = get_task(cfg.task).default_monitor if cfg.task in TASKS else "val_loss"
    return metric, cfg.tune.mode or cfg.checkpoint.mode or config_lib.default_mode(metric)


def validate_search(cfg: Config, dims: list[Dimension], samples: int = 8) -> None:
    """Every edge value of every dimension, and a few joint samples, must give a valid config."""
    t = cfg.tune
    _check(t.num_samples >= 1, "tune.num_samples", f"must be >= 1, got {t.num_samples}")
    _check(t.max_concurrent_trials is None or t.max_concurrent_trials >= 1, "tune.max_concurrent_trials",
           f"must be >= 1 or null, got {t.max_concurrent_trials}")
    _check(t.time_budget_s is None or t.time_budget_s > 0, "tune.time_budget_s", f"must be > 0 or null, got {t.time_budget_s}")
    _check(t.grace_period > 0, "tune.grace_period", f"must be > 0 epochs, got {t.grace_period}")
    _check(t.reduction_factor > 1, "tune.reduction_factor", f"must be > 1, got {t.reduction_factor}")
    _check(t.perturbation_interval > 0, "tune.perturbation_interval", f"must be > 0 epochs, got {t.perturbation_interval}")
    _check(0 < t.quantile_fraction <= 0.5, "tune.quantile_fraction", f"must be in (0, 0.5], got {t.quantile_fraction}")
    if t.search_alg == "grid":
        ranges = [d.key for d in dims if d.kind not in ("choice", "grid")]
        _check(not ranges, "tune.search_alg", f"grid search needs listed values, but {', '.join(ranges)} is a range",
               "give those keys {grid: [...]} or {choice: [...]} values, or use search_alg random")
    if t.search_alg == "optuna":
        grids = [d.key for d in dims if d.kind == "grid"]
        _check(not grids, "tune.search_alg", f"optuna does not take grid values ({', '.join(grids)})", "use choice instead of grid")
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError("tune.search_alg", "optuna is not installed", "pip install 'launcher[optuna]', or use search_alg random") from None
    if t.scheduler == "pbt":
        _check(t.num_samples >= 2, "tune.num_samples", "pbt needs at least 2 trials to copy from", "set --tune.num_samples 4 or more")
        _check(not any(d.kind == "grid" for d in dims), "tune.scheduler", "pbt perturbs values, it does not take grid values",
               "use choice instead of grid")
    for d in dims:
        for value in d.edge_values():
            _validate_sample(cfg, {d.key: value}, f"tune.search_space.{d.key}")
    rng = random.Random(t.seed if t.seed is not None else cfg.train.seed)
    joint = [{d.key: d.edge_values()[0] for d in dims}, {d.key: d.edge_values()[-1] for d in dims}]
    joint += [{d.key: d.sample(rng) for d in dims} for _ in range(samples)]
    for params in joint:
        _validate_sample(cfg, params, "tune.search_space")


def _validate_sample(cfg: Config, params: dict, where: str) -> None:
    trial = apply_params(cfg, params)
    try:
        config_lib.validate(trial)
    except ConfigError as e:
        shown = ", ".join(f"{k}={_fmt_value(v)}" for k, v in params.items())
        text = str(e)
        if e.fix and text.endswith(f" — {e.fix}"):
            text = text[: -len(e.fix) - 3]  # its fix is about the flag; here the range is what to change
        raise ConfigError(where, f"the sample {shown} gives an invalid config: {text}", "narrow the range") from None


def _check(ok: bool, key: str, message: str, fix: str = "") -> None:
    if not ok:
        raise ConfigError(key, message, fix)


# ====================================================================== best selection


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def better(a: float, b: Optional[float], mode: str) -> bool:
    return b is None or (a > b if mode == "max" else a < b)


def trial_best(history: list[dict], metric: str, mode: str, usable: Callable[[dict], bool] = lambda r: True) -> Optional[dict]:
    """The report with the best finite `metric`; ties go to the later epoch (the one Ray's top-k keeps)."""
    best = None
    for row in sorted(history, key=lambda r: r.get("epoch") or 0):
        v = row.get(metric)
        if finite(v) and usable(row) and (best is None or v == best[metric] or better(v, best[metric], mode)):
            best = row
    return best


def select_best(histories: dict[str, list[dict]], metric: str, mode: str,
                usable: Callable[[dict], bool] = lambda r: True) -> Optional[tuple[str, dict]]:
    """(trial id, report) of the best epoch across ALL trials — a mid-run peak beats later, lower epochs.

    `histories` maps trial id → its validation reports (dicts with `metric`, `epoch`, `checkpoint_path`).
    Reports whose checkpoint is gone (`usable` false) are skipped. Ties go to the earlier trial.
    """
    pick = None
    for trial_id, history in histories.items():
        row = trial_best(history, metric, mode, usable)
        if row is not None and (pick is None or better(row[metric], pick[1][metric], mode)):
            pick = (trial_id, row)
    return pick


# ====================================================================== outputs


@dataclass
class TrialSummary:
    trial_id: str
    status: str
    error: str
    params: dict
    history: list
    best: Optional[dict]
    last: Optional[dict]
    wall_s: float
    copied_from: list = field(default_factory=list)
    tune_path: str = ""

    @property
    def epochs_run(self) -> float:
        return max((r.get("epoch") or 0 for r in self.history), default=0)


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
    from launcher.export import atomic_write

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


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ====================================================================== the flow


def run(config: Config, resume: bool = False, overwrite: bool = False, trial_callbacks: Optional[list] = None,
        tune_callbacks: Optional[list] = None, verbose: bool = True) -> TuneResult:
    """The whole `launcher tune` flow. Returns the best folder and one row per trial (also in trials.csv).

    Args:
        config: the base config; `config.tune` describes the search.
        resume: continue the interrupted search in `output_dir` (Tuner.restore).
        overwrite: replace a non-empty `output_dir`.
        trial_callbacks: extra Lightning callbacks for every trial's workers (picklable).
        tune_callbacks: extra ray.tune.Callback objects for the driver.
        verbose: print the live trial table and the summary.
    """
    from launcher import distributed, export, train
    from launcher import storage as storage_lib

    cfg = copy.deepcopy(config)
    dims = parse_space(cfg)
    validate_search(cfg, dims)
    metric, mode = resolve_metric(cfg)
    # Each trial keeps its top-k checkpoints by the searched metric, so its best epoch survives.
    cfg.checkpoint.monitor, cfg.checkpoint.mode = metric, mode
    train.check_output_dir(cfg, overwrite, resume)
    prepared = train.prepare(cfg)
    root, name = search_storage(cfg)
    experiment, trials_storage = storage_lib.join(root, name), storage_lib.join(root, f"{name}-trials")
    if resume and not _can_restore(experiment):
        raise ConfigError("--resume", f"no search to resume in {storage_lib.redact_uri(experiment)}", "run without --resume to start one")
    # Trials are compared on validation data only; the test split is for the one exported model.
    prepared = dataclasses.replace(prepared, splits={k: v for k, v in prepared.splits.items() if k != "test"},
                                   sizes={k: v for k, v in prepared.sizes.items() if k != "test"})
    if overwrite and not resume:
        export.clear_output_dir(cfg.output_dir)
        for uri in (experiment, trials_storage):
            storage_lib.delete(uri)
    os.makedirs(cfg.output_dir, exist_ok=True)
    export.save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))

    distributed.init_ray(cfg)
    resources = distributed.cluster_resources()
    distributed.check_resources(cfg, resources)
    concurrency = _concurrency(cfg, resources, verbose)

    from launcher import tune_ray

    tune_ray.warm_up_train()

    settings = tune_ray.Settings(metric=metric, mode=mode, keys=[d.key for d in dims],
                                 output_dir=os.path.abspath(cfg.output_dir), train_storage=trials_storage,
                                 tune_checkpoints=cfg.tune.scheduler == "pbt",
                                 bounds={d.key: d.bounds() for d in dims if d.bounds()}, experiment=experiment)
    start = time.time()
    grid = tune_ray.run_search(cfg, dims, prepared, settings, root, name, resume=resume, concurrency=concurrency,
                               callbacks=list(tune_callbacks or []), verbose=verbose, trial_callbacks=trial_callbacks)
    trials = tune_ray.summarize(grid, settings)
    return finish(cfg, prepared, trials, dims, settings, grid, time.time() - start, verbose)


def search_storage(cfg: Config) -> tuple[str, str]:
    """(storage root, experiment name): "tune" in a run's own storage, a name unique to output_dir in shared storage."""
    from launcher import storage as storage_lib

    root = config_lib.storage_path(cfg)
    if not storage_lib.is_uri(root):
        root = os.path.abspath(root.removeprefix("file://"))
    run = storage_lib.run_name(cfg)
    return root, "tune" if run == "train" else f"{run}-tune"


def _can_restore(experiment: str) -> bool:
    from ray.tune import Tuner

    return Tuner.can_restore(experiment)


def _concurrency(cfg: Config, resources: dict, verbose: bool) -> Optional[int]:
    """Trials at once: at most what the cluster holds, so no worker group waits past its start timeout."""
    r = cfg.ray
    fits = int(resources.get("CPU", 0) / (r.num_workers * r.cpus_per_worker) + 1e-9)
    if r.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0) / (r.num_workers * r.gpus_per_worker) + 1e-9))
    asked = cfg.tune.max_concurrent_trials
    if r.address or os.environ.get("RAY_ADDRESS"):  # a cluster (ray job submit) may autoscale: trust the user
        return asked
    if asked is None or asked > fits:
        if verbose and asked is not None:
            print(f"[launcher] tune.max_concurrent_trials {asked} → {fits}: this machine holds {fits} trials of "
                  f"{r.num_workers} x {r.cpus_per_worker:g} CPUs", file=sys.stderr)
        return max(fits, 1)
    return asked


def finish(cfg: Config, prepared, trials: list[TrialSummary], dims: list[Dimension], settings, grid, wall_s: float,
           verbose: bool = True) -> TuneResult:
    """Pick the best epoch of all trials, export it, clean up checkpoints, write best.json/trials.csv/search.png."""
    from launcher import export, tune_ray

    metric, mode, out = settings.metric, settings.mode, cfg.output_dir
    histories = {t.trial_id: t.history for t in trials}
    pick = select_best(histories, metric, mode, usable=lambda r: tune_ray.checkpoint_exists(settings, r.get("checkpoint_path")))
    best_dir, best = None, None
    if pick is not None:
        trial_id, row = pick
        summary = next(t for t in trials if t.trial_id == trial_id)
        # The values that trained this epoch (under PBT a trial's values change along the way).
        params = {k: (row.get("config") or {}).get(k, summary.params.get(k)) for k in settings.keys}
        trial_cfg = apply_params(cfg, {k: v for k, v in params.items() if v is not None})
        best_dir = os.path.join(out, "best")
        export.export_checkpoint(trial_cfg, prepared.task, prepared.meta, prepared.tokenizer,
                                 tune_ray.checkpoint_at(settings, row["checkpoint_path"]), best_dir,
                                 extra={"best_epoch": row.get("epoch"), "monitor": metric, "best_value": row[metric],
                                        "trial_id": trial_id, "searched": params})
        best = {"trial_id": trial_id, "epoch": row.get("epoch"), "step": row.get("step"), "metric": metric, "mode": mode,
                "value": row[metric], "params": params,
                "val_metrics": {k: v for k, v in row.items() if k.startswith("val_") and finite(v)},
                "checkpoint": row["checkpoint_path"], "best_model": os.path.abspath(best_dir),
                "config": export.redact(config_lib.to_dict(trial_cfg))}
        from launcher import storage as storage_lib

        # Bucket storage: the search's output_dir is often a job's folder on the head; the copy in
        # the bucket, next to the search, outlives the cluster (as launcher train does).
        uri = storage_lib.publish_best(best_dir, settings.experiment, "")
        if uri:
            best["best_model_uri"] = storage_lib.redact_uri(uri)
    kept_for = {pick[1]["checkpoint_path"]} if pick else set()
    tune_ray.clean_checkpoints(trials, settings, keep=kept_for, search_done=_search_done(trials))
    disk = tune_ray.disk_usage(settings.train_storage) + tune_ray.disk_usage(settings.experiment)
    rows = trials_table(trials, settings.keys, metric)
    write_csv(os.path.join(out, "trials.csv"), rows)
    summary = {"trials": len(trials), **{s: sum(t.status == s for t in trials) for s in STATUSES},
               "wall_time_s": round(wall_s, 1), "disk_used_bytes": disk}
    export.write_json(os.path.join(out, "best.json"), {**(best or {"trial_id": None, "metric": metric, "mode": mode, "value": None}),
                                                       "search": summary})
    try:
        plot_search(os.path.join(out, "search.png"), trials, dims, metric, mode, best_trial=best and best["trial_id"])
    except Exception as e:  # noqa: BLE001 - a plot must never lose a finished search
        print(f"[launcher] search.png not written: {type(e).__name__}: {e}", file=sys.stderr)
    result = TuneResult(best_dir=best_dir, best=best, trials=rows, metric=metric, mode=mode, output_dir=out,
                        disk_bytes=disk, result_grid=grid)
    if verbose:
        print(summary_text(result, summary), file=sys.stderr)
    return result


def _search_done(trials: list[TrialSummary]) -> bool:
    return all(t.status != "not started" for t in trials)


def summary_text(result: TuneResult, summary: dict) -> str:
    counts = ", ".join(f"{summary[s]} {s}" for s in STATUSES if summary.get(s))
    lines = [f"[launcher] {summary['trials']} trials ({counts}) in {summary['wall_time_s']:.0f}s; "
             f"checkpoints on disk: {summary['disk_used_bytes'] / 2**20:.1f} MiB"]
    if result.best:
        b = result.best
        params = ", ".join(f"{k}={_fmt_value(v)}" for k, v in b["params"].items())
        lines.append(f"[launcher] best {b['metric']} = {b['value']:.4f}: trial {b['trial_id']} at epoch {b['epoch']:g} ({params})")
        lines.append(f"[launcher] exported model: {b['best_model']}" + (f" (copy: {b['best_model_uri']})" if b.get("best_model_uri") else ""))
    else:
        lines.append("[launcher] no trial produced a finite " + result.metric)
    lines.append(f"[launcher] trials: {os.path.join(result.output_dir, 'trials.csv')}; plot: {os.path.join(result.output_dir, 'search.png')}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Search lr, warmup and schedule (or any keys) with Ray Tune; export the best epoch of all trials."""
    from launcher import cli

    cfg, flags = cli.parse(argv, "launcher tune", main.__doc__)
    if flags["print_config"]:
        cli.print_config(cfg)
        return 0
    result = run(cfg, overwrite=flags["overwrite"], resume=flags["resume"])
    return 0 if result.best else 1
