"""The Ray side of `launcher tune`: the per-trial driver, its callbacks, and the Tuner around them.

Ray Train V2 cannot be handed to a Tuner, so each trial is a small Tune function — the trial driver,
`trial_main` — that runs one Ray Train job through `launcher.train.fit` (the same loop as
`launcher train`) and passes every validation report on to Tune. The job runs in a thread of the
trial driver; its reports reach the driver through a one-slot queue, so the driver can call
`tune.report(metrics, checkpoint=...)` itself. That is what Population Based Training needs:
Tune only copies a trial's weights into another trial if the trial reported a checkpoint to Tune,
which `ray.tune.integration.ray_train.TuneReportCallback` (metrics only) does not do.

A trial that starts from a Tune checkpoint (PBT's exploit, or a restored search) runs a fresh Train
job that resumes that checkpoint (`init_checkpoint`, see launcher.train.train_loop) with its own,
possibly perturbed, hyperparameters (launcher.tune_worker.UseTrialHyperparameters).

What a trial process unpickles is kept light on purpose (object refs for the tokenised data, the
tokenizer and Lightning callbacks): a trial driver and its Train controller then start without
importing transformers or Lightning, which only the Train workers need.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

from ray import tune
from ray.train import UserCallback

from launcher import config as config_lib
from launcher.config import Config, ConfigError

STATUS_DIR = "_status"


@dataclass
class Settings:
    """What every trial driver and driver-side callback needs to know about the search."""

    metric: str
    mode: str
    keys: list
    output_dir: str
    train_storage: str
    tune_checkpoints: bool = False
    bounds: dict = field(default_factory=dict)
    experiment: str = ""


# ====================================================================== trial driver (one per trial)


def ship(prepared, monitor: str, callbacks: list) -> dict:
    """What every trial driver receives, as object refs: put once, and cheap to unpickle.

    The task object is replaced by what `launcher.train.fit` reads of it (its monitor), so a trial
    process never imports the task module (and Lightning, transformers) itself.
    """
    import ray

    from launcher.data import to_table
    from launcher.tune_worker import UseTrialHyperparameters

    light = dataclasses.replace(prepared, task=SimpleNamespace(monitor=monitor), tokenizer=ray.put(prepared.tokenizer),
                                splits={k: ray.put(to_table(v)) for k, v in prepared.splits.items()})
    return {"prepared": light, "callbacks": ray.put(list(callbacks)),
            "callbacks_after_copy": ray.put(list(callbacks) + [UseTrialHyperparameters()])}


def trial_main(config: dict, base: dict, payload: dict, settings: Settings) -> None:
    """One trial: the config with this trial's values → one Ray Train job; reports go on to Tune."""
    from ray.util.queue import Queue

    from launcher import train
    from launcher.tune import apply_params

    # Read here when the Train job is built, and passed on to its controller and workers by Ray:
    # the controller polls its workers every 2 s by default, and each report and the end of every
    # trial wait for a poll; its metrics exporter is of no use to a trial.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_params(config_lib.from_dict(base), {k: config[k] for k in settings.keys if k in config})
    cfg.output_dir = os.path.join(settings.output_dir, "trials", trial_id)
    start_from = tune.get_checkpoint()
    extra: dict = {"callbacks": payload["callbacks"]}
    if start_from is None:
        # Same name as before an interruption: Train resumes this trial's own latest checkpoint.
        name = trial_id
    else:
        # A new Train job so that it does not resume its own older checkpoints instead.
        name = f"{trial_id}-{uuid.uuid4().hex[:6]}"
        extra["init_checkpoint"] = start_from
        extra["callbacks"] = payload["callbacks_after_copy"]
        owner = os.path.basename(os.path.dirname(start_from.path.rstrip("/")))
        if owner != trial_id:  # PBT's exploit (a restore resumes the trial's own checkpoint)
            write_status(settings, f"{trial_id}.copy-{name.rsplit('-', 1)[-1]}",
                         {"from": owner, "checkpoint": os.path.basename(start_from.path.rstrip("/")), "time": time.time()})

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    box: dict = {}

    def work() -> None:
        try:
            box["outcome"] = train.fit(cfg, payload["prepared"], name=name, callbacks=[ForwardReports(queue)],
                                       storage=settings.train_storage, extra_loop_config=extra)
        except BaseException as e:  # noqa: BLE001 - handed to the trial driver's thread below
            box["error"] = e

    start = time.time()
    worker = threading.Thread(target=work, name=f"launcher-trial-{trial_id}", daemon=True)
    worker.start()
    try:
        for metrics, checkpoint in _reports(queue, worker):
            if settings.metric not in metrics:
                shown = ", ".join(sorted(k for k in metrics if k.startswith(("val_", "train_"))))
                raise ConfigError("tune.metric", f"{settings.metric} is not reported by task {cfg.task}", f"choose one of: {shown}")
            tune.report(metrics, checkpoint=checkpoint if settings.tune_checkpoints else None)
        worker.join()
        if "error" in box:
            raise box["error"]
    except Exception as e:
        write_status(settings, trial_id, {"status": "failed", "error": error_line(e), "wall_s": time.time() - start})
        raise
    outcome = box["outcome"]
    write_status(settings, trial_id, {"status": "finished", "global_step": outcome.end.get("global_step"),
                                      "epochs_completed": outcome.end.get("epochs_completed"), "wall_s": time.time() - start})


