# python benchmarks/tune_overhead.py            (about 15 minutes on 2 idle cores; --quick: tiny BERT, a few minutes)
"""What `launcher tune` costs on top of the training itself, on a 2-CPU local Ray.

1. Trial start → first optimizer step: from the moment Tune starts a trial to that trial's first
   optimizer step, for trials on a reused actor (one-worker trials train in the trial's own process,
   launcher.search.trial) and for the first trial of each actor, split into: trial start → Lightning
   fit started → first optimizer step ended.
2. An 8-trial ASHA search (2 at a time) against one full trial of the same config (FIFO, one sample).
3. Whole processes: `launcher tune` running 4 one-worker trials one at a time against one
   `launcher train` of the same config (each CLI starts its own Ray).
4. Memory: RSS of the reused trial actor at the end of each of 10 sequential short trials.

Prints `RATIO <name> <value>` lines (targets: reused trial's first step / 3 s <= 1, ASHA-8 / one
trial <= 2.5, 4 sequential trials / one train <= 2, actor RSS growth <= 0.05) and writes the
numbers as JSON next to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning.pytorch as pl  # noqa: E402
from ray import tune as ray_tune  # noqa: E402

from launcher.config import parsing
from launcher.commands import tune as tune_cmd  # noqa: E402


class FirstStep(pl.Callback):
    """Runs where the trial trains: writes its process, when fit started, when the first optimizer
    step ended and the process's RSS at the end of fit."""

    def __init__(self, folder: str):
        self.folder = folder
        self.record: dict = {}

    def _write(self, pl_module):
        trial = os.path.basename(pl_module.cfg.output_dir.rstrip("/"))
        with open(os.path.join(self.folder, f"{trial}.json"), "w") as f:
            json.dump(self.record, f)

    def on_fit_start(self, trainer, pl_module):
        import psutil

        self.record = {"pid": os.getpid(), "worker_process": psutil.Process().create_time(), "fit_start": time.time()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1 and trainer.global_rank == 0 and "first_step" not in self.record:
            self.record["first_step"] = time.time()
            self._write(pl_module)

    def on_fit_end(self, trainer, pl_module):
        import psutil

        if trainer.global_rank == 0:
            self.record["rss"] = psutil.Process().memory_info().rss
            self._write(pl_module)


class Timeline(ray_tune.Callback):
    """Driver side: when each trial started and ended, and this process's RSS after each trial."""

    def __init__(self):
        self.start, self.end, self.rss = {}, {}, []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.start.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info):
        import psutil

        self.end[trial.trial_id] = time.time()
        self.rss.append(psutil.Process().memory_info().rss)

    on_trial_error = on_trial_complete


def search(base_args: list[str], out: str, extra: list[str], folder: str, timeline: Timeline):
    cfg, _ = parsing.parse(base_args + ["--output_dir", out] + extra, prog="tune_overhead")
    start = time.time()
    result = tune_cmd.run(cfg, overwrite=True, trial_callbacks=[FirstStep(folder)], tune_callbacks=[timeline], verbose=False)
    return result, time.time() - start


