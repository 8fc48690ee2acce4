"""The PJRT runtime of one Ray worker: its devices, SPMD, and how replicas stay equal across workers."""

from __future__ import annotations

import dataclasses
from typing import Optional

from launcher.config import Config
from launcher.distributed.xla import require_torch_xla
from launcher.errors import ConfigError


@dataclasses.dataclass
class Runtime:
    """How this worker's XLA process relates to its devices and to the other Ray workers."""

    rank: int  # Ray Train rank (reports, logging, checkpoints)
    world: int  # Ray Train workers
    device_type: str  # "TPU" or "CPU"
    local_devices: int  # XLA devices this process drives
    global_devices: int  # XLA devices the runtime sees (all hosts of a multi-host slice)
    processes: int  # processes the PJRT runtime spans
    spmd: bool  # SPMD over a mesh of all runtime devices
    sync: str  # how workers' replicas stay equal: "none", "gloo" or "spmd"

    def describe(self) -> str:
        return (f"PJRT {self.device_type}: {self.local_devices} local / {self.global_devices} runtime devices, "
                f"{self.processes} runtime process(es), {'SPMD' if self.spmd else 'single device'}, "
                f"{self.world} Ray worker(s), replica sync: {self.sync}")


_RUNTIME: Optional[Runtime] = None


def init_runtime(rank: int, world: int) -> Runtime:
    """Start the PJRT runtime of this worker (once per process) and decide SPMD and replica sync."""
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    require_torch_xla("in this Ray worker")
    import torch_xla.runtime as xr

    device_type = xr.device_type() or "?"
    local = xr.addressable_runtime_device_count()
    total = xr.global_runtime_device_count()
    processes = xr.process_count()
    spmd = total > 1
    if spmd:
        # Must precede the first XLA tensor; the counts above only start the runtime.
        xr.use_spmd()
    if world == 1:
        sync = "none"
    elif processes == world and processes > 1:
        sync = "spmd"
    elif processes == 1:
        sync = "gloo"
    else:
        raise ConfigError("ray.num_workers", f"{world} Ray workers but the XLA runtime spans {processes} processes",
                          "use one worker per host of the TPU slice (ray.num_workers = hosts in the slice)")
    _RUNTIME = Runtime(rank, world, device_type, local, total, processes, spmd, sync)
    return _RUNTIME


def _mesh(rt: Runtime):
    import numpy as np
    import torch_xla.distributed.spmd as xs

    return xs.Mesh(np.arange(rt.global_devices), (rt.global_devices,), ("data",))


def check_batch_sizes(rt: Runtime, cfg: Config) -> None:
    """SPMD splits each batch over this process's devices: sizes must divide evenly."""
    if not rt.spmd:
        return
    eval_bs = cfg.train.eval_batch_size_or_default()
    for key, size in (("train.batch_size", cfg.train.batch_size), ("train.eval_batch_size", eval_bs)):
        if size % rt.local_devices:
            raise ConfigError(key, f"{size} does not split over the {rt.local_devices} XLA devices of a worker",
                              f"use a multiple of {rt.local_devices}")