def _reports(queue, worker: threading.Thread):
    """Reports from the Train job until it ends (then whatever is still queued)."""
    from ray.util.queue import Empty

    while True:
        try:
            yield queue.get(timeout=0.5)
        except Empty:
            if worker.is_alive():
                continue
            while not queue.empty():
                yield queue.get_nowait()
            return


class ForwardReports(UserCallback):
    """Runs in the Ray Train controller: hands each validation report (and its checkpoint) to the trial driver.

    The queue holds one item, so the job waits until the driver has passed the report to Tune — as
    Tune's own TuneReportCallback does — and a scheduler's stop decision lands before the next epoch.
    """

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        m = dict(metrics[0])
        if m.get("kind") != "val":
            return  # step checkpoints are for resuming the job, not for ranking trials
        m["checkpoint_path"] = checkpoint.path if checkpoint is not None else None
        self.queue.put((m, checkpoint))


def error_line(e: BaseException) -> str:
    """The line that says what went wrong, from a Train error that wraps a worker's traceback."""
    failures = getattr(e, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        e = next(iter(failures.values()))
    inner = getattr(e, "cause", None) or e
    text = str(inner).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # a traceback ends with "SomeError: message"
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "NonFiniteLoss")) and " " not in head:
            return ln[:300]
    return f"{type(inner).__name__}: {lines[0][:300]}" if lines else type(inner).__name__


# ====================================================================== storage helpers
# Paths below are paths inside the storage's pyarrow filesystem (local folder, s3://, gs://):
# `checkpoint_path` in a report is Ray Train's checkpoint.path in the trials' storage.


def _fs(settings: Settings):
    from launcher import storage

    return storage.filesystem(settings.train_storage)


def checkpoint_at(settings: Settings, path: str):
    from ray.train import Checkpoint

    return Checkpoint(path, filesystem=_fs(settings)[0])


def checkpoint_exists(settings: Settings, path) -> bool:
    import pyarrow.fs

    if not isinstance(path, str) or not path:
        return False
    return _fs(settings)[0].get_file_info(path).type == pyarrow.fs.FileType.Directory


def _list_dirs(fs, path: str) -> list[str]:
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    return [i.path for i in infos if i.type == pyarrow.fs.FileType.Directory]


def _delete(fs, path: str) -> None:
    try:
        fs.delete_dir(path)
    except OSError:
        pass  # already gone (Ray's own top-k cleanup, or an earlier sweep)


