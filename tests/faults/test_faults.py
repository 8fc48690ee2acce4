"""Worker, node and driver loss: the run resumes from its latest checkpoint and ends where an
uninterrupted run ends (same global_step, each epoch and step logged once, same exported model).

Faults come from outside (tests/helpers/faults.py): a thread waits for the k-th checkpoint in the run's Ray
storage and then kills a worker by PID, removes a node, or kills the driver. One short test runs in
the default suite (`make test` guards resume on its own); the rest are `slow` (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import faults
from tests.helpers.config import base_config
from tests.helpers.paths import REPO
from launcher.data.sampling import optimizer_steps

pytestmark = pytest.mark.ray

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN, WORKERS, BATCH, ACCUM = 240, 2, 4, 2


def _config(model, files, out, epochs=2, every=5, **sections):
    return base_config(model, files, out, train={"max_epochs": epochs}, checkpoint={"every_n_steps": every},
                       ray={"max_failures": 2}, **sections)


def _run_dir(cfg) -> str:
    from launcher import storage

    return os.path.join(cfg.storage_path(), storage.run_name(cfg))


def _train_with_fault(ray_session, cfg, sig, seed, last=3):
    """launcher's train_cmd.run in this thread; a fault thread signals a random worker after a random checkpoint."""
    from launcher.commands import train as train_cmd

    rng = random.Random(seed)
    after = rng.randint(1, last)  # an early one of 6-8 checkpoints: the kill always lands mid-training
    fault = faults.Fault(_run_dir(cfg), after, faults.signal_a_worker(ray_session.get_runtime_context().gcs_address, sig, rng),
                         seed=seed)
    fault.start()
    results = train_cmd.run(cfg)
    return results, fault.result()


def _check_resumed(results, info, epochs=2, n=N_TRAIN, test=True):
    steps = optimizer_steps(n, WORKERS, BATCH, ACCUM, epochs)
    assert results["restarts"] == 1, (results, info)
    # It resumed from the latest checkpoint (at least as new as the newest one registered before the
    # kill: never an older or merely the best one), not from scratch.
    assert len(results["resumed_steps"]) == 1, (results, info)
    assert info["registered_step"] <= results["resumed_steps"][0] < steps, (results["resumed_steps"], info)
    if test:
        assert results["test"]["weights"] == "best"
    return steps


def test_killed_worker_resumes_with_exact_step_count(ray_session, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    """The default suite's guard on resume (`make test`): SIGKILL of a random worker right after the first
    checkpoint; one restart from that checkpoint, every step and epoch once, the exact step count."""
    # Ray Train's controller polls the workers every 2 s, and each checkpoint waits for a poll: 0.5 s
    # here (read when the trainer is built) keeps this test short.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    out = str(tmp_path / "run")
    files = {k: v for k, v in sentiment_files.items() if k != "test"}  # no test pass: seconds saved
    cfg = _config(tiny_bert, files, out, every=2, data={"max_train_samples": 64, "max_length": 16})
    # 4 steps per epoch, 8 in all: checkpoints at steps 2, 4 (after validation), 6, 8; the kill lands after step 2
    results, info = _train_with_fault(ray_session, cfg, signal.SIGKILL, seed=int(time.time()), last=1)
    steps = _check_resumed(results, info, n=64, test=False)
    faults.assert_complete_history(out, results, steps, epochs=2)
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))


# ---------------------------------------------------------------------- slow: compared with a real uninterrupted run


@pytest.fixture(scope="module")
def reference(ray_session, tiny_bert, tmp_path_factory):
    """The uninterrupted run every slow fault test must reproduce."""
    from tests.helpers.data import sentiment_rows, write_csv
    from launcher.commands import train as train_cmd

    d = tmp_path_factory.mktemp("reference")
    files = {"train": write_csv(str(d / "train.csv"), sentiment_rows(N_TRAIN, seed=1)),
             "validation": write_csv(str(d / "val.csv"), sentiment_rows(30, seed=2)),
             "test": write_csv(str(d / "test.csv"), sentiment_rows(30, seed=3))}
    out = str(d / "run")
    results = train_cmd.run(_config(tiny_bert, files, out))
    faults.assert_complete_history(out, results, optimizer_steps(N_TRAIN, WORKERS, BATCH, ACCUM, 2), epochs=2)
    return {"files": files, "out": out, "results": results}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_worker_fault_matches_uninterrupted_run(ray_session, tiny_bert, reference, tmp_path, sig):
    """A killed (SIGKILL) or preempted (SIGTERM) worker: same steps, metrics and exported weights as without."""
    out = str(tmp_path / "run")
    cfg = _config(tiny_bert, reference["files"], out)
    results, info = _train_with_fault(ray_session, cfg, sig, seed=int(time.time()))
    steps = _check_resumed(results, info)
    faults.assert_complete_history(out, results, steps, epochs=2)
    faults.assert_same_run(results, reference["results"], out, reference["out"])


def _write_config(cfg, path: str) -> str:
    from launcher.config import to_dict

    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f)
    return path


