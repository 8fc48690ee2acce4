"""`launcher tune`: search learning rate, warmup and schedule (or any training key) with Ray Tune and
export the best epoch of all trials.

`run()` is the whole flow, top to bottom: check the config and the search space (no Ray yet) →
tokenise once on the driver → one Ray Tune trial per sample, each running the same loop as
`launcher train` (launcher.search.trial: in the trial's own, reused process for one worker, as a
Ray Train run for several) → pick the best epoch across every trial → export it to
<output_dir>/best and write best.json, trials.csv and search.png (`finish_search`).

This module stays cheap to import (no torch, no ray at import time): `launcher tune --help` and
config mistakes answer in about a second.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from typing import Optional

from launcher import compat, export
from launcher import storage as storage_lib
from launcher.config import Config, to_dict
from launcher.config.parsing import parse, print_config
from launcher.config.secrets import redact
from launcher.distributed import cluster
from launcher.errors import ConfigError
from launcher.files import claim_dir, clear_dir, write_json, write_yaml
from launcher.search import trials as trials_lib
from launcher.search.report import TuneResult, plot_search, summary_text, trials_table, write_csv
from launcher.search.space import Dimension, apply_params, parse_space, resolve_metric, trial_count, validate_search
from launcher.search.trials import STATUSES, TrialSummary
from launcher.training.prepare import check, check_output_dir, prepare
from launcher.training.scoring import finite


def main(argv: list[str]) -> int:
    """Search lr, warmup and schedule (or any keys) with Ray Tune; export the best epoch of all trials."""
    cfg, flags = parse(argv, "launcher tune", main.__doc__)
    if flags["print_config"]:
        print_config(cfg)
        return 0
    result = run(cfg, overwrite=flags["overwrite"], resume=flags["resume"])
    return 0 if result.best else 1


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
    # lazy: Ray and the ML stack load only once the config has passed its checks
    from launcher.search import tuner
    from launcher.search.trial import runs_in_trial

    cfg = copy.deepcopy(config)
    dims = parse_space(cfg)
    validate_search(cfg, dims)
    if check(cfg).stream:
        raise ConfigError("data.streaming", "launcher tune does not stream training data yet (each trial would read and tokenise it again)",
                          "set --data.streaming false (or keep the training data in one local file below data.streaming_min_mb)")
    cluster.check_local_resources(cfg)  # before Ray: a local machine must fit one trial
    metric, mode = resolve_metric(cfg)
    # Each trial keeps its top-k checkpoints by the searched metric, so its best epoch survives.
    cfg.checkpoint.monitor, cfg.checkpoint.mode = metric, mode
    check_output_dir(cfg, overwrite, resume)
    prepared = prepare(cfg)
    root, name = search_storage(cfg)
    experiment, trials_storage = storage_lib.join(root, name), storage_lib.join(root, f"{name}-trials")
    if resume and not _can_restore(experiment):
        raise ConfigError("--resume", f"no search to resume in {storage_lib.redact_uri(experiment)}", "run without --resume to start one")
    # Trials are compared on validation data only; the test split is for the one exported model.
    prepared = dataclasses.replace(prepared, splits={k: v for k, v in prepared.splits.items() if k != "test"},
                                   sizes={k: v for k, v in prepared.sizes.items() if k != "test"})
    with claim_dir(cfg.output_dir):  # another search or run of this output_dir at the same time: refused
        if overwrite and not resume:
            clear_dir(cfg.output_dir)
            for uri in (experiment, trials_storage):
                storage_lib.delete(uri)
        os.makedirs(cfg.output_dir, exist_ok=True)
        write_yaml(os.path.join(cfg.output_dir, "config.yaml"), to_dict(cfg))

        cluster.init_ray(cfg)
        resources = cluster.cluster_resources()
        # ray.cpus_per_worker auto: the CPUs shared by the trials that run at once, as a number for every trial
        cfg = cluster.with_cpus(cfg, trials=cluster.auto_trials(cfg, trial_count(cfg, dims), cluster.node_cpus()))
        cluster.check_resources(cfg, resources)
        concurrency = _concurrency(cfg, resources, verbose)
        compat.start_train_autoscaling_coordinator()

        settings = trials_lib.Settings(metric=metric, mode=mode, keys=[d.key for d in dims],
                                     output_dir=os.path.abspath(cfg.output_dir), train_storage=trials_storage,
                                     tune_checkpoints=cfg.tune.scheduler == "pbt", in_trial=runs_in_trial(cfg, [d.key for d in dims]),
                                     bounds={d.key: d.bounds() for d in dims if d.bounds()}, experiment=experiment)
        start = time.time()
        grid = tuner.run_search(cfg, dims, prepared, settings, root, name, resume=resume, concurrency=concurrency,
                                callbacks=list(tune_callbacks or []), verbose=verbose, trial_callbacks=trial_callbacks)
        trials = trials_lib.summarize(grid, settings)
        return finish_search(cfg, prepared, trials, dims, settings, grid, time.time() - start, verbose)


def search_storage(cfg: Config) -> tuple[str, str]:
    """(storage root, experiment name): "tune" in a run's own storage, a name unique to output_dir in shared storage."""
    root = cfg.storage_path()
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


