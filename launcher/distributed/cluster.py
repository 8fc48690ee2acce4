"""The cluster: start or join Ray, and check that it can hold a request before anything is placed.

Nothing here changes the environment at import time: init_ray passes launcher's Ray settings to the
cluster's processes through the job's runtime_env.
"""

from __future__ import annotations

import glob
import os
import socket
from typing import Optional

from launcher import compat
from launcher.config import Config
from launcher.distributed import xla
from launcher.errors import ConfigError

# A worker group that cannot be placed must fail, not hang (see shared notes on Ray 2.60).
START_TIMEOUT_ENV, START_TIMEOUT_S = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120"
# A worker that got SIGTERM (a preemption notice, `kubectl delete pod`) while one of its Ray calls was
# in flight (ray.train.report's barrier, the wait for its checkpoint to be registered) stops serving
# the controller's polls but does not exit until that call returns, and the call waits for the
# controller: Ray Train declares such a worker dead only after 10 minutes without an answer. One
# minute here: the group restarts from the latest checkpoint (tests/faults/test_faults.py, sigterm). Not on
# TPU hosts, where an XLA compilation may keep a worker from answering for minutes.
HEALTH_CHECK_ENV, HEALTH_CHECK_S, HEALTH_CHECK_XLA_S = "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S", "60", "600"
# The variables every runtime_env from init_ray sets (Ray refuses a job whose runtime_env sets them too).
RUNTIME_ENV_KEYS = (START_TIMEOUT_ENV, HEALTH_CHECK_ENV, "TOKENIZERS_PARALLELISM")


# ---------------------------------------------------------------------- driver


def init_ray(cfg: Config, **kwargs) -> None:
    """Join `ray.address` or start a local Ray whose dashboard listens on 127.0.0.1 only."""
    import ray

    if ray.is_initialized():
        return
    health = os.environ.get(HEALTH_CHECK_ENV) or (HEALTH_CHECK_XLA_S if cfg.ray.accelerator == "tpu" else HEALTH_CHECK_S)
    env_vars = {START_TIMEOUT_ENV: os.environ.get(START_TIMEOUT_ENV, START_TIMEOUT_S), HEALTH_CHECK_ENV: health,
                "TOKENIZERS_PARALLELISM": "false"}
    if cfg.ray.accelerator == "tpu":
        env_vars.update(xla.worker_env())  # PJRT_DEVICE=CPU on the driver: the workers run XLA on CPU too
    runtime_env = {"env_vars": env_vars}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Inside `ray job submit` RAY_ADDRESS points at the job's cluster.
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
    else:
        # The dashboard (bound to loopback only) also serves the state API that Ray Train uses to
        # clean up placement groups; without it Train logs a warning every few seconds.
        # address="local": always a fresh local Ray, never a stray one that `ray start` left running.
        # Train's placement-group cleaner asks the state API whether the run's controller is alive; a
        # worker finds that API through /tmp/ray/ray_current_cluster, i.e. the last `ray start` on
        # this machine, and where that is another cluster it "sees" the controller dead and removes
        # the placement group of a healthy run. So the workers are told this dashboard's address.
        port = kwargs.pop("dashboard_port", None) or free_port()
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # Ray Train's preemption watcher (one more actor process per run, polling for nodes that a
        # cloud autoscaler drains) has nothing to watch on this one machine.
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=port, runtime_env=runtime_env, log_to_driver=True, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_local_resources(cfg: Config) -> None:
    """Without `ray.address`, launcher starts Ray on this machine: check the request against it
    before Ray starts (a cluster is checked by `check_resources` once joined)."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    r = cfg.ray
    cpus = r.num_cpus or os.cpu_count() or 1
    need_cpu = r.num_workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        where = f"ray.num_cpus is {cpus}" if r.num_cpus else f"this machine has {cpus} CPUs"
        raise ConfigError("ray.num_workers", f"{r.num_workers} workers x {r.cpus_per_worker:g} CPUs = {need_cpu:g} CPUs, {where}",
                          "lower ray.num_workers or ray.cpus_per_worker (fractions allowed), or set ray.address to a cluster")
    if r.use_gpu:
        gpus = _local_gpus()
        if gpus < r.num_workers * r.gpus_per_worker:
            raise ConfigError("ray.use_gpu", f"{r.num_workers} workers x {r.gpus_per_worker:g} GPUs asked, this machine has "
                              f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}", "set --ray.use_gpu false, or ray.address to a cluster with GPUs")
    if r.accelerator == "tpu":
        # TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e and later), which
        # is also how Ray counts them.

        chips = float(len(glob.glob("/dev/accel[0-9]*")) or len(glob.glob("/dev/vfio/[0-9]*")))
        _check_tpus(cfg, {"TPU": chips, "CPU": float(cpus)}, hosts=[chips], scalable=[])


def _local_gpus() -> int:
    # No NVIDIA driver and no GPU device files: no GPU, said without importing torch (seconds).

    if not (os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg")):
        return 0
    import torch

    return torch.cuda.device_count()


def cluster_resources() -> dict:
    import ray

    return ray.cluster_resources()


def check_resources(cfg: Config, resources: dict, trials: int = 1) -> None:
    """Fail before training when the cluster cannot hold one trial's workers."""
    r = cfg.ray
    cpus = resources.get("CPU", 0)
    need_cpu = r.num_workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        raise ConfigError("ray.num_workers", f"{r.num_workers} workers x {r.cpus_per_worker} CPUs = {need_cpu:g} CPUs, the cluster has {cpus:g}",
                          "lower ray.num_workers or ray.cpus_per_worker (fractions allowed)")
    if r.use_gpu:
        gpus = resources.get("GPU", 0)
        if gpus < r.gpus_per_worker * r.num_workers:
            raise ConfigError("ray.use_gpu", f"{r.num_workers} workers x {r.gpus_per_worker} GPUs asked, the cluster has {gpus:g} GPUs",
                              "set --ray.use_gpu false or run on a cluster with GPUs")
    if r.accelerator == "tpu":
        _check_tpus(cfg, resources)
    # Every node adds 1 to its node:<ip> resource; nodes sharing an IP (one machine) share the key.
    nodes = round(sum(v for k, v in resources.items() if k.startswith("node:") and not k.startswith("node:__internal")))
    if nodes > 1 and "://" not in cfg.storage_path() and not cfg.ray.storage_path:
        raise ConfigError("ray.storage_path", f"the cluster has {nodes} nodes but run storage is the local folder {cfg.storage_path()}",
                          "set ray.storage_path to a shared NFS path or an s3:// / gs:// URI")


