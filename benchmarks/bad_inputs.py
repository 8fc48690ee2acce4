"""Time to the one-line error for bad data and model inputs, through the real CLI (`python -m launcher train`).

    python benchmarks/bad_inputs.py [--all] [--runs N]

Default: the five cases of issue 16 (missing label column, header-only CSV, a row with an empty text,
a model folder that does not exist, a QA file without an answers column); `--all`: every data/model
case of the catalogue (tests/integration/test_bad_inputs.py). Each case runs N times in a fresh
process; the median wall time and CPU time (user + system of the child) are printed, with the load.
Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.helpers.cli import run_cli  # noqa: E402
from tests.helpers.models import make_tiny_bert  # noqa: E402
from tests.integration.test_bad_inputs import CASES, DATA_MODEL_CASES  # noqa: E402

FIVE = ["label-column-missing", "file-header-only", "text-cell-empty", "model-folder-missing", "qa-answers-column-missing"]


def time_case(case, model: str) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = case.make(tmp, model)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = run_cli("train", *argv, cwd=tmp, env={"RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"})
        wall = time.time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, (proc.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--all", action="store_true", help="every data/model case of the catalogue")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    ids = DATA_MODEL_CASES if args.all else FIVE
    with tempfile.TemporaryDirectory() as models:
        model = make_tiny_bert(os.path.join(models, "tiny-bert"))
        print(f"{'case':34} {'wall s':>7} {'cpu s':>6}  load  error")
        for cid in ids:
            case = next(c for c in CASES if c.id == cid)
            if not case.root_ok and os.geteuid() == 0:
                continue  # root reads any file: no error to time
            runs = [time_case(case, model) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"{cid:34} {wall:7.2f} {cpu:6.2f} {os.getloadavg()[0]:5.1f}  {runs[-1][2][:110]}", flush=True)


if __name__ == "__main__":
    main()
