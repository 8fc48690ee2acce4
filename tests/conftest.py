"""Fixtures only: the builders they use live in tests/helpers/ (imported as `tests.helpers.<module>`).

Nothing is downloaded. A session-wide local Ray (2 CPUs) is shared by every `ray`-marked test so
each run pays only for its worker group, not for starting Ray.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers.cluster import start_s3, tiny_project
from tests.helpers.data import sentiment_rows, write_csv
from tests.helpers.models import make_tiny_bert

# `requires` marker (CI fails on a missing dependency); pytester for the tests of that plugin.
pytest_plugins = ["tests.helpers.requires", "pytester"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture
def sentiment_files(tmp_path):
    return {
        "train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(240, seed=1)),
        "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(30, seed=2)),
        "test": write_csv(str(tmp_path / "test.csv"), sentiment_rows(30, seed=3)),
    }


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, dashboard on loopback) for all ray-marked tests in this process."""
    import ray

    if not ray.is_initialized():
        from launcher.distributed.cluster import free_port

        # RAY_API_SERVER_ADDRESS: see launcher.distributed.init_ray (Train's placement-group cleaner
        # would otherwise ask another `ray start` cluster on this machine whether our runs are alive).
        port = free_port()
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 log_to_driver=True, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
                                                               "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S": "60",
                                                               "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})
    yield ray
    ray.shutdown()


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


@pytest.fixture(scope="module")
def s3():
    from tests.helpers.requires import requires  # here: pytest loads that module as a plugin first (pytest_plugins)

    requires("moto", install="make venv")
    server = start_s3()
    yield server
    server.server.stop()
