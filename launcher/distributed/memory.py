"""Memory per worker for weights, gradients and optimizer state, and the parameters they are counted
from (a checkpoint's safetensors header: no torch, no weights read)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Optional

from launcher.config import Config

# Bytes per parameter of weights (= gradients) and of each optimizer state, by precision.
# Mixed precision keeps fp32 weights; autocast's half-precision copies are transient.
_WEIGHT_BYTES = {"32-true": 4, "32": 4, "bf16-mixed": 4, "16-mixed": 4, "bf16-true": 2, "16-true": 2, "64-true": 8}
_FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclasses.dataclass
class Params:
    count: Optional[int]
    shapes: list  # tensor shapes (for Adafactor's factored state)
    source: str


def checkpoint_params(cfg: Config) -> Params:
    """Parameters from the safetensors header(s) of the model folder: no torch, no weights read.

    A task head that the checkpoint lacks (a new classifier: hidden x labels) is not included;
    weights the task model drops (a pretraining head) are. Both are tiny next to the encoder.
    """
    path = cfg.model.name_or_path
    if cfg.model.gguf_file:
        return Params(None, [], "GGUF checkpoint: run plan --exact to count parameters")
    if not os.path.isdir(path):
        return Params(None, [], f"{path} is not a local folder: run plan --exact to count parameters")
    files = []
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    if not files:
        return Params(None, [], "no safetensors weights in the model folder: run plan --exact to count parameters")
    shapes = []
    for name in files:
        with open(os.path.join(path, name), "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        # Integer tensors are buffers (position ids), not trainable parameters.
        shapes += [v["shape"] for k, v in header.items() if k != "__metadata__" and v["dtype"] in _FLOAT_DTYPES]
    note = "from the checkpoint's safetensors header; a new task head is not included"
    if cfg.model.from_config:
        note = "from the checkpoint's safetensors header (model.from_config: same shapes, random weights)"
    return Params(sum(math.prod(s) for s in shapes), shapes, note)


def memory_estimate(params: Params, precision: str, optimizer: str, strategy: str, world: int) -> dict:
    """Bytes per worker for weights, gradients and optimizer state (activations come on top)."""
    if params.count is None:
        return {"parameters": None, "source": params.source}
    w = _WEIGHT_BYTES.get(precision, 4)
    weights = params.count * w
    grads = params.count * w
    if optimizer == "adafactor":
        # transformers' Adafactor without beta1: factored row + column second moments for
        # matrices, a full second moment for vectors.
        states = sum((math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1]) if len(s) >= 2 else math.prod(s) for s in params.shapes)
        optim = states * w
    else:
        optim = 2 * params.count * w  # AdamW: exp_avg and exp_avg_sq in the weights' dtype
    shard = {"ddp": (1, 1, 1), "fsdp": (world, world, world), "deepspeed": (1, world, world)}[strategy]
    parts = {"weights": weights / shard[0], "gradients": grads / shard[1], "optimizer_state": optim / shard[2]}
    return {
        "parameters": params.count,
        "source": params.source,
        "precision": precision,
        "optimizer": optimizer,
        "sharding": {"ddp": "none (every worker holds everything)", "fsdp": f"weights, gradients and state / {world} workers",
                     "deepspeed": f"ZeRO-2: gradients and state / {world} workers"}[strategy],
        "bytes_per_worker": {k: int(v) for k, v in parts.items()},
        "total_bytes_per_worker": int(sum(parts.values())),
    }
