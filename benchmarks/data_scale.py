# python benchmarks/data_scale.py                      (20k / 200k / 2M rows; the 2M in-memory run takes many minutes on 2 cores)
# python benchmarks/data_scale.py --rows 20000 200000 --steps 30   (the reduced run recorded in docs/benchmarks.md)
"""Streaming (data.streaming true) vs in-memory training data, side by side at growing data sizes.

For each row count, a parquet file of short review-like texts (the tiny test vocabulary) is trained
for `--steps` optimizer steps with a tiny BERT (tests/helpers/models.py) on 2 Ray Train workers
(ray.cpus_per_worker auto: streaming keeps 1 CPU for Ray Data), each variant in a fresh driver
process through `launcher.commands.train.run`. Measured per run:
- time to first step: from the driver process's start to rank 0's first optimizer step (a Lightning
  callback handed to the workers writes the wall time);
- driver peak RSS (the driver process only: reading and tokenising in memory happens there; Ray
  Data's tasks run in Ray worker processes);
- steady-state samples/s: global batch x steps / time, over the steps after the first 5.
Prints `RATIO <name> <value>` lines (streaming ÷ in-memory) and appends a dated section to
docs/benchmarks.md with --record.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
START = time.time()
WARM_STEPS = 5


def write_rows(path: str, n: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.helpers.data import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(seed)
    chunk = 100_000
    writer = None
    for start in range(0, n, chunk):
        texts, labels = [], []
        for i in range(start, min(n, start + chunk)):
            label = i % 2
            words = [rng.choice(FILLER) for _ in range(rng.randint(4, 20))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
            texts.append(" ".join(words))
            labels.append("pos" if label else "neg")
        table = pa.table({"text": texts, "label": labels})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def child(mode: str, data: str, validation: str, model: str, steps: int, out: str) -> None:
    """One measured run in this (fresh) process; prints one JSON line."""
    import lightning.pytorch as pl

    from launcher.commands.train import run
    from launcher.training import fit as fit_lib
    from tests.helpers.config import base_config

    times_path = os.path.join(out, "step_times.json")

    class StepTimes(pl.Callback):  # pickled to the workers by value: rank 0 writes each optimizer step's wall time
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_rank == 0 and trainer.global_step > len(self.times):
                self.times.append(time.time())
                with open(times_path, "w") as f:
                    json.dump(self.times, f)

    original = fit_lib.fit  # train.run imports fit when it runs: hand the callback to the workers
    fit_lib.fit = lambda cfg, prepared, **kw: original(cfg, prepared, extra_loop_config={"callbacks": [StepTimes()]}, **kw)
    cfg = base_config(model, {"train": data, "validation": validation}, out, data={"streaming": mode == "streaming"},
                      train={"max_steps": steps, "batch_size": 16, "accumulate_grad_batches": 1},
                      ray={"cpus_per_worker": "auto"}, logging={"csv": False})
    results = run(cfg, overwrite=True)
    times = json.load(open(times_path))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steady = times[WARM_STEPS:]
    rate = (len(steady) - 1) * 16 * 2 / (steady[-1] - steady[0]) if len(steady) > 1 else None
    print("RESULT " + json.dumps({"mode": mode, "first_step_s": round(times[0] - START, 1), "driver_peak_rss_mib": round(rss_mib),
                                  "samples_per_s": round(rate, 1) if rate else None, "global_step": results["global_step"]}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--record", action="store_true", help="append the results to docs/benchmarks.md")
    p.add_argument("--child", nargs=6, metavar=("MODE", "DATA", "VALIDATION", "MODEL", "STEPS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, data, validation, model, steps, out = args.child
        child(mode, data, validation, model, int(steps), out)
        return 0
    from tests.helpers.data import sentiment_rows, write_csv
    from tests.helpers.models import make_tiny_bert

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_bert(os.path.join(tmp, "model"))
        validation = write_csv(os.path.join(tmp, "val.csv"), sentiment_rows(64, seed=9))
        for n in args.rows:
            data = os.path.join(tmp, f"train-{n}.parquet")
            write_rows(data, n)
            for mode in ("in-memory", "streaming"):
                out = os.path.join(tmp, f"run-{n}-{mode}")
                proc = subprocess.run([sys.executable, __file__, "--child", mode, data, validation, model, str(args.steps), out],
                                      capture_output=True, text=True, cwd=ROOT)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{mode} at {n} rows failed")
                result = {"rows": n, **json.loads(line[len("RESULT "):])}
                print(json.dumps(result), flush=True)
                rows_out.append(result)
            s, m = rows_out[-1], rows_out[-2]
            print(f"RATIO first_step_{n} {s['first_step_s'] / m['first_step_s']:.3f}")
            print(f"RATIO driver_rss_{n} {s['driver_peak_rss_mib'] / m['driver_peak_rss_mib']:.3f}")
            if s["samples_per_s"] and m["samples_per_s"]:
                print(f"RATIO samples_per_s_{n} {s['samples_per_s'] / m['samples_per_s']:.3f}")
    if args.record:
        record(rows_out, args)
    return 0


def record(rows: list[dict], args) -> None:
    lines = [f"\n## Streaming vs in-memory training data ({datetime.date.today()}, `python benchmarks/data_scale.py --rows "
             f"{' '.join(map(str, args.rows))} --steps {args.steps}`)\n",
             "Tiny BERT, 2 Train workers (ray.cpus_per_worker auto), batch 16, parquet of short texts, each run a fresh driver.\n",
             "| rows | mode | first step (s) | driver peak RSS (MiB) | samples/s (steady) |", "|---|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['mode']} | {r['first_step_s']} | {r['driver_peak_rss_mib']} | {r['samples_per_s']} |" for r in rows]
    with open(os.path.join(ROOT, "docs", "benchmarks.md"), "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
