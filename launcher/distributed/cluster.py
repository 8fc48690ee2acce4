"""The cluster: start or join Ray, and check that it can hold a request before anything is placed.

Nothing here changes the environment at import time: init_ray passes launcher's Ray settings to the
cluster's processes through the job's runtime_env.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import socket
from typing import Optional, Sequence

from launcher import compat, console
from launcher.console import say
from launcher.config import Config
from launcher.data import streaming
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
# Train's controller polls its workers every 2 s by default, and the start of training, each report
# and the end of a run wait for a poll: 1 s here (as in Tune trials, launcher.search.trial).
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1"
RUNTIME_ENV_KEYS = (START_TIMEOUT_ENV, HEALTH_CHECK_ENV, "TOKENIZERS_PARALLELISM", console.VERBOSE_ENV, POLL_ENV)


# ---------------------------------------------------------------------- driver


def init_ray(cfg: Config, **kwargs) -> None:
    """Join `ray.address` or start a local Ray whose dashboard listens on 127.0.0.1 only."""
    import ray

    if ray.is_initialized():
        return
    health = os.environ.get(HEALTH_CHECK_ENV) or (HEALTH_CHECK_XLA_S if cfg.ray.accelerator == "tpu" else HEALTH_CHECK_S)
    env_vars = {START_TIMEOUT_ENV: os.environ.get(START_TIMEOUT_ENV, START_TIMEOUT_S), HEALTH_CHECK_ENV: health,
                "TOKENIZERS_PARALLELISM": "false", console.VERBOSE_ENV: "1" if console.verbose() else "0",
                POLL_ENV: os.environ.get(POLL_ENV, POLL_S)}
    if cfg.ray.accelerator == "tpu":
        env_vars.update(xla.worker_env())  # PJRT_DEVICE=CPU on the driver: the workers run XLA on CPU too
    runtime_env = {"env_vars": env_vars}
    # The driver's "ray" logger: ray.init's banner and other INFO lines only with --verbose.
    kwargs.setdefault("logging_level", logging.INFO if console.verbose() else logging.WARNING)
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
        # Nor does Train's metrics exporter (for a cluster's Prometheus) have a reader here.
        env_vars["RAY_TRAIN_METRICS_ENABLED"] = os.environ.get("RAY_TRAIN_METRICS_ENABLED", "0")
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=port, runtime_env=runtime_env, log_to_driver=True, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- ray.cpus_per_worker: auto


@dataclasses.dataclass(frozen=True)
class CpuChoice:
    """The CPUs each worker reserves (and its torch threads), and why (`launcher plan` shows both)."""

    cpus: Optional[float]  # None: decided from a cluster's nodes once joined (plan does not connect)
    why: str


def auto_cpus(node_cpus: Sequence[float], slots: int, reserved: float = 0.0) -> float:
    """The most CPUs per worker with which `slots` workers fit on nodes that have `node_cpus` CPUs,
    `reserved` CPUs left free on the largest node. Whole CPUs when every worker can have one (torch
    threads are whole), else a fraction (hundredths); 0 when not even that fits."""
    nodes = sorted((max(0.0, float(c)) for c in node_cpus), reverse=True)
    if not nodes or slots < 1:
        return 0.0
    nodes[0] = max(0.0, nodes[0] - reserved)

    def fits(c: float) -> bool:
        return sum(int(n / c + 1e-9) for n in nodes) >= slots

    for c in range(int(nodes[0] + 1e-9), 0, -1):
        if fits(c):
            return float(c)
    c = math.floor(sum(nodes) / slots * 100 + 1e-6) / 100
    while c >= 0.01 and not fits(c):
        c = round(c - 0.01, 2)
    return c if c >= 0.01 else 0.0


def reserved_cpus(cfg: Config) -> float:
    """CPUs that auto leaves to others than the workers. Ray Data (data.streaming) runs its read/map
    tasks on CPUs the workers do not reserve: without one left free, a streamed run never gets a
    batch (see the shared notes on Ray 2.60). Keep this the one place that decides it
    (data.streaming_cpus, default 1; launcher.data.streaming.cpu_split refuses a number that leaves fewer)."""
    return streaming.data_cpus(cfg)


def local_cpus(cfg: Config) -> tuple[float, str]:
    """(CPUs of the local Ray launcher starts, in words)."""
    if cfg.ray.num_cpus:
        return float(cfg.ray.num_cpus), f"ray.num_cpus {cfg.ray.num_cpus}"
    n = _usable_cpus()
    return float(n), f"{n} CPUs on this machine"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1  # a container's or taskset's share of the cores
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def is_remote(cfg: Config) -> bool:
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def cpus_per_worker(cfg: Config, node_cpus: Optional[Sequence[float]] = None, trials: int = 1,
                    where: Optional[str] = None) -> CpuChoice:
    """`ray.cpus_per_worker` as a number: as given, or auto's share of the CPUs.

    `node_cpus`: the CPUs of each node of the joined cluster (`node_cpus()`); without it, a local
    Ray's CPUs (`ray.num_cpus` or this machine's), or None for a cluster not joined yet.
    `trials`: runs at once that share the CPUs (launcher tune's concurrent trials).
    """
    r = cfg.ray
    if r.cpus_per_worker != "auto":
        return CpuChoice(float(r.cpus_per_worker), "ray.cpus_per_worker in the config")
    if node_cpus is None:
        if is_remote(cfg):
            return CpuChoice(None, "from the CPUs of the cluster's nodes, once joined (plan does not connect)")
        cpus, where = local_cpus(cfg)
        node_cpus = [cpus]
    where = where or f"{sum(node_cpus):g} CPUs on {len(node_cpus)} node(s)"
    reserved = reserved_cpus(cfg)
    slots = r.num_workers * max(1, trials)
    cpus = auto_cpus(node_cpus, slots, reserved)
    share = f"{r.num_workers} worker(s)" + (f" x {trials} trials at once" if trials > 1 else "")
    kept = f", {reserved:g} kept for Ray Data" if reserved else ""
    if cpus <= 0:
        raise ConfigError("ray.cpus_per_worker", f"auto: {where}{kept} hold no CPUs for {share}",
                          "lower ray.num_workers (or tune.max_concurrent_trials), or set ray.cpus_per_worker to a number")
    return CpuChoice(cpus, f"auto: {where}{kept} / {share}")


def auto_trials(cfg: Config, n_trials: int, node_cpus: Optional[Sequence[float]] = None) -> int:
    """Trials at once that share the CPUs under ray.cpus_per_worker auto: tune.max_concurrent_trials
    (at most the trials there are), or, when it is null, as many trials as fit with one CPU per worker."""
    asked = cfg.tune.max_concurrent_trials
    if asked:
        return max(1, min(asked, n_trials))
    if node_cpus is None:
        node_cpus = [local_cpus(cfg)[0]] if not is_remote(cfg) else []
    slots = sum(int(c + 1e-9) for c in node_cpus) - int(reserved_cpus(cfg))
    return max(1, min(n_trials, slots // cfg.ray.num_workers))


def node_cpus() -> list[float]:
    """CPUs of each alive node of the joined cluster."""
    import ray

    return [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]


def with_cpus(cfg: Config, trials: int = 1, quiet: bool = False) -> Config:
    """A copy of `cfg` whose `ray.cpus_per_worker` is a number (auto resolved on the joined cluster):
    what the workers, their torch threads and Ray's placement read."""
    if cfg.ray.cpus_per_worker != "auto":
        return cfg
    nodes = node_cpus()
    where = f"{sum(nodes):g} CPUs on {len(nodes)} node(s)" if is_remote(cfg) else f"{sum(nodes):g} CPUs of the local Ray"
    choice = cpus_per_worker(cfg, nodes, trials, where)
    if not quiet:
        say(f"[launcher] ray.cpus_per_worker {choice.cpus:g} ({choice.why})")
    return dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, cpus_per_worker=choice.cpus))


def check_local_resources(cfg: Config) -> None:
    """Without `ray.address`, launcher starts Ray on this machine: check the request against it
    before Ray starts (a cluster is checked by `check_resources` once joined)."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    r = cfg.ray
    cpus = r.num_cpus or _usable_cpus()
    per_worker = cpus_per_worker(cfg).cpus  # auto: raises when the CPUs hold no share for each worker
    need_cpu = r.num_workers * per_worker
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
    need_cpu = r.num_workers * (r.cpus_per_worker if r.cpus_per_worker != "auto" else 0.01)  # auto: with_cpus checks it
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
