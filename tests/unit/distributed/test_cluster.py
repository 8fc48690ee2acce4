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


# ---------------------------------------------------------------------- ray.cpus_per_worker: auto


@pytest.mark.parametrize("nodes, slots, reserved, expected", [
    ([2], 1, 0, 2.0),            # one worker gets both cores
    ([2], 2, 0, 1.0),
    ([2], 4, 0, 0.5),            # more workers than cores: fractions
    ([2], 3, 0, 0.66),
    ([16], 3, 0, 5.0),           # whole CPUs (whole torch threads), one left over
    ([4, 4, 2], 3, 0, 2.0),      # a worker fits on one node: 3 x 3 would not place the third
    ([8, 8], 2, 0, 8.0),         # one worker per node
    ([2], 1, 1, 1.0),            # one CPU kept for Ray Data
    ([0], 1, 0, 0.0),            # nothing fits
    ([], 1, 0, 0.0),
])
def test_auto_cpus_is_the_largest_share_that_places(nodes, slots, reserved, expected):
    got = cluster.auto_cpus(nodes, slots, reserved)
    assert got == expected
    if got:
        assert sum(int(n / got + 1e-9) for n in sorted(nodes, reverse=True)[:1]) + sum(
            int(n / got + 1e-9) for n in sorted(nodes, reverse=True)[1:]) >= slots


def test_cpus_per_worker_auto_divides_the_local_cpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    choice = cluster.cpus_per_worker(_cfg(num_workers=1, num_cpus=2))
    assert choice.cpus == 2.0 and choice.why == "auto: ray.num_cpus 2 / 1 worker(s)"
    assert cluster.cpus_per_worker(_cfg(num_workers=2, num_cpus=8)).cpus == 4.0
    assert cluster.cpus_per_worker(_cfg(num_workers=1, num_cpus=8), trials=4).cpus == 2.0  # trials at once share them
    monkeypatch.setattr(cluster, "_usable_cpus", lambda: 6)
    choice = cluster.cpus_per_worker(_cfg(num_workers=2))
    assert choice.cpus == 3.0 and "6 CPUs on this machine" in choice.why


def test_an_explicit_number_is_kept_and_a_cluster_decides_auto_once_joined(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.cpus_per_worker(_cfg(cpus_per_worker=0.5, num_cpus=16)).cpus == 0.5
    remote = _cfg(address="ray://head:10001")
    assert cluster.cpus_per_worker(remote).cpus is None
    assert cluster.cpus_per_worker(remote, node_cpus=[0, 8, 8]).cpus == 8.0  # a head with num-cpus 0
    with pytest.raises(ConfigError, match="ray.cpus_per_worker: auto: 0 CPUs on 1 node"):
        cluster.cpus_per_worker(remote, node_cpus=[0])


def test_with_cpus_resolves_on_the_cluster_ray_has(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cluster, "node_cpus", lambda: [3.0])  # Ray counted 3 CPUs (cgroup), not the machine's
    cfg = _cfg(num_workers=1)
    resolved = cluster.with_cpus(cfg, quiet=True)
    assert resolved.ray.cpus_per_worker == 3.0 and cfg.ray.cpus_per_worker == "auto"
    assert cluster.with_cpus(_cfg(cpus_per_worker=1.0)).ray.cpus_per_worker == 1.0


def test_auto_trials_share_the_cpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = _cfg(num_workers=1, num_cpus=2)
    cfg.tune.max_concurrent_trials = 2
    assert cluster.auto_trials(cfg, 8) == 2
    assert cluster.auto_trials(cfg, 1) == 1  # never more than the trials there are
    cfg.tune.max_concurrent_trials = None  # as many as fit with one CPU per worker
    assert cluster.auto_trials(cfg, 8) == 2 and cluster.auto_trials(cfg, 8, [16]) == 8
    cfg.ray.num_workers = 4
    assert cluster.auto_trials(cfg, 8) == 1


def test_streaming_keeps_a_cpu_for_ray_data(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = _cfg(num_workers=1, num_cpus=2)
    monkeypatch.setattr(cfg.data, "streaming", True, raising=False)
    choice = cluster.cpus_per_worker(cfg)
    assert choice.cpus == 1.0 and "1 kept for Ray Data" in choice.why


def test_default_is_auto_and_fits_any_local_machine(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = _cfg(num_workers=3, num_cpus=2)
    assert Config().ray.cpus_per_worker == "auto"
    cluster.check_local_resources(cfg)  # 3 workers x 0.66 CPUs
    with pytest.raises(ConfigError, match="ray.num_workers: 3 workers x 1 CPUs = 3 CPUs, ray.num_cpus is 2"):
        cluster.check_local_resources(_cfg(num_workers=3, num_cpus=2, cpus_per_worker=1.0))