def disk_usage(uri: str) -> int:
    """Bytes under a storage folder or URI."""
    import pyarrow.fs

    from launcher import storage

    fs, path = storage.filesystem(uri)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    return sum(i.size or 0 for i in infos if i.type == pyarrow.fs.FileType.File)


def write_status(settings: Settings, trial_id: str, status: dict) -> None:
    """<trials storage>/_status/<trial>.json: written by the trial driver when its job ended by itself."""
    fs, root = _fs(settings)
    fs.create_dir(f"{root}/{STATUS_DIR}", recursive=True)
    with fs.open_output_stream(f"{root}/{STATUS_DIR}/{trial_id}.json") as f:
        f.write(json.dumps(status, default=str).encode())


def read_status(settings: Settings, trial_id: str) -> dict:
    fs, root = _fs(settings)
    try:
        with fs.open_input_stream(f"{root}/{STATUS_DIR}/{trial_id}.json") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return {}


def trial_checkpoints(settings: Settings, trial_id: str) -> list[str]:
    """Every Train checkpoint a trial still has (its own job and, under PBT, the jobs after each copy)."""
    fs, root = _fs(settings)
    out = []
    for run_dir in _list_dirs(fs, root):
        base = run_dir.rstrip("/").rsplit("/", 1)[-1]
        if base == trial_id or base.startswith(trial_id + "-"):
            out += [d for d in _list_dirs(fs, run_dir) if d.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]
    return out


def delete_trial_checkpoints(settings: Settings, trial_id: str, keep: set, tune_dir: Optional[str] = None) -> int:
    """Delete a trial's checkpoints except those in `keep` (and Tune's copies in `tune_dir`); returns how many."""
    fs, _ = _fs(settings)
    doomed = [c for c in trial_checkpoints(settings, trial_id) if c not in keep]
    if tune_dir:
        doomed += _tune_copies(fs, tune_dir)
    for d in doomed:
        _delete(fs, d)
    return len(doomed)


def _tune_copies(fs, tune_dir: str) -> list[str]:
    return [d for d in _list_dirs(fs, tune_dir) if d.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]


def clean_checkpoints(trials: list, settings: Settings, keep: set, search_done: bool) -> None:
    """Stopped and failed trials keep nothing but the global best; finished ones keep their top-k.

    Tune's own copies (PBT) only serve exploits and restores, so they go once the search is over.
    """
    fs, _ = _fs(settings)
    for t in trials:
        if t.status != "finished":
            delete_trial_checkpoints(settings, t.trial_id, keep, t.tune_path if search_done else None)
        elif search_done and t.tune_path:
            for d in _tune_copies(fs, t.tune_path):
                _delete(fs, d)


# ====================================================================== the Tuner


def trial_name(trial) -> str:
    """Trial folders and table rows are named by trial id (Tune's default names hold every value)."""
    return trial.trial_id


def clip_to_bounds(config: dict, bounds: dict) -> dict:
    """PBT multiplies values by 0.8/1.2: keep them inside the searched range (and integers integral)."""
    for key, (low, high) in bounds.items():
        if key in config and isinstance(config[key], (int, float)):
            value = min(max(config[key], low), high)
            config[key] = int(round(value)) if isinstance(low, int) and isinstance(high, int) else value
    return config


def build_scheduler(cfg: Config, dims: list, settings: Settings, prepared):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    t = cfg.tune
    if t.scheduler == "asha":
        # Rungs are in epochs (the reports carry them): a restored trial keeps its place.
        return ASHAScheduler(time_attr="epoch", max_t=max_epochs(cfg, prepared), grace_period=t.grace_period,
                             reduction_factor=t.reduction_factor, stop_last_trials=False)
    if t.scheduler == "pbt":
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=t.perturbation_interval,
                                       hyperparam_mutations={d.key: d.mutation() for d in dims},
                                       quantile_fraction=t.quantile_fraction, resample_probability=0.25,
                                       custom_explore_fn=functools.partial(clip_to_bounds, bounds=settings.bounds))
    return FIFOScheduler()


