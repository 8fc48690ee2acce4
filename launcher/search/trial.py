"""One trial of `launcher tune`: its driver function, which runs a Ray Train job and passes its reports to Tune.

Ray Train V2 cannot be handed to a Tuner, so each trial is a small Tune function — the trial driver,
`trial_main` — that runs one Ray Train job through `launcher.training.fit.fit` (the same loop as
`launcher train`) and passes every validation report on to Tune. The job runs in a thread of the
trial driver; its reports reach the driver through a one-slot queue, so the driver can call
`tune.report(metrics, checkpoint=...)` itself. That is what Population Based Training needs:
Tune only copies a trial's weights into another trial if the trial reported a checkpoint to Tune,
which `ray.tune.integration.ray_train.TuneReportCallback` (metrics only) does not do.

A trial that starts from a Tune checkpoint (PBT's exploit, or a restored search) runs a fresh Train
job that resumes that checkpoint (`init_checkpoint`, see launcher.training.loop.train_loop) with its own,
possibly perturbed, hyperparameters (launcher.training.hyperparams.UseTrialHyperparameters).

What a trial process unpickles is kept light on purpose (object refs for the tokenised data, the
tokenizer and Lightning callbacks): a trial driver and its Train controller then start without
importing transformers or Lightning, which only the Train workers need.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from types import SimpleNamespace

from ray import tune
from ray.train import UserCallback

from launcher.config import from_dict
from launcher.data.sampling import to_table
from launcher.errors import ConfigError
from launcher.search.space import apply_params
from launcher.search.trials import Settings, write_status


def ship(prepared, monitor: str, callbacks: list) -> dict:
    """What every trial driver receives, as object refs: put once, and cheap to unpickle.

    The task object is replaced by what `launcher.training.fit.fit` reads of it (its monitor), so a trial
    process never imports the task module (and Lightning, transformers) itself.
    """
    import ray

    from launcher.training.hyperparams import UseTrialHyperparameters  # lazy: imports Lightning

    light = dataclasses.replace(prepared, task=SimpleNamespace(monitor=monitor), tokenizer=ray.put(prepared.tokenizer),
                                splits={k: ray.put(to_table(v)) for k, v in prepared.splits.items()})
    return {"prepared": light, "callbacks": ray.put(list(callbacks)),
            "callbacks_after_copy": ray.put(list(callbacks) + [UseTrialHyperparameters()])}


def trial_main(config: dict, base: dict, payload: dict, settings: Settings) -> None:
    """One trial: the config with this trial's values → one Ray Train job; reports go on to Tune."""
    from ray.util.queue import Queue

    from launcher.training.fit import fit

    # Read here when the Train job is built, and passed on to its controller and workers by Ray:
    # the controller polls its workers every 2 s by default, and each report and the end of every
    # trial wait for a poll; its metrics exporter is of no use to a trial.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_params(from_dict(base), {k: config[k] for k in settings.keys if k in config})
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
            box["outcome"] = fit(cfg, payload["prepared"], name=name, callbacks=[ForwardReports(queue)],
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
