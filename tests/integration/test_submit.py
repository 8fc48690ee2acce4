"""`launcher submit` and plain `ray job submit`: real jobs on a local head.

The tests start their own head (`ray start --head --block` on loopback ports, token auth, its own
RAY_TMPDIR) and talk to it only through subprocesses and the job API, so the in-process
`ray_session` of other tests is never involved. The head is ended by its PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.cluster import start_head
from tests.helpers.cli import run_cli


SECRET = "s3cr3t-v4lue-never-printed"


@pytest.fixture(scope="module")
def head():
    h = start_head(num_cpus=2)
    yield h
    h.stop()


def _job_client(head):
    # The token goes in an explicit header: this process's Ray config (and other tests') stays untouched.
    from ray.job_submission import JobSubmissionClient

    with open(head.client_env["RAY_AUTH_TOKEN_PATH"]) as f:
        token = f.read().strip()
    return JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.ray
@pytest.mark.slow  # starts its own Ray head and a job: minutes on 2 cores; runs in `make test-slow`
def test_launcher_submit_runs_the_job_and_exports_the_model(head, project, tmp_path):
    from launcher.config import parsing
    from launcher.commands import plan as plan_cmd

    out = str(tmp_path / "out")
    env = {**head.client_env, "LAUNCHER_TEST_SECRET": SECRET}
    r = run_cli("submit", "cfg.yaml", "--address", head.address, "--installed", "--follow", "--env", "LAUNCHER_TEST_SECRET",
                "--submission-id", "launcher-e2e", "--", "--output_dir", out, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.splitlines()[0] == "launcher-e2e"
    assert "[launcher] job launcher-e2e: SUCCEEDED" in r.stderr
    assert SECRET not in r.stdout + r.stderr
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))
    assert os.path.isfile(os.path.join(out, "best", "launcher.json"))
    # launcher plan's numbers are what the job really did.
    cfg, _ = parsing.parse(["cfg.yaml", "--output_dir", out])
    p = plan_cmd.build(cfg)
    assert p["steps"]["optimizer_steps_total"] == results["global_step"] == 3
    assert p["steps"]["warmup_steps"] == 1
    # Ray stored the variable with the job: it reached the cluster.
    info = _job_client(head).get_job_info("launcher-e2e")
    assert info.runtime_env["env_vars"] == {"LAUNCHER_TEST_SECRET": SECRET}


@pytest.mark.ray
@pytest.mark.slow
def test_plain_ray_job_submit_with_working_dir(head, project, tmp_path):
    out = str(tmp_path / "out")
    env = {**os.environ, **head.client_env}
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit", "--address", head.address,
                        "--submission-id", "plain-e2e", "--working-dir", ".", "--", "launcher", "train", "cfg.yaml",
                        "--output_dir", out], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(_job_client(head).get_job_status("plain-e2e")) in ("SUCCEEDED", "JobStatus.SUCCEEDED")
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["global_step"] == 3


@pytest.mark.ray
@pytest.mark.slow
def test_launcher_submit_ships_package_and_requirements(head, project, tmp_path):
    """Without --installed: py_modules carries this launcher, pip the requirements (already satisfied here)."""
    out = str(tmp_path / "out")
    r = run_cli("submit", "cfg.yaml", "--address", head.address, "--follow", "--", "--output_dir", out,
                env=head.client_env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[launcher] py_modules:" in r.stderr and "[launcher] pip:" in r.stderr
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))