def max_epochs(cfg: Config, prepared) -> float:
    if cfg.train.max_steps < 0:
        return cfg.train.max_epochs
    from launcher.data import optimizer_steps_per_epoch

    per_epoch = optimizer_steps_per_epoch(prepared.sizes["train"], cfg.ray.num_workers, cfg.train.batch_size,
                                          cfg.train.accumulate_grad_batches)
    return max(1, math.ceil(cfg.train.max_steps / max(per_epoch, 1)))


def build_search_alg(cfg: Config, concurrency: Optional[int]):
    seed = cfg.tune.seed if cfg.tune.seed is not None else cfg.train.seed
    if cfg.tune.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=seed)
        return ConcurrencyLimiter(search, max_concurrent=concurrency) if concurrency else search
    from ray.tune.search import BasicVariantGenerator

    # The generator limits concurrency itself (TuneConfig.max_concurrent_trials only wraps Searchers).
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency or 0)


def run_search(cfg: Config, dims: list, prepared, settings: Settings, storage: str, name: str, resume: bool,
               concurrency: Optional[int], callbacks: list, verbose: bool, trial_callbacks: Optional[list] = None):
    """Tuner.fit() (or Tuner.restore(...).fit()) → ResultGrid."""
    payload = ship(prepared, settings.metric, trial_callbacks or [])
    trainable = tune.with_parameters(trial_main, base=config_lib.to_dict(cfg), payload=payload, settings=settings)
    # The trial driver only waits on its Train job; the job's workers hold the CPUs. One byte of
    # memory is a request every cluster can grant ({"CPU": 0} alone is rejected).
    trainable = tune.with_resources(trainable, {"memory": 1})
    if resume:
        tuner = tune.Tuner.restore(settings.experiment, trainable=trainable, resume_unfinished=True, resume_errored=False)
        return tuner.fit()
    tuner = tune.Tuner(
        trainable,
        param_space={d.key: d.domain(grid=cfg.tune.search_alg == "grid") for d in dims},
        tune_config=tune.TuneConfig(metric=settings.metric, mode=settings.mode, num_samples=cfg.tune.num_samples,
                                    scheduler=build_scheduler(cfg, dims, settings, prepared), search_alg=build_search_alg(cfg, concurrency),
                                    time_budget_s=cfg.tune.time_budget_s,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name, reuse_actors=False),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            callbacks=[LiveTable(settings, cfg.logging.progress_every_s if verbose else None), CheckpointHygiene(settings)] + callbacks,
            failure_config=tune.FailureConfig(max_failures=0),
            # PBT copies a trial's latest checkpoint into a poorer one, which may start a while later:
            # keep a few so the copy is still there when it does. All go when the search ends.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3) if settings.tune_checkpoints else None,
        ),
    )
    return tuner.fit()


