"""One trial of `launcher tune`: its Tune function, `trial_main`, which trains the trial's config and reports to Tune.

Two ways, one loop (launcher.training.loop.run, the loop of `launcher train`):

* One worker (`runs_in_trial`): the loop runs right here, in the Tune trial's process, reporting
  through a TuneSession (`tune.report` / `tune.get_checkpoint`: Ray refuses `ray.train.report` in a
  Tune function, Ray issue 49454). The Tuner reuses trial actors (`reuse_actors`), so torch,
  Lightning and transformers are imported once per actor, not once per trial. A trial that ASHA
  stops ends inside `tune.report` (Tune's stop makes it raise SystemExit) before the actor is handed
  the next trial; Tune does not reuse an actor whose loop is still running.
* Several workers (`train_run`): the trial drives one Ray Train job through
  `launcher.training.fit.fit` in a thread and passes every validation report on to Tune; the
  reports reach it through a one-slot queue, so it can call `tune.report(metrics, checkpoint=...)`
  itself (what PBT needs: Tune only copies a trial's weights if the trial reported a checkpoint to
  Tune, which `ray.tune.integration.ray_train.TuneReportCallback` does not do). Actors are not
  reused: a stopped trial's Train job would go on in the reused actor.

Both keep their checkpoints in the same layout (<trials storage>/<trial id>[-<copy>]/checkpoint_*,
launcher.search.trials). A trial that starts from a Tune checkpoint (PBT's exploit, or a restored
PBT search) runs a fresh run that starts from that checkpoint (`init_checkpoint`, see
launcher.training.loop.resume_point) with its own, possibly perturbed, hyperparameters
(launcher.training.hyperparams.UseTrialHyperparameters).

What a trial process unpickles is kept light on purpose (object refs for the tokenised data, the
tokenizer and Lightning callbacks): a Train-run trial and its Train controller then start without
importing transformers or Lightning, which only the Train workers need.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
import uuid
from types import SimpleNamespace

import ray
from ray import tune
from ray.train import UserCallback

from launcher import compat
from launcher.config import from_dict, to_dict
from launcher.data.sampling import to_table
from launcher.errors import ConfigError, NonFiniteLoss
from launcher.search.space import apply_params
from launcher.search.trials import Settings, write_status
from launcher.training.session import CheckpointStore, LocalRunLog, TuneSession

#: seconds a stopped trial's loop gets to unwind before Tune gives up reusing its actor (Ray's default: 2)
TRIAL_STOP_TIMEOUT_S = 30


def ship(prepared, monitor: str, callbacks: list) -> dict:
    """What every trial driver receives, as object refs: put once, and cheap to unpickle.

    The task object is replaced by what `launcher.training.fit.fit` reads of it (its monitor), so a trial
    process never imports the task module (and Lightning, transformers) itself.
    """
    from launcher.training.hyperparams import UseTrialHyperparameters  # lazy: imports Lightning

    light = dataclasses.replace(prepared, task=SimpleNamespace(monitor=monitor), tokenizer=ray.put(prepared.tokenizer),
                                splits={k: ray.put(to_table(v)) for k, v in prepared.splits.items()})
    return {"prepared": light, "callbacks": ray.put(list(callbacks)),
            "callbacks_after_copy": ray.put(list(callbacks) + [UseTrialHyperparameters()])}


def runs_in_trial(cfg, keys: list) -> bool:
    """Whether the trials of a search train in the Tune trial's own process (and actors are reused).

    One worker on Lightning's single-device strategy needs nothing of Ray Train: no process group,
    no worker group to restart. Several workers, TPU, FSDP and DeepSpeed keep a Train run per trial,
    as does a search over `ray.*` keys (the trials would ask for different resources).
    """
    r = cfg.ray
    return r.num_workers == 1 and r.accelerator != "tpu" and r.strategy == "ddp" and not any(k.startswith("ray.") for k in keys)


def trial_main(config: dict, base: dict, payload: dict, settings: Settings) -> None:
    """One trial: the config with this trial's values → the training loop here, or one Ray Train job."""
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_params(from_dict(base), {k: config[k] for k in settings.keys if k in config})
    cfg.output_dir = os.path.join(settings.output_dir, "trials", trial_id)
    start_from = tune.get_checkpoint()
    extra: dict = {"callbacks": payload["callbacks"]}
    if start_from is None:
        # Same name as before an interruption: the trial resumes its own latest checkpoint.
        name = trial_id
    else:
        # A new run so that it does not resume its own older checkpoints instead.
        name = f"{trial_id}-{uuid.uuid4().hex[:6]}"
        extra["init_checkpoint"] = start_from
        extra["callbacks"] = payload["callbacks_after_copy"]
        owner = os.path.basename(os.path.dirname(start_from.path.rstrip("/")))
        if owner != trial_id:  # PBT's exploit (a restore resumes the trial's own checkpoint)
            write_status(settings, f"{trial_id}.copy-{name.rsplit('-', 1)[-1]}",
                         {"from": owner, "checkpoint": os.path.basename(start_from.path.rstrip("/")), "time": time.time()})
    start = time.time()
    try:
        end = (train_here if settings.in_trial else train_run)(cfg, payload, settings, name, extra)
    except Exception as e:
        write_status(settings, trial_id, {"status": "failed", "error": error_line(e), "wall_s": time.time() - start})
        raise
    write_status(settings, trial_id, {"status": "finished", "global_step": end.get("global_step"),
                                      "epochs_completed": end.get("epochs_completed"), "wall_s": time.time() - start})