def finish_search(cfg: Config, prepared, trials: list[TrialSummary], dims: list[Dimension], settings, grid, wall_s: float,
           verbose: bool = True) -> TuneResult:
    """Pick the best epoch of all trials, export it, clean up checkpoints, write best.json/trials.csv/search.png."""
    metric, mode, out = settings.metric, settings.mode, cfg.output_dir
    histories = {t.trial_id: t.history for t in trials}
    pick = trials_lib.select_best(histories, metric, mode, usable=lambda r: trials_lib.checkpoint_exists(settings, r.get("checkpoint_path")))
    best_dir, best = None, None
    if pick is not None:
        trial_id, row = pick
        summary = next(t for t in trials if t.trial_id == trial_id)
        # The values that trained this epoch (under PBT a trial's values change along the way).
        params = {k: (row.get("config") or {}).get(k, summary.params.get(k)) for k in settings.keys}
        trial_cfg = apply_params(cfg, {k: v for k, v in params.items() if v is not None})
        best_dir = os.path.join(out, "best")
        export.export_checkpoint(trial_cfg, prepared.task, prepared.meta, prepared.tokenizer,
                                 trials_lib.checkpoint_at(settings, row["checkpoint_path"]), best_dir,
                                 extra={"best_epoch": row.get("epoch"), "monitor": metric, "best_value": row[metric],
                                        "trial_id": trial_id, "searched": params})
        best = {"trial_id": trial_id, "epoch": row.get("epoch"), "step": row.get("step"), "metric": metric, "mode": mode,
                "value": row[metric], "params": params,
                "val_metrics": {k: v for k, v in row.items() if k.startswith("val_") and finite(v)},
                "checkpoint": row["checkpoint_path"], "best_model": os.path.abspath(best_dir),
                "config": redact(to_dict(trial_cfg))}
        # Bucket storage: the search's output_dir is often a job's folder on the head; the copy in
        # the bucket, next to the search, outlives the cluster (as launcher train does).
        uri = storage_lib.publish_best(best_dir, settings.experiment, "")
        if uri:
            best["best_model_uri"] = storage_lib.redact_uri(uri)
    kept_for = {pick[1]["checkpoint_path"]} if pick else set()
    trials_lib.clean_checkpoints(trials, settings, keep=kept_for, search_done=_search_done(trials))
    disk = trials_lib.disk_usage(settings.train_storage) + trials_lib.disk_usage(settings.experiment)
    rows = trials_table(trials, settings.keys, metric)
    write_csv(os.path.join(out, "trials.csv"), rows)
    summary = {"trials": len(trials), **{s: sum(t.status == s for t in trials) for s in STATUSES},
               "wall_time_s": round(wall_s, 1), "disk_used_bytes": disk}
    write_json(os.path.join(out, "best.json"), {**(best or {"trial_id": None, "metric": metric, "mode": mode, "value": None}),
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
