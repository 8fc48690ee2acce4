"""generic_tune: Ray Tune over the argparse keys of a lightning_base script.

Each trial is a small Tune function that builds the user's module with the trial's values and fits
it with generic_train's machinery (one Ray Train job per trial, its validation reports passed on to
Tune by Ray's TuneReportCallback); the samplers, the search algorithm and the best-epoch rule are
launcher tune's (launcher.search). The best epoch of ALL trials (a mid-run peak beats a later,
lower epoch) ends in <output_dir>/best_tfmr, with best.json and trials.csv.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from typing import Optional

from ray import tune
from ray.train import Result as TrainResult
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from launcher.config import Config
from launcher.config.schema import default_mode
from launcher.distributed import cluster
from launcher.errors import ConfigError
from launcher.files import write_json
from launcher.lightning_base.args import to_config
from launcher.lightning_base.train import BEST_DIR, LoggingCallback, RayTrainer, save_atomically
from launcher.search.report import write_csv
from launcher.search.space import SAMPLERS, Dimension, _check_args
from launcher.search.trials import select_best
from launcher.training.scoring import finite, is_better
from launcher.search.tuner import build_search_alg, trial_name

#: searched when no search_space is given (the original scripts' three main knobs)
DEFAULT_SEARCH_SPACE = {
    "learning_rate": {"loguniform": [1.0e-5, 2.0e-4]},
    "warmup_steps": {"randint": [0, 100]},
    "lr_scheduler": {"choice": ["linear", "cosine", "cosine_w_restarts", "polynomial"]},
}


def dimensions(args: argparse.Namespace, space: dict) -> list[Dimension]:
    """{argparse key: {sampler: args}} → Dimensions; ConfigError naming the key before Ray starts."""
    dims = []
    for key, spec in space.items():
        where = f"search_space.{key}"
        if not hasattr(args, key):
            raise ConfigError(where, "is not an argument of this script", "search keys of the parsed args, e.g. learning_rate")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(where, f"expected one sampler, got {spec!r}", "use one of " + ", ".join(f"{k}: {v[0]}" for k, v in SAMPLERS.items()))
        kind, values = next(iter(spec.items()))
        dims.append(Dimension(key, kind, _check_args(where, kind, values)))
    return dims


def run_trial(config: dict, model_cls, base_args: argparse.Namespace, keys: list, out: str) -> None:
    """One trial (in its Tune process): the args with this trial's values → the module → one Train job."""
    trial_id = tune.get_context().get_trial_id()
    args = copy.deepcopy(base_args)
    for k in keys:
        setattr(args, k, config[k])
    args.output_dir = os.path.join(out, "trials", trial_id)
    args.ray_storage_path = os.path.join(out, "ray")
    cfg = to_config(args)
    model = model_cls(args)
    trainer = RayTrainer(model, args, cfg, [LoggingCallback()], True, {})
    trainer.name = trial_id
    trainer.run_callbacks = [TuneReportCallback()]
    trainer.fit(model)