def metric_check(settings: Settings, task: str):
    def check(metrics: dict) -> None:
        if settings.metric not in metrics:
            shown = ", ".join(sorted(k for k in metrics if k.startswith(("val_", "train_"))))
            raise ConfigError("tune.metric", f"{settings.metric} is not reported by task {task}", f"choose one of: {shown}")

    return check


def train_here(cfg, payload: dict, settings: Settings, name: str, extra: dict) -> dict:
    """The trial trains in this process: launcher train's loop (launcher.training.loop.run) with a
    TuneSession. Returns the run's end record; raises its error (NonFiniteLoss for a NaN loss).

    The actor is reused for the next trial, so nothing may outlive the run: the loop builds model,
    optimizer, loaders and loggers anew, setup_process resets threads and seeds, and the memory is
    released here (launcher.training.loop.release_memory) even when the trial fails or is stopped.
    """
    from launcher.training import loop  # lazy: torch, Lightning and the tasks, in the trial process only

    compat.set_function_trial_stop_timeout(TRIAL_STOP_TIMEOUT_S)
    prepared = payload["prepared"]
    mode = cfg.checkpoint.mode_for(settings.metric)
    run_log = LocalRunLog()
    callbacks = copy.deepcopy(ray.get(extra["callbacks"]))  # fresh callback state for every trial of the actor
    loop_config = {"cfg": to_dict(cfg), "meta": prepared.meta, "tokenizer": prepared.tokenizer, "data": dict(prepared.splits),
                   "run_log": run_log, "monitor": settings.metric, "mode": mode, **extra, "callbacks": callbacks}
    session = TuneSession(CheckpointStore(settings.train_storage, name, cfg.checkpoint.num_to_keep, mode), use_gpu=cfg.ray.use_gpu,
                          tune_checkpoints=settings.tune_checkpoints, check=metric_check(settings, cfg.task))
    try:
        loop.run(loop_config, session)
    finally:
        del loop_config, callbacks, session
        loop.release_memory()
    log = run_log.get()
    if log.get("fatal"):
        raise NonFiniteLoss(log["fatal"][-1]["message"])
    return (log.get("end") or [{}])[-1]


def train_run(cfg, payload: dict, settings: Settings, name: str, extra: dict) -> dict:
    """The trial runs one Ray Train job (several workers): its reports come back here and go on to Tune."""
    from ray.util.queue import Queue

    from launcher.training.fit import fit

    # Read here when the Train job is built, and passed on to its controller and workers by Ray:
    # the controller polls its workers every 2 s by default, and each report and the end of every
    # trial wait for a poll; its metrics exporter is of no use to a trial.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    box: dict = {}

    def work() -> None:
        try:
            box["outcome"] = fit(cfg, payload["prepared"], name=name, callbacks=[ForwardReports(queue)],
                                 storage=settings.train_storage, extra_loop_config=extra)
        except BaseException as e:  # noqa: BLE001 - handed to the trial driver's thread below
            box["error"] = e

    worker = threading.Thread(target=work, name=f"launcher-trial-{name}", daemon=True)
    worker.start()
    check = metric_check(settings, cfg.task)
    for metrics, checkpoint in _reports(queue, worker):
        check(metrics)
        tune.report(metrics, checkpoint=checkpoint if settings.tune_checkpoints else None)
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["outcome"].end


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
