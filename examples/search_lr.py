# python examples/search_lr.py
# Cluster: ray job submit --address http://<head>:8265 --working-dir . -- python examples/search_lr.py --storage s3://<bucket>/launcher
"""A learning-rate sweep for the bundled reviews example, written against the Python API.

Every learning rate in `--lrs` trains to the end (grid search, no early stopping), then the table
of trials is printed with the best epoch of each, and the best epoch of all trials is exported to
<output-dir>/best. `launcher.tune(config)` is the same flow as `launcher tune CONFIG`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import launcher  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="examples/configs/reviews.yaml", help="Base config (its tune: section is replaced).")
    p.add_argument("--lrs", default="1e-5,3e-5,1e-4,3e-4", help="Comma-separated learning rates.")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=2, help="Trials at the same time (1 worker each).")
    p.add_argument("--output-dir", default="runs/search_lr")
    p.add_argument("--storage", default=None, help="ray.storage_path (a shared path or s3:// / gs:// URI on a cluster).")
    p.add_argument("--overwrite", action="store_true", help="Replace an earlier sweep in --output-dir.")
    args = p.parse_args()

    overrides = ["--output_dir", args.output_dir, "--train.max_epochs", str(args.epochs), "--ray.num_workers", "1",
                 "--ray.max_failures", "0"]
    if args.storage:
        overrides += ["--ray.storage_path", args.storage]
    cfg, _ = launcher.parse_config([args.config, *overrides], prog="search_lr.py")
    cfg.tune.search_alg, cfg.tune.scheduler, cfg.tune.num_samples = "grid", "fifo", 1
    cfg.tune.max_concurrent_trials = args.concurrent
    cfg.tune.search_space = {"optim.lr": {"grid": [float(x) for x in args.lrs.split(",")]}}

    result = launcher.tune(cfg, overwrite=args.overwrite)

    metric = result.metric
    print(f"\n{'lr':>9}  {'status':<13} {'best ' + metric:>18}  {'at epoch':>8}")
    for row in sorted(result.trials, key=lambda r: r["optim.lr"]):
        best = row[f"best_{metric}"]
        shown = f"{best:.4f}" if isinstance(best, float) and math.isfinite(best) else "-"
        print(f"{row['optim.lr']:9.1e}  {row['status']:<13} {shown:>18}  {row['best_epoch'] or '-':>8}")
    if result.best is None:
        print("no trial finished an epoch", file=sys.stderr)
        return 1
    print(f"\nbest: lr {result.best['params']['optim.lr']:.1e} at epoch {result.best['epoch']:g} "
          f"({metric} {result.best['value']:.4f}) -> {result.best_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