def overheads(folder: str, timeline: Timeline) -> dict:
    """Per trial, in start order: seconds from Tune's start of the trial to fit start and to the first
    step, and whether the trial ran on an actor that had run an earlier trial (`reused`)."""
    out, seen = {}, set()
    for trial in sorted(timeline.start, key=timeline.start.get):
        path = os.path.join(folder, f"{trial}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            t = json.load(f)
        if "first_step" not in t:
            continue
        s = timeline.start[trial]
        out[trial] = {"reused": t["pid"] in seen, "fit_start_s": round(t["fit_start"] - s, 2),
                      "first_step_s": round(t["first_step"] - s, 2), "rss_mib": round(t.get("rss", 0) / 2**20, 1)}
        seen.add(t["pid"])
    return out


def whole_process(argv: list[str]) -> float:
    """Wall seconds of one launcher CLI process (it starts a Ray of its own, as a user's run does)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "launcher"] + argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"launcher {' '.join(argv[:2])} failed:\n{proc.stdout[-3000:]}")
    return wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--config", default=os.path.join(ROOT, "examples", "configs", "reviews.yaml"))
    p.add_argument("--quick", action="store_true", help="A tiny BERT built here instead of MiniLM-L6 (minutes, not a quarter hour).")
    p.add_argument("--train-samples", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--output-dir", default=os.path.join(tempfile.gettempdir(), "launcher-bench-tune"))
    p.add_argument("--skip", default="", help="Comma-separated parts to skip: sequential, asha, memory.")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.output_dir, exist_ok=True)
    common = [args.config, "--ray.num_cpus", "2", "--ray.num_workers", "1", "--ray.cpus_per_worker", "1",
              "--ray.max_failures", "0", "--train.accumulate_grad_batches", "1", "--data.max_length", "64",
              "--data.max_train_samples", str(args.train_samples), "--data.test_file", "null",
              "--logging.tensorboard", "false", "--logging.csv", "false", "--logging.progress_every_s", "600",
              "--checkpoint.num_to_keep", "1"]
    if args.quick:
        from tests.helpers.models import make_tiny_bert

        model = make_tiny_bert(os.path.join(args.output_dir, "tiny-bert"))
        common += ["--model.name_or_path", model, "--data.max_length", "32"]
    numbers: dict = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0], "config": common}

    # 3 first, before this process starts a Ray of its own: two whole CLI processes, same config.
    if "sequential" not in skip:
        one_epoch = common + ["--train.max_epochs", "1"]
        train_wall = whole_process(["train"] + one_epoch + ["--output_dir", os.path.join(args.output_dir, "cli-train"), "--overwrite"])
        tune_wall = whole_process(["tune"] + one_epoch + [
            "--output_dir", os.path.join(args.output_dir, "cli-tune"), "--overwrite", "--tune.num_samples", "4",
            "--tune.scheduler", "fifo", "--tune.max_concurrent_trials", "1",
            "--tune.search_space", json.dumps({"optim.lr": {"loguniform": [1e-5, 3e-4]}})])
        numbers.update(cli_train_wall_s=round(train_wall, 1), cli_tune_4_sequential_wall_s=round(tune_wall, 1))
        print(f"launcher train: {train_wall:.1f}s; launcher tune, 4 one-worker trials one at a time: {tune_wall:.1f}s")
        print(f"RATIO tune_4_sequential_over_one_train {tune_wall / train_wall:.3f}")

    # Ray starts before the clock does: every search below then finds it running (a one-trial wall
    # that included Ray's start would flatter the ASHA ratio).
    from launcher.distributed import cluster

    cluster.init_ray(parsing.parse(common + ["--output_dir", args.output_dir], prog="tune_overhead")[0])

    # 1 + 2a: one full trial (FIFO, one sample): its wall time and its overhead to the first step.
    one_folder = os.path.join(args.output_dir, "first-step-one")
    os.makedirs(one_folder, exist_ok=True)
    timeline = Timeline()
    fixed = ["--tune.search_alg", "grid", "--tune.num_samples", "1", "--tune.scheduler", "fifo",
             "--tune.search_space", json.dumps({"optim.lr": {"grid": [1e-4]}})]
    _, one_wall = search(common + ["--train.max_epochs", str(args.epochs)], os.path.join(args.output_dir, "one"), fixed,
                         one_folder, timeline)
    numbers["one_trial_wall_s"] = round(one_wall, 1)
    numbers["one_trial"] = overheads(one_folder, timeline)
    print(f"one full trial: {one_wall:.1f}s; {json.dumps(numbers['one_trial'])}")

    if "asha" not in skip:
        folder = os.path.join(args.output_dir, "first-step-asha")
        os.makedirs(folder, exist_ok=True)
        timeline = Timeline()
        asha = ["--tune.num_samples", "8", "--tune.scheduler", "asha", "--tune.max_concurrent_trials", "2", "--tune.seed", "0",
                "--tune.search_space", json.dumps({"optim.lr": {"loguniform": [1e-5, 3e-4]},
                                                   "scheduler.warmup_ratio": {"uniform": [0.0, 0.2]}})]
        result, wall = search(common + ["--train.max_epochs", str(args.epochs)], os.path.join(args.output_dir, "asha"), asha,
                              folder, timeline)
        per_trial = overheads(folder, timeline)
        reused = [v["first_step_s"] for v in per_trial.values() if v["reused"]]
        fresh = [v["first_step_s"] for v in per_trial.values() if not v["reused"]]
        numbers.update(asha_wall_s=round(wall, 1), asha_statuses=[r["status"] for r in result.trials],
                       asha_epochs=sum(float(r["epochs_run"] or 0) for r in result.trials), asha_trials=per_trial)
        numbers["reused_trial_first_step_s"] = round(statistics.median(reused), 2) if reused else None
        numbers["fresh_actor_first_step_s"] = round(statistics.median(fresh), 2) if fresh else None
        print(f"8-trial ASHA: {wall:.1f}s, {numbers['asha_epochs']:g} epochs in all; first step after "
              f"{sorted(reused)} s on reused actors (median {numbers['reused_trial_first_step_s']}), "
              f"{sorted(fresh)} s on new actors")
        if numbers["reused_trial_first_step_s"] is not None:
            print(f"RATIO tune_reused_trial_first_step_over_3s {numbers['reused_trial_first_step_s'] / 3:.3f}")
        print(f"RATIO tune_asha8_over_one_trial {wall / one_wall:.3f}")

    if "memory" not in skip:
        timeline = Timeline()
        folder = os.path.join(args.output_dir, "first-step-memory")
        os.makedirs(folder, exist_ok=True)
        ten = ["--tune.num_samples", "10", "--tune.scheduler", "fifo", "--tune.max_concurrent_trials", "1",
               "--tune.search_space", json.dumps({"optim.lr": {"loguniform": [1e-5, 3e-4]}})]
        search(common + ["--train.max_epochs", "1", "--data.max_train_samples", "64"], os.path.join(args.output_dir, "memory"),
               ten, folder, timeline)
        rss = timeline.rss
        growth = (rss[-1] - rss[0]) / rss[0] if len(rss) >= 2 else float("nan")
        numbers.update(driver_rss_mib=[round(r / 2**20, 1) for r in rss], driver_rss_growth=round(growth, 4))
        print(f"driver RSS after each of {len(rss)} trials (MiB): {numbers['driver_rss_mib']}")
        trials = overheads(folder, timeline)
        actor = [v["rss_mib"] for v in trials.values() if v["rss_mib"]]
        actor_growth = (actor[-1] - actor[0]) / actor[0] if len(actor) >= 2 else float("nan")
        numbers.update(actor_rss_mib=actor, actor_rss_growth=round(actor_growth, 4),
                       actor_reused=sum(v["reused"] for v in trials.values()))
        print(f"trial actor RSS at the end of each trial (MiB; {numbers['actor_reused']} of {len(actor)} on a reused actor): {actor}")
        print(f"RATIO tune_actor_rss_growth_10_trials {actor_growth:.4f}")

    numbers["load_avg_at_end"] = os.getloadavg()[0]
    with open(os.path.join(args.output_dir, "tune_overhead.json"), "w") as f:
        json.dump(numbers, f, indent=2)
    print(f"numbers: {os.path.join(args.output_dir, 'tune_overhead.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