def warm_up_train() -> None:
    """Start Ray Train's cluster-wide autoscaling coordinator now, while the search is being set up.

    Every Train controller registers its resource request with this detached actor and waits up to
    5 s for the answer; the first one would otherwise also wait for the actor's process to start.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:  # moved in another Ray version: only the first trial starts slower
        return
    get_or_create_autoscaling_coordinator()


# ====================================================================== results


def summarize(grid, settings: Settings) -> list:
    """ResultGrid → one TrialSummary per trial (history of validation reports, status, error)."""
    from launcher.tune import TrialSummary, trial_best

    out = []
    for result in grid:
        path = result.path or ""
        # Trial folders are named by trial id (trial_name). Not result.metrics["trial_id"]: after a
        # PBT copy, Tune's last result of a trial can be the one that came with the copied checkpoint.
        trial_id = os.path.basename(path.rstrip("/")) or (result.metrics or {}).get("trial_id")
        rows = read_results(result)
        history = dedupe(rows)
        status = read_status(settings, trial_id)
        if result.error is not None or status.get("status") == "failed":
            state, error = "failed", status.get("error") or error_line(result.error)
        elif status.get("status") == "finished":
            state, error = "finished", ""
        elif not rows:
            state, error = "not started", ""
        else:
            state, error = "stopped early", ""
        best = trial_best(history, settings.metric, settings.mode)
        # The values that trained the trial's best epoch: under PBT they change along the way.
        config = (best or (history[-1] if history else {})).get("config") or result.config or {}
        out.append(TrialSummary(
            trial_id=trial_id, status=state, error=error, params={k: config.get(k) for k in settings.keys},
            history=history, best=best,
            last=next((r for r in reversed(history) if r.get(settings.metric) is not None), None),
            wall_s=float(status.get("wall_s") or (rows[-1].get("time_total_s") if rows else 0) or 0),
            copied_from=[c["from"] for c in copies(settings, trial_id)], tune_path=path,
        ))
    return sorted(out, key=lambda t: t.trial_id)


def read_results(result) -> list[dict]:
    """Every result a trial reported, from its result.json (progress.csv keeps only the first row's columns)."""
    if not result.path:
        return []
    from launcher import storage

    fs = getattr(result, "filesystem", None) or storage.filesystem(result.path)[0]
    try:
        with fs.open_input_stream(f"{result.path.rstrip('/')}/result.json") as f:
            text = f.read().decode()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line cut short when the driver was killed mid-write
    return rows


def copies(settings: Settings, trial_id: str) -> list[dict]:
    """The checkpoints of other trials this trial continued from (PBT), oldest first."""
    fs, root = _fs(settings)
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{STATUS_DIR}", allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        if info.base_name.startswith(f"{trial_id}.copy-"):
            found.append(read_status(settings, info.base_name.removesuffix(".json")))
    return sorted((c for c in found if c), key=lambda c: c.get("time", 0))


def dedupe(rows: list[dict]) -> list[dict]:
    """Validation reports by epoch; one repeated after a restart replaces the earlier one."""
    by_epoch = {}
    for r in rows:
        if r.get("kind") == "val" and isinstance(r.get("epoch"), (int, float)):
            by_epoch[r["epoch"]] = dict(r)
    return [by_epoch[k] for k in sorted(by_epoch)]


# ====================================================================== driver-side Tune callbacks


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
        from launcher.tune import better, finite

        m = self.settings.metric
        self.last[trial.trial_id] = result
        v = result.get(m)
        if finite(v) and better(v, (self.best.get(trial.trial_id) or {}).get(m), self.settings.mode):
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
        from launcher.tune import _fmt_value, better

        m, keys = self.settings.metric, self.settings.keys
        rows = []
        for t in sorted(trials, key=lambda t: t.trial_id):
            last, best = self.last.get(t.trial_id, {}), self.best.get(t.trial_id, {})
            rows.append([t.trial_id, self._state(t)] + [_fmt_value(t.config.get(k)) for k in keys] +
                        [_fmt_value(last.get("epoch", "")), _num(last.get(m)), _num(best.get(m)), _fmt_value(best.get("epoch", ""))])
        head = ["trial", "status"] + keys + ["epoch", m, f"best {m}", "at epoch"]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines = ["  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head] + rows]
        overall = None
        for tid, b in self.best.items():
            if overall is None or better(b[m], overall[1][m], self.settings.mode):
                overall = (tid, b)
        states = [self._state(t) for t in trials]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        best_text = f"; best {m} {overall[1][m]:.4f} (trial {overall[0]}, epoch {_fmt_value(overall[1]['epoch'])})" if overall else ""
        title = f"[launcher tune] {_clock(time.time() - self.start)}: {counts}{best_text}"
        return "\n".join([title] + lines)

    def _state(self, trial) -> str:
        if trial.status == "TERMINATED":
            return "finished" if self.status.get(trial.trial_id) else "stopped"
        return {"ERROR": "failed"}.get(trial.status, trial.status.lower())


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m:02d}m{s:02d}s"


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
        from launcher.tune import better, finite

        v, path = result.get(self.settings.metric), result.get("checkpoint_path")
        if finite(v) and path and (self.best is None or better(v, self.best[0], self.settings.mode)):
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
