"""Run storage that stops taking writes mid-run: full (a small tmpfs filled up) or read-only (a remount).

`launcher train` runs in a subprocess with its output_dir, and so its Ray storage (<output_dir>/ray),
on a tmpfs mounted for the test (root can: CI runs as root here; elsewhere the test is skipped). After
Ray has registered two checkpoints the test fills the tmpfs or remounts it read-only. The run must
fail with one line naming the path and the cause, the last registered checkpoint must stay complete,
and the same command with `--resume` must finish the run, with the exact step count, once the
storage takes writes again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests.helpers import faults
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from tests.helpers.paths import REPO
from launcher.data.sampling import optimizer_steps

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

N_TRAIN, EPOCHS = 96, 3


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path) -> None:
    """Write zeros until the file system is full."""
    with open(os.path.join(path, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
                f.flush()
        except OSError:
            pass


@pytest.mark.parametrize("fault", ["full", "readonly"])
def test_unwritable_storage_fails_in_one_line_and_resumes(small_fs, tiny_bert, tmp_path, fault):
    files = {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(N_TRAIN, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(30, seed=2))}
    out = str(small_fs / "run")
    cfg = base_config(tiny_bert, files, out, train={"max_epochs": EPOCHS}, checkpoint={"every_n_steps": 2},
                      ray={"max_failures": 1})
    from launcher.config import to_dict

    path = str(tmp_path / "cfg.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own
    run_dir = os.path.join(out, "ray", "train")

    proc = subprocess.Popen([sys.executable, "-m", "launcher", "train", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        faults.wait_for_registered(run_dir, 2, timeout=600)
        if fault == "full":
            _fill(small_fs)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
        for pid in faults.session_processes(proc.pid):  # what is left of its local Ray
            os.kill(pid, signal.SIGKILL)

    # One line naming the path and the cause.
    errors = [line for line in stderr.splitlines() if line.startswith("launcher train: ")]
    cause = "no space left on the device (ENOSPC" if fault == "full" else "read-only file system (EROFS"
    assert proc.returncode == 1 and len(errors) == 1, (proc.returncode, stderr[-4000:])
    assert errors[0].startswith(f"launcher train: error: cannot write {out}") and cause in errors[0], errors[0]
    assert errors[0].endswith("then rerun the same command with --resume to continue from the last complete checkpoint")

    # The last registered checkpoint is complete.
    latest, step = faults.latest_registered(run_dir)
    with zipfile.ZipFile(os.path.join(run_dir, latest, "checkpoint.ckpt")) as z:
        assert z.testzip() is None
    assert not os.path.exists(os.path.join(out, "results.json")) and not os.path.exists(os.path.join(out, "best"))

    # Space is back (or the storage writable again): --resume finishes the run.
    if fault == "full":
        os.remove(small_fs / "filler")
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    resumed = subprocess.run([sys.executable, "-m", "launcher", "train", path, "--resume"], capture_output=True, text=True,
                             env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    steps = optimizer_steps(N_TRAIN, 2, 4, 2, EPOCHS)
    assert step <= results["resumed_steps"][0] < steps, (results["resumed_steps"], step)
    faults.assert_complete_history(out, results, steps, epochs=EPOCHS)
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))
