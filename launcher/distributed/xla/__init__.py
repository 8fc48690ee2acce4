"""torch-xla inside Ray Train workers: the `ray.accelerator: tpu` path and its CPU PJRT test lane.

Ray Train starts one worker per TPU host (launcher.distributed reserves all chips of a host per worker
and spreads the workers over hosts). Each worker is one XLA (PJRT) process running Lightning:

* Inside a worker, several XLA devices (the 4 chips of a v4 host; `CPU_NUM_DEVICES` in the CPU lane)
  are used through SPMD: parameters replicated, every batch sharded along its first axis, and the
  gradient all-reduce inserted by the XLA compiler.
* Between workers, replicas stay identical in one of two ways (`Runtime.sync`):
  - "spmd": the PJRT runtime itself spans the workers (the hosts of one multi-host TPU slice), so the
    SPMD mesh covers every chip of the slice and each host feeds its share of the global batch.
  - "gloo": each worker's runtime is its own (single-host slices, and always on CPU PJRT, whose client
    has no cross-process collectives: an "xla" process group does initialise there, but its
    all_reduce silently returns the local value). Gradients are then averaged once per optimizer
    step over the gloo process group Ray Train already set up, through host memory.

XLA compiles one graph per distinct input shape, so batches get a fixed shape: sequence lengths are
padded up to one of a few bucket sizes and every batch has the full batch size (training: the short
last batch repeats some of its rows; evaluation: extra rows marked `_pad`, which the metrics skip). The number of
graphs compiled is logged per epoch (`xla_compilations`) and must stop growing after the first epoch.

Files: shapes.py (fixed batch shapes), runtime.py (the PJRT runtime of a worker), strategy.py (the
Lightning strategy and precision plugin, imported in workers only), stats.py (compile counts). This
module and shapes.py import nothing heavy at module level: the driver's resource checks stay cheap,
and the main environment has no torch-xla.
"""

from __future__ import annotations

import os

from launcher.errors import ConfigError

EXTRA_FIX = ("pip install 'launcher[tpu]' on every TPU host, with matching torch and torch_xla versions "
             "(e.g. torch==2.9.0 torch_xla[tpu]==2.9.0); for the CPU test lane: make venv-xla")


def cpu_lane() -> bool:
    """True when this process runs XLA on the CPU (`PJRT_DEVICE=CPU`): the TPU path minus the chips."""
    return os.environ.get("PJRT_DEVICE", "").upper() == "CPU"


def require_torch_xla(where: str = "here"):
    """Import torch_xla or raise a ConfigError naming the `tpu` extra."""
    try:
        import torch_xla  # noqa: F401
        import torch_xla.runtime  # noqa: F401
    except ImportError as e:
        raise ConfigError("ray.accelerator", f"tpu needs torch-xla, which cannot be imported {where} ({e})", EXTRA_FIX) from None
    return torch_xla


def worker_env() -> dict[str, str]:
    """Environment the driver passes to workers so they pick the same PJRT device as the driver asked for."""
    env = {}
    for key in ("PJRT_DEVICE", "CPU_NUM_DEVICES"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env
