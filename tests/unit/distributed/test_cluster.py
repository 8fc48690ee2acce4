"""launcher.distributed.cluster: node counting and the storage rule, and where a local Ray's dashboard listens."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from launcher.distributed import cluster
from launcher.config import Config, ConfigError
from tests.helpers.paths import REPO


def _cfg(**ray) -> Config:
    cfg = Config(output_dir="/tmp/somewhere/out")
    for k, v in ray.items():
        setattr(cfg.ray, k, v)
    return cfg


def test_local_storage_is_refused_on_several_nodes(monkeypatch):
    monkeypatch.delenv("LAUNCHER_STORAGE", raising=False)
    # Two nodes on one machine share node:<ip>; each adds 1 to it.
    two_on_one_ip = {"CPU": 4.0, "node:10.0.0.1": 2.0, "node:__internal_head__": 1.0}
    two_ips = {"CPU": 4.0, "node:10.0.0.1": 1.0, "node:10.0.0.2": 1.0, "node:__internal_head__": 1.0}
    for resources in (two_on_one_ip, two_ips):
        with pytest.raises(ConfigError, match="the cluster has 2 nodes but run storage is the local folder /tmp/somewhere/out/ray"):
            cluster.check_resources(_cfg(), resources)
        cluster.check_resources(_cfg(storage_path="s3://bucket/runs"), resources)
        cluster.check_resources(_cfg(storage_path="/mnt/nfs/runs"), resources)  # explicit: the user says it is shared
    cluster.check_resources(_cfg(), {"CPU": 4.0, "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0})
    monkeypatch.setenv("LAUNCHER_STORAGE", "gs://bucket/runs")
    cluster.check_resources(_cfg(), two_ips)


@pytest.mark.ray
def test_local_ray_dashboard_listens_on_loopback_only(tmp_path):
    """init_ray's local Ray: the dashboard (job API) is bound to 127.0.0.1, not to every interface."""
    script = (
        "import ray\n"
        "from launcher.distributed import cluster\n"
        "from launcher.config import Config\n"
        "cfg = Config(); cfg.ray.num_cpus = 1\n"
        "cluster.init_ray(cfg)\n"
        "url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), 'dashboard_url') else None\n"
        "url = url or ray._private.worker.global_worker.node.address_info['webui_url']\n"
        "port = int(url.rsplit(':', 1)[1])\n"
        "binds = set()\n"
        "for table in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for line in open(table).read().splitlines()[1:]:\n"
        "        local, state = line.split()[1], line.split()[3]\n"
        "        addr, p = local.rsplit(':', 1)\n"
        "        if state == '0A' and int(p, 16) == port:\n"
        "            binds.add(addr)\n"
        "print(url, sorted(binds))\n"
        "ray.shutdown()\n"
    )
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    url, binds = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert url.startswith("127.0.0.1:")
    assert binds == "['0100007F']", binds  # 127.0.0.1 in /proc/net/tcp notation; no 0.0.0.0 (00000000)
