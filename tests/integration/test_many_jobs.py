"""Many jobs on one cluster: four `launcher train` jobs and one `launcher tune`, submitted at once to one
local head (`launcher submit` and plain `ray job submit`), share its 2 CPUs in fractions and one run
storage (as `$LAUNCHER_STORAGE` is shared on a cluster head).

All finish, each output_dir holds only its own run (a sixth job started on the output_dir of another at
the same moment is refused), the run names in the shared storage never collide,
`ray job stop` of one job leaves the others and its own checkpoints intact, and the head is healthy
afterwards. The head is this test's own (`ray start --head --block`, ended by its PID).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

from tests.helpers import faults
from tests.helpers.cluster import VENV_BIN, start_head

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

RAY = os.path.join(VENV_BIN, "ray")
TUNE = {"num_samples": 2, "search_alg": "grid", "scheduler": "fifo", "max_concurrent_trials": 1,
        "search_space": {"optim.lr": {"grid": [5e-3, 8e-3]}}}


@pytest.fixture
def head():
    h = start_head(num_cpus=2)
    yield h
    h.stop()


def _run_name(out: str, storage_path: str) -> str:
    from launcher import storage
    from launcher.config import Config

    cfg = Config(output_dir=out)
    cfg.ray.storage_path = storage_path
    return storage.run_name(cfg)


def _ray_job(head, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", *args, "--address", head.address], env={**os.environ, **head.client_env},
                          capture_output=True, text=True, timeout=timeout)


def _wait_terminal(head, job_ids, timeout: float) -> dict:
    from ray.job_submission import JobSubmissionClient

    # The token in an explicit header: this process's Ray config stays untouched.
    with open(head.client_env["RAY_AUTH_TOKEN_PATH"]) as f:
        client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {f.read().strip()}"})
    deadline = time.time() + timeout
    while True:
        states = {j: client.get_job_status(j) for j in job_ids}
        if all(s.is_terminal() for s in states.values()) or time.time() > deadline:
            return {j: s.value for j, s in states.items()}
        time.sleep(5)


def test_four_trains_and_a_tune_on_one_head(head, project, tmp_path):
    storage_path = str(tmp_path / "shared-storage")
    # Same basename for every output_dir: the run names in the shared storage must still differ.
    outs = {j: str(tmp_path / j / "run") for j in ("many-a", "many-b", "many-c", "many-d", "many-tune")}
    common = ["--ray.cpus_per_worker", "0.25", "--ray.storage_path", storage_path]
    with open("tune.yaml", "w") as f:
        yaml.safe_dump({**yaml.safe_load(open("cfg.yaml")), "tune": TUNE}, f)
    env = {**os.environ, **head.client_env}
    # --shared: the storage folder is one every node of this (one-node) cluster sees; without it
    # `launcher submit` refuses a local ray.storage_path on a cluster that may gain nodes.
    launcher = [sys.executable, "-m", "launcher", "submit"]
    plain = [RAY, "job", "submit", "--address", head.address, "--no-wait", "--working-dir", ".", "--submission-id"]
    commands = {
        "many-a": launcher + ["cfg.yaml", "--address", head.address, "--installed", "--shared", storage_path,
                              "--submission-id", "many-a", "--"],
        "many-b": launcher + ["cfg.yaml", "--address", head.address, "--installed", "--shared", storage_path,
                              "--submission-id", "many-b", "--"],
        "many-c": plain + ["many-c", "--", "python", "-m", "launcher", "train", "cfg.yaml"],
        # The job that gets stopped: long enough to be mid-run when `ray job stop` comes.
        "many-d": plain + ["many-d", "--", "python", "-m", "launcher", "train", "cfg.yaml", "--train.max_epochs", "40"],
        "many-tune": launcher + ["tune.yaml", "--address", head.address, "--installed", "--shared", storage_path,
                                 "--command", "tune", "--submission-id", "many-tune", "--"],
    }
    # A sixth job aimed at many-a's output_dir at the same moment: exactly one of the two may run there.
    commands["many-dup"] = plain + ["many-dup", "--", "python", "-m", "launcher", "train", "cfg.yaml"]
    dirs = {**outs, "many-dup": outs["many-a"]}
    procs = {j: subprocess.Popen(cmd + ["--output_dir", dirs[j], *common], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for j, cmd in commands.items()}
    for j, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, (j, out[-3000:])

    # Stop many-d once Ray has registered its first checkpoints; the others go on.
    d_run = os.path.join(storage_path, _run_name(outs["many-d"], storage_path))
    faults.wait_for_registered(d_run, 2, timeout=900)
    stopped = _ray_job(head, "stop", "many-d")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    states = _wait_terminal(head, list(commands), timeout=1200)
    logs = {j: _ray_job(head, "logs", j).stdout[-2500:] for j, s in states.items() if s != "SUCCEEDED"}
    # The pair on one output_dir: one ran, the other was refused before touching it (whichever came second).
    pair = sorted([states.pop("many-a"), states.pop("many-dup")])
    assert pair == ["FAILED", "SUCCEEDED"], (pair, logs)
    loser = "many-a" if "many-a" in logs else "many-dup"
    assert any(why in logs[loser] for why in ("is in use by another run right now", "is not empty")), logs[loser]
    assert states == {**{j: "SUCCEEDED" for j in states}, "many-d": "STOPPED"}, (states, logs)

    # Each output_dir holds its own run, and only that (the Ray state lives in the shared storage).
    for j in ("many-a", "many-b", "many-c"):
        with open(os.path.join(outs[j], "results.json")) as f:
            results = json.load(f)
        assert results["global_step"] == 3, (j, results)
        with open(os.path.join(outs[j], "config.yaml")) as f:
            assert yaml.safe_load(f)["output_dir"] == outs[j]
        assert os.path.isfile(os.path.join(outs[j], "best", "model.safetensors"))
        assert not os.path.exists(os.path.join(outs[j], "ray")) and not os.path.exists(os.path.join(outs[j], "trials"))
    with open(os.path.join(outs["many-tune"], "best.json")) as f:
        best = json.load(f)
    trials = TUNE["num_samples"] * len(TUNE["search_space"]["optim.lr"]["grid"])  # Tune repeats the grid num_samples times
    assert best["config"]["output_dir"] == outs["many-tune"] and len(os.listdir(os.path.join(outs["many-tune"], "trials"))) == trials
    assert not os.path.exists(os.path.join(outs["many-d"], "results.json"))

    # Run names in the shared storage: one per train job, one experiment (+ its trials' runs) for the search.
    names = {j: _run_name(outs[j], storage_path) for j in outs}
    assert len(set(names.values())) == len(names), names
    expected = {names[j] for j in ("many-a", "many-b", "many-c", "many-d")}
    expected |= {f"{names['many-tune']}-tune", f"{names['many-tune']}-tune-trials"}
    assert set(os.listdir(storage_path)) == expected, os.listdir(storage_path)

    # The stopped job's checkpoints are complete: its latest registered one is there and loadable.
    latest, step = faults.latest_registered(d_run)
    ckpt = os.path.join(d_run, latest, "checkpoint.ckpt")
    assert step > 0 and zipfile.is_zipfile(ckpt), os.listdir(os.path.join(d_run, latest))

    # The head is healthy: a new job runs and all 2 CPUs are free again.
    probe = ("import ray, time; ray.init(); t = time.time()\n"
             "while ray.available_resources().get('CPU') != 2.0 and time.time() - t < 60: time.sleep(1)\n"
             "print('free CPUs', ray.available_resources().get('CPU'))")
    r = _ray_job(head, "submit", "--submission-id", "many-probe", "--", "python", "-c", probe, timeout=300)
    assert r.returncode == 0 and "free CPUs 2.0" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
