"""Separate Ray clusters and an S3 server for the cluster tests, isolated from every other Ray on the machine.

Each cluster started here gets its own RAY_TMPDIR: `ray start` and `ray.cluster_utils.Cluster`
write the "current cluster" address file there instead of /tmp/ray, where Ray Train's
placement-group cleaner of *other* runs on this machine would find it, query the wrong cluster
for its controller and remove their placement groups. Heads are ended by the PID of the process
group they were started in (never `ray stop`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from tests.helpers.data import sentiment_rows, write_csv
from tests.helpers.models import make_tiny_bert

VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_tmpdir() -> str:
    # Short: Ray's Unix socket paths under it must stay below 107 characters.
    return tempfile.mkdtemp(prefix="lr-", dir="/tmp")


@contextlib.contextmanager
def isolated_ray_env(**extra: str):
    """isolated_env() with a fresh RAY_TMPDIR that is removed afterwards."""
    tmpdir = ray_tmpdir()
    try:
        yield isolated_env(tmpdir, **extra)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def isolated_env(tmpdir: str, **extra: str) -> dict:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    env.update(RAY_TMPDIR=tmpdir, PATH=VENV_BIN + os.pathsep + env.get("PATH", ""), RAY_DEDUP_LOGS="0",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="300")
    env.update(extra)
    return env


@dataclass
class Head:
    """A `ray start --head --block` process with token auth, dashboard on loopback."""

    address: str
    proc: subprocess.Popen
    tmpdir: str
    client_env: dict = field(default_factory=dict)  # env for job clients (token auth)
    log: str = ""

    def stop(self) -> None:
        stop_group(self.proc)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def stop_group(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM the process group we started (ray start --block ends its children), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_head(num_cpus: int = 2, attempts: int = 3) -> Head:
    """Start a head; retried because a loaded machine can make Ray's 30 s start-up checks time out."""
    last = ""
    for _ in range(attempts):
        tmpdir = ray_tmpdir()
        token_path = os.path.join(tmpdir, "auth_token")
        with open(token_path, "w") as f:
            f.write(secrets.token_hex(32))
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
        env = isolated_env(tmpdir, **auth)
        gcs, dash, client, agent = free_port(), free_port(), free_port(), free_port()
        log_path = os.path.join(tmpdir, "head.log")
        cmd = [os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(num_cpus), "--port", str(gcs),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent), "--disable-usage-stats"]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        address = f"http://127.0.0.1:{dash}"
        head = Head(address=address, proc=proc, tmpdir=tmpdir, client_env=auth, log=log_path)
        # `--block` ends the whole head when any part exits; the Ray client server is the last to
        # come up (it gives up after 30 s without node info on a busy machine), so a head counts
        # as started once its job API answers and the client server listens.
        if _wait_for_jobs_api(head, token_path, timeout=240) and _wait_for_port(head, client, timeout=120):
            return head
        with open(log_path) as f:
            last = f.read()[-3000:]
        head.stop()
    raise RuntimeError(f"ray head did not start:\n{last}")


def _wait_for_port(head: Head, port: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            time.sleep(2)
    return False


def _wait_for_jobs_api(head: Head, token_path: str, timeout: float) -> bool:
    import urllib.request

    with open(token_path) as f:
        token = f.read().strip()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.proc.poll() is not None:
            return False
        try:
            req = urllib.request.Request(head.address + "/api/jobs/", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


def tiny_project(root: str, rows: int = 48) -> str:
    """A folder with a tiny BERT, CSV data and a config using relative paths (1 worker, 1 epoch)."""
    os.makedirs(root, exist_ok=True)
    make_tiny_bert(os.path.join(root, "model"))
    write_csv(os.path.join(root, "train.csv"), sentiment_rows(rows, seed=1))
    write_csv(os.path.join(root, "val.csv"), sentiment_rows(16, seed=2))
    with open(os.path.join(root, "cfg.yaml"), "w") as f:
        f.write(PROJECT_YAML)
    return root


PROJECT_YAML = """\
# launcher train cfg.yaml
task: sequence-classification
output_dir: runs/tiny
model:
  name_or_path: model
data:
  train_file: train.csv
  validation_file: val.csv
  max_length: 32
optim:
  lr: 0.005
scheduler:
  warmup_ratio: 0.2
train:
  max_epochs: 1
  batch_size: 8
  accumulate_grad_batches: 2
checkpoint:
  num_to_keep: 1
ray:
  num_workers: 1
  cpus_per_worker: 1
  max_failures: 0
logging:
  tensorboard: false
  progress_every_s: 30
"""


# ---------------------------------------------------------------------- S3 (moto server on loopback)


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict  # AWS_* variables that point pyarrow / boto3 at the server
    server: object

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        # pyarrow also writes "folder/" marker objects: only files count.
        return [o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")]


def start_s3(bucket: str = "launcher-test") -> S3:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return S3(endpoint=endpoint, bucket=bucket, env=env, server=server)
