"""Fault injection from outside the code under test (imported by tests/faults/test_faults.py and fault_cluster_run.py).

Nothing in launcher knows it is being tested: a thread watches the run's Ray storage for checkpoints
and then kills a Ray Train worker by PID (found through Ray's state API of *this* test's cluster),
removes a node, or kills a whole driver process group.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import threading
import time
from typing import Callable, Optional


def checkpoints_in(run_dir: str) -> set:
    try:
        return {n for n in os.listdir(run_dir) if n.startswith("checkpoint_")}
    except FileNotFoundError:
        return set()


def wait_for_checkpoints(run_dir: str, count: int, timeout: float = 600.0, poll: float = 0.05) -> int:
    """Blocks until `count` distinct checkpoint folders have appeared (old ones may be deleted meanwhile)."""
    seen: set = set()
    deadline = time.time() + timeout
    while len(seen) < count:
        if time.time() > deadline:
            raise TimeoutError(f"only {len(seen)} of {count} checkpoints appeared in {run_dir}")
        seen |= checkpoints_in(run_dir)
        time.sleep(poll)
    return len(seen)


def train_worker_pids(gcs_address: str) -> list[int]:
    """PIDs of the alive Ray Train workers of the Ray cluster at `gcs_address` (never another cluster's)."""
    from ray.util.state import list_actors

    actors = list_actors(address=gcs_address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


def latest_registered(run_dir: str) -> Optional[tuple[str, int]]:
    """(folder, step) of the newest checkpoint Ray's checkpoint manager has registered, from the
    snapshot it keeps in the run's storage; None before the first one."""
    try:
        with open(os.path.join(run_dir, "checkpoint_manager_snapshot.json")) as f:
            latest = json.load(f).get("latest_checkpoint_result")
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or being rewritten
        return None
    return (latest["checkpoint_dir_name"], int(latest["metrics"]["step"])) if latest else None


def wait_for_registered(run_dir: str, count: int, timeout: float = 600.0, poll: float = 0.05) -> int:
    """Blocks until Ray has registered `count` checkpoints of the run; returns the step of the latest."""
    seen: dict = {}
    deadline = time.time() + timeout
    while len(seen) < count:
        if time.time() > deadline:
            raise TimeoutError(f"only {len(seen)} of {count} checkpoints were registered in {run_dir}")
        latest = latest_registered(run_dir)
        if latest:
            seen[latest[0]] = latest[1]
        time.sleep(poll)
    return max(seen.values())


class Fault(threading.Thread):
    """After Ray registered the `after`-th checkpoint of `run_dir` (+ a random delay below `jitter`
    s), run `action`. `info["registered_step"]`: the newest registered step before the fault."""

    def __init__(self, run_dir: str, after: int, action: Callable[[], dict], jitter: float = 0.3, seed: Optional[int] = None):
        super().__init__(daemon=True)
        self.run_dir, self.after, self.action, self.jitter = run_dir, after, action, jitter
        self.rng = random.Random(seed)
        self.info: dict = {}
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            wait_for_registered(self.run_dir, self.after)
            time.sleep(self.rng.uniform(0, self.jitter))
            step = latest_registered(self.run_dir)[1]
            self.info = {"after_checkpoints": self.after, "registered_step": step, **self.action()}
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def result(self, timeout: float = 60.0) -> dict:
        self.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.info, "the fault never fired"
        return self.info


def signal_a_worker(gcs_address: str, sig: int = signal.SIGKILL, rng: Optional[random.Random] = None) -> Callable[[], dict]:
    def act() -> dict:
        pids = train_worker_pids(gcs_address)
        assert pids, "no alive RayTrainWorker to signal"
        pid = (rng or random).choice(pids)
        os.kill(pid, sig)
        return {"pid": pid, "signal": signal.Signals(sig).name}

    return act


# ---------------------------------------------------------------------- what a run left behind


def csv_rows(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "logs", "csv", "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def logged_train_steps(rows: list[dict]) -> list[int]:
    return [int(r["step"]) for r in rows if r.get("train_loss_step")]


def logged_val_epochs(rows: list[dict]) -> list[int]:
    return [int(r["epoch"]) for r in rows if r.get("val_loss")]


def assert_complete_history(output_dir: str, results: dict, steps: int, epochs: int) -> None:
    """Every optimizer step and every epoch appears once in the logs and results, none twice, none missing."""
    assert results["global_step"] == steps
    assert results["epochs_completed"] == epochs
    assert [e["epoch"] for e in results["epochs"]] == [float(k) for k in range(1, epochs + 1)]
    rows = csv_rows(output_dir)
    assert logged_train_steps(rows) == list(range(steps)), logged_train_steps(rows)
    assert logged_val_epochs(rows) == list(range(epochs)), logged_val_epochs(rows)
    with open(os.path.join(output_dir, "results.json")) as f:
        assert json.load(f)["global_step"] == steps


def exported_weights(output_dir: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(output_dir, "best", "model.safetensors"))


def assert_same_run(results: dict, reference: dict, output_dir: str, reference_dir: str, tol: float = 1e-5) -> None:
    """An interrupted run that resumed exactly ends where the uninterrupted one did."""
    import pytest
    import torch

    assert results["global_step"] == reference["global_step"]
    assert results["best_epoch"] == reference["best_epoch"]
    for got, want in zip(results["epochs"], reference["epochs"], strict=True):
        for key in ("epoch", "step", "val_loss", "val_accuracy"):
            assert got[key] == pytest.approx(want[key], abs=tol), (key, got, want)
    for key, value in (reference.get("test") or {}).items():
        if isinstance(value, float):
            assert results["test"][key] == pytest.approx(value, abs=tol), key
    a, b = exported_weights(output_dir), exported_weights(reference_dir)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= tol
    assert torch.isfinite(next(iter(a.values()))).all()


def files_containing(root: str, needles) -> list[str]:
    """Files under `root` (any format, checkpoints included) whose bytes contain one of `needles`."""
    needles = [n.encode() for n in needles]
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            if any(n in data for n in needles):
                hits.append(path)
    return hits


def session_processes(driver_pid: int) -> list[int]:
    """PIDs of processes of the Ray session that the driver with this PID started (its session folder
    ends with the driver's PID); used to clean up after killing that driver."""
    import re

    pattern = re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{driver_pid}\b".encode())
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if pattern.search(f.read()):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids
