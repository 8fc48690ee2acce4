# python benchmarks/tune_overhead.py            (about 15 minutes on 2 idle cores; --quick: tiny BERT, a few minutes)
"""What `launcher tune` costs on top of the training itself, on a 2-CPU local Ray.

1. Per-trial overhead: from the moment Tune starts a trial to that trial's first optimizer step
   (median over the trials of one search), split into: trial start → Ray Train worker process
   created → Lightning fit started → first optimizer step ended.
2. An 8-trial ASHA search against one full trial of the same config (FIFO, one sample).
3. Driver memory: RSS of this process after each of 10 sequential short trials.

Prints `RATIO <name> <value>` lines (targets: trial overhead / 8 s <= 1, ASHA-8 / one trial <= 3,
driver RSS growth <= 0.05) and writes the numbers as JSON next to --output-dir.
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
    """Runs in the trial's Ray Train worker: writes when fit started and when the first optimizer step ended."""

    def __init__(self, folder: str):
        self.folder = folder
        self.fit_start = None

    def on_fit_start(self, trainer, pl_module):
        self.fit_start = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1 and trainer.global_rank == 0 and self.fit_start:
            import psutil

            trial = os.path.basename(pl_module.cfg.output_dir.rstrip("/"))
            with open(os.path.join(self.folder, f"{trial}.json"), "w") as f:
                json.dump({"worker_process": psutil.Process().create_time(), "fit_start": self.fit_start,
                           "first_step": time.time()}, f)
            self.fit_start = None  # once per worker group


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
    out = {}
    for name in os.listdir(folder):
        trial = name.removesuffix(".json")
        if trial in timeline.start:
            with open(os.path.join(folder, name)) as f:
                t = json.load(f)
            s = timeline.start[trial]
            out[trial] = {"worker_process_s": round(t["worker_process"] - s, 2), "fit_start_s": round(t["fit_start"] - s, 2),
                          "first_step_s": round(t["first_step"] - s, 2)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--config", default=os.path.join(ROOT, "examples", "configs", "reviews.yaml"))
    p.add_argument("--quick", action="store_true", help="A tiny BERT built here instead of MiniLM-L6 (minutes, not a quarter hour).")
    p.add_argument("--train-samples", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--output-dir", default=os.path.join(tempfile.gettempdir(), "launcher-bench-tune"))
    p.add_argument("--skip", default="", help="Comma-separated parts to skip: overhead, asha, memory.")
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

    if "asha" not in skip or "overhead" not in skip:
        folder = os.path.join(args.output_dir, "first-step-asha")
        os.makedirs(folder, exist_ok=True)
        timeline = Timeline()
        asha = ["--tune.num_samples", "8", "--tune.scheduler", "asha", "--tune.max_concurrent_trials", "2", "--tune.seed", "0",
                "--tune.search_space", json.dumps({"optim.lr": {"loguniform": [1e-5, 3e-4]},
                                                   "scheduler.warmup_ratio": {"uniform": [0.0, 0.2]}})]
        result, wall = search(common + ["--train.max_epochs", str(args.epochs)], os.path.join(args.output_dir, "asha"), asha,
                              folder, timeline)
        per_trial = overheads(folder, timeline)
        first = [v["first_step_s"] for v in per_trial.values()]
        numbers.update(asha_wall_s=round(wall, 1), asha_statuses=[r["status"] for r in result.trials],
                       asha_epochs=sum(float(r["epochs_run"] or 0) for r in result.trials), asha_trials=per_trial)
        numbers["trial_overhead_s"] = round(statistics.median(first), 2) if first else None
        print(f"8-trial ASHA: {wall:.1f}s, {numbers['asha_epochs']:g} epochs in all; first step after "
              f"{sorted(first)} s (median {numbers['trial_overhead_s']})")
        if numbers["trial_overhead_s"] is not None:
            print(f"RATIO tune_trial_overhead_over_8s {numbers['trial_overhead_s'] / 8:.3f}")
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
        print(f"RATIO tune_driver_rss_growth_10_trials {growth:.4f}")

    numbers["load_avg_at_end"] = os.getloadavg()[0]
    with open(os.path.join(args.output_dir, "tune_overhead.json"), "w") as f:
        json.dump(numbers, f, indent=2)
    print(f"numbers: {os.path.join(args.output_dir, 'tune_overhead.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