def _check_tpus(cfg: Config, resources: dict, hosts: Optional[list[float]] = None,
                scalable: Optional[list[float]] = None) -> None:
    """One worker per TPU host: enough hosts with `ray.tpus_per_worker` chips each, now or once the
    autoscaler adds them.

    `hosts` (TPU chips of each alive node) and `scalable` (chips of each node the autoscaler may
    start, from the cluster config it reports) default to what the running Ray knows.
    """
    r = cfg.ray
    if xla.cpu_lane():
        # PJRT_DEVICE=CPU: the XLA CPU test lane; workers need torch-xla, no TPU resources.
        if not cfg.ray.address:
            xla.require_torch_xla("on this machine (PJRT_DEVICE=CPU runs the Ray workers here)")
        return
    if hosts is None:
        hosts = _tpu_hosts()
    if scalable is None:
        scalable = _autoscaler_tpu_hosts()

    def enough(chips_per_host: list[float]) -> bool:
        return sum(1 for chips in chips_per_host if chips >= r.tpus_per_worker) >= r.num_workers

    if enough(hosts) or enough(scalable):
        return
    tpus = resources.get("TPU", 0)
    sizes = ", ".join(f"{c:g}" for c in sorted(hosts, reverse=True) if c) or "none"
    more = f"; the autoscaler can add {len([c for c in scalable if c])} TPU host(s)" if scalable else ""
    raise ConfigError("ray.accelerator",
                      f"tpu: {r.num_workers} worker(s) x {r.tpus_per_worker} TPU chips (one worker per host) asked; the cluster has "
                      f"{tpus:g} TPU chips (chips per host: {sizes}; {_describe(resources)}){more}",
                      "run on TPU VM hosts (cluster/gcp-tpu.yaml, cluster/kuberay/raycluster-tpu.yaml), set ray.num_workers to the "
                      "TPU hosts and ray.tpus_per_worker to the chips per host, or use --ray.accelerator cpu")


def _tpu_hosts() -> list[float]:
    import ray

    if not ray.is_initialized():
        return []
    return [float(n.get("Resources", {}).get("TPU", 0)) for n in ray.nodes() if n.get("Alive")]


def _autoscaler_tpu_hosts() -> list[float]:
    """TPU chips of every node the autoscaler may start (its node types x max count); [] without one."""
    import ray

    if not ray.is_initialized():
        return []
    hosts: list[float] = []
    for resources, max_count in compat.autoscaler_node_groups():
        chips = float(resources.get("TPU", 0))
        if chips > 0 and max_count > 0:
            hosts += [chips] * max_count
    return hosts


def _describe(resources: dict) -> str:
    keys = ("CPU", "GPU", "TPU", "memory")
    return ", ".join(f"{k}={resources[k]:g}" for k in keys if k in resources) or "no resources"