@pytest.mark.slow
def test_killed_driver_then_resume(tiny_bert, reference, tmp_path):
    """`launcher train` killed with its whole process group (its local Ray too) mid-run; `--resume` finishes
    the run from its storage: same result as uninterrupted, and nothing is written until then."""
    out = str(tmp_path / "run")
    cfg = _config(tiny_bert, reference["files"], out)
    path = _write_config(cfg, str(tmp_path / "cfg.yaml"))
    # Secrets live in the environment of every process (as on a cluster): none may reach a file.
    secrets = {"HF_TOKEN": "hf_" + "Qx7" * 12, "WANDB_API_KEY": "f" * 40, "AWS_SECRET_ACCESS_KEY": "s3cr3t/" + "K" * 33}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **secrets)
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "train", path], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    try:
        registered = faults.wait_for_registered(_run_dir(cfg), random.randint(1, 4), timeout=600)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group: the driver and the Ray it started
        proc.wait(60)
        time.sleep(2)
        for pid in faults.session_processes(proc.pid):  # Ray processes that left the group
            os.kill(pid, signal.SIGKILL)
    assert not os.path.exists(os.path.join(out, "results.json")) and not os.path.exists(os.path.join(out, "best"))

    again = subprocess.run([sys.executable, "-m", "launcher", "train", path], capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 2 and "--resume to continue it" in again.stderr  # never silently continued

    resumed = subprocess.run([sys.executable, "-m", "launcher", "train", path, "--resume"], capture_output=True, text=True,
                             env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    steps = optimizer_steps(N_TRAIN, WORKERS, BATCH, ACCUM, 2)
    assert results["restarts"] == 0 and len(results["resumed_steps"]) == 1
    assert registered <= results["resumed_steps"][0] < steps, (results["resumed_steps"], registered)
    faults.assert_complete_history(out, results, steps, epochs=2)
    faults.assert_same_run(results, reference["results"], out, reference["out"])
    leaks = faults.files_containing(out, secrets.values())  # configs, results, logs, checkpoints, best/
    assert not leaks, leaks
    assert not any(v in resumed.stdout + resumed.stderr for v in secrets.values())


@pytest.mark.slow
def test_node_removed_from_two_node_cluster(tiny_bert, reference, tmp_path):
    """A simulated 2-node cluster (ray.cluster_utils.Cluster) loses the node of one worker after a
    checkpoint; a replacement node joins (as an autoscaler would) and the run resumes on it."""
    out = str(tmp_path / "run")
    cfg = _config(tiny_bert, reference["files"], out)
    cfg.ray.cpus_per_worker = 1.0  # one worker per 1-CPU node
    cfg.ray.storage_path = str(tmp_path / "shared-storage")  # "shared": every simulated node is this machine
    path = _write_config(cfg, str(tmp_path / "cfg.yaml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fault_cluster_run.py"), path, _run_dir(cfg)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert report["fault"]["removed_node"] and results["restarts"] >= 1, report
    steps = optimizer_steps(N_TRAIN, WORKERS, BATCH, ACCUM, 2)
    faults.assert_complete_history(out, results, steps, epochs=2)
    faults.assert_same_run(results, reference["results"], out, reference["out"])


# ---------------------------------------------------------------------- a deterministic error is not a fault


def _regression_files(tmp_path):
    from tests.helpers.data import sentiment_rows, write_csv

    rows = [{"text": r["text"], "label": 0.9 if r["label"] == "pos" else 0.1} for r in sentiment_rows(N_TRAIN, seed=1)]
    rows[17]["label"] = float("inf")  # one poisoned row: on one rank only, once per epoch
    val = [{"text": r["text"], "label": 0.9 if r["label"] == "pos" else 0.1} for r in sentiment_rows(30, seed=2)]
    return {"train": write_csv(str(tmp_path / "train.csv"), rows), "validation": write_csv(str(tmp_path / "val.csv"), val)}


@pytest.mark.slow
def test_nonfinite_loss_fails_once_without_ray_restarts(ray_session, tiny_bert, tmp_path):
    """An inf loss stops the run with one error naming the step, although ray.max_failures is 2:
    retrying from the last checkpoint would only hit the same row again."""
    from ray.util.state import list_actors

    from launcher.commands import train as train_cmd
    from launcher.errors import NonFiniteLoss

    def workers_ever_started() -> int:
        return len(list_actors(address=ray_session.get_runtime_context().gcs_address, limit=10000,
                               filters=[("class_name", "=", "RayTrainWorker")]))

    cfg = _config(tiny_bert, _regression_files(tmp_path), str(tmp_path / "run"), every=None)
    cfg.checkpoint.monitor, cfg.checkpoint.mode = "val_loss", "min"
    before = workers_ever_started()
    with pytest.raises(NonFiniteLoss, match=r"loss is inf at step \d+ \(epoch 1, batch \d+\): lower optim.lr"):
        train_cmd.run(cfg)
    assert workers_ever_started() - before == WORKERS  # one worker group, no restarts
    assert not os.path.exists(os.path.join(cfg.output_dir, "results.json"))


@pytest.mark.slow
def test_nonfinite_steps_skipped_when_configured(ray_session, tiny_bert, tmp_path):
    from launcher.commands import train as train_cmd

    cfg = _config(tiny_bert, _regression_files(tmp_path), str(tmp_path / "run"), every=None)
    cfg.checkpoint.monitor, cfg.checkpoint.mode = "val_loss", "min"
    cfg.train.skip_nonfinite_batches = True
    results = train_cmd.run(cfg)
    assert results["skipped_steps"] == 2  # the poisoned row's step, once per epoch
    assert results["global_step"] == optimizer_steps(N_TRAIN, WORKERS, BATCH, ACCUM, 2)
    import torch

    assert all(torch.isfinite(w).all() for w in faults.exported_weights(cfg.output_dir).values())