def generic_tune(model_cls, args: argparse.Namespace, search_space: Optional[dict] = None, num_samples: int = 8,
                 scheduler: str = "asha", search_alg: str = "random", max_concurrent_trials: Optional[int] = None,
                 metric: Optional[str] = None, mode: Optional[str] = None) -> dict:
    """Search `search_space` (argparse key → {loguniform|uniform|quniform|randint|choice|grid: [...]},
    default DEFAULT_SEARCH_SPACE) with `num_samples` trials of `model_cls(args)`; returns best.json's dict.

    `metric`/`mode` default to --monitor/--monitor_mode; `scheduler`: asha (epochs as its time
    unit) or fifo; `search_alg`: random, grid or optuna (as `launcher tune`).
    """
    metric = metric or args.monitor
    mode = mode or (args.monitor_mode if metric == args.monitor else default_mode(metric))
    if scheduler not in ("asha", "fifo"):
        raise ConfigError("scheduler", f"unknown scheduler {scheduler!r}", "choose asha or fifo")
    dims = dimensions(args, search_space or DEFAULT_SEARCH_SPACE)
    cfg: Config = to_config(args)
    cfg.tune.search_alg, cfg.tune.num_samples = search_alg, num_samples
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    cluster.init_ray(cfg)
    sched = (ASHAScheduler(time_attr="epoch", max_t=args.max_epochs, grace_period=1, reduction_factor=2, stop_last_trials=False)
             if scheduler == "asha" else FIFOScheduler())
    trainable = tune.with_resources(tune.with_parameters(run_trial, model_cls=model_cls, base_args=args, keys=[d.key for d in dims], out=out),
                                    {"memory": 1})
    start = time.time()
    grid = tune.Tuner(
        trainable,
        param_space={d.key: d.domain(grid=search_alg == "grid") for d in dims},
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, scheduler=sched,
                                    search_alg=build_search_alg(cfg, max_concurrent_trials),
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name="tune", storage_path=os.path.join(out, "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    ).fit()
    return finish(grid, dims, metric, mode, out, time.time() - start, model_cls, args)


def finish(grid, dims: list[Dimension], metric: str, mode: str, out: str, wall_s: float, model_cls=None, args=None) -> dict:
    """The best epoch of all trials → <out>/best_tfmr, best.json, trials.csv.

    Every validation report a trial gave Tune counts (a trial that ASHA stopped included), as long as
    its weights are still there: the trial's own best_tfmr, or a checkpoint its Train run kept.
    """
    histories, rows, params = {}, [], {}
    for result in grid:
        trial_id = os.path.basename(result.path.rstrip("/"))  # trial folders are named by trial id
        folder = os.path.join(out, "trials", trial_id)
        path = os.path.join(folder, "results.json")
        results = json.load(open(path)) if os.path.exists(path) else {}
        df = result.metrics_dataframe
        reports = [r for r in (df.to_dict("records") if df is not None else []) if r.get("kind") == "val"]
        histories[trial_id] = [dict(r, trial_best=r.get("epoch") == results.get("best_epoch") and os.path.isdir(os.path.join(folder, BEST_DIR)))
                               for r in reports]
        params[trial_id] = {d.key: (result.config or {}).get(d.key) for d in dims}
        best_row = max((r for r in reports if finite(r.get(metric))), key=lambda r: r[metric] if mode == "max" else -r[metric], default=None)
        rows.append({"trial_id": trial_id, "status": "failed" if result.error else ("finished" if results else "stopped early"),
                     "error": str(result.error).splitlines()[0][:300] if result.error else None, **params[trial_id],
                     f"best_{metric}": best_row[metric] if best_row else None, "best_epoch": best_row["epoch"] if best_row else None,
                     f"last_{metric}": reports[-1].get(metric) if reports else None, "epochs_run": len(reports)})
    write_csv(os.path.join(out, "trials.csv"), rows)
    kept = {}

    def usable(trial_id: str, row: dict) -> bool:
        if row["trial_best"]:
            return True
        kept[(trial_id, row["epoch"])] = epoch_checkpoint(out, trial_id, row["epoch"])
        return kept[(trial_id, row["epoch"])] is not None and model_cls is not None

    pick = None
    for trial_id, history in histories.items():  # select_best's rule, with each trial's own `usable`
        found = select_best({trial_id: history}, metric, mode, usable=lambda r, t=trial_id: usable(t, r))
        if found is not None and (pick is None or is_better(found[1][metric], pick[1][metric], mode)):
            pick = found
    if pick is None:
        raise RuntimeError(f"no trial reported a finite {metric}: see {os.path.join(out, 'trials.csv')}")
    trial_id, row = pick
    target = os.path.join(out, BEST_DIR)
    if row["trial_best"]:
        if os.path.exists(target):
            shutil.rmtree(target)
        shutil.copytree(os.path.join(out, "trials", trial_id, BEST_DIR), target)
    else:  # an epoch that was not its trial's exported best (e.g. the trial was stopped): from its checkpoint
        trial_args = copy.deepcopy(args)
        for k, v in params[trial_id].items():
            setattr(trial_args, k, v)
        model = model_cls(trial_args)
        RayTrainer.load_checkpoint(model, kept[(trial_id, row["epoch"])])
        save_atomically(model, target)
    best = {"trial_id": trial_id, "metric": metric, "mode": mode, "value": row[metric], "epoch": row["epoch"],
            "params": params[trial_id], "best_tfmr": target, "trials": len(rows), "wall_s": round(wall_s, 1)}
    write_json(os.path.join(out, "best.json"), best)
    return best


def epoch_checkpoint(out: str, trial_id: str, epoch):
    """The checkpoint of `epoch` that the trial's Train run kept, or None."""
    run = os.path.join(out, "ray", trial_id)
    if not os.path.isdir(run):
        return None
    try:
        result = TrainResult.from_path(run)
    except Exception:  # noqa: BLE001 - a run stopped before its first checkpoint has no readable result
        return None
    return next((c for c, m in (result.best_checkpoints or []) if m.get("kind") == "val" and m.get("epoch") == epoch), None)
