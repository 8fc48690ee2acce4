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
    names: list = dataclasses.field(default_factory=list)  # tensor names, as shapes (the checkpoint's)


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
    shapes, names = [], []
    for name in files:
        with open(os.path.join(path, name), "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        # Integer tensors are buffers (position ids), not trainable parameters.
        floats = [(k, v["shape"]) for k, v in header.items() if k != "__metadata__" and v["dtype"] in _FLOAT_DTYPES]
        shapes += [shape for _, shape in floats]
        names += [k for k, _ in floats]
    note = "from the checkpoint's safetensors header; a new task head is not included"
    if cfg.model.from_config:
        note = "from the checkpoint's safetensors header (model.from_config: same shapes, random weights)"
    return Params(sum(math.prod(s) for s in shapes), shapes, note, names)


#: names of 2-D weights that are embeddings or output layers, not linears (for target_modules [all])
_NOT_LINEAR = ("embed", "wte", "wpe", "lm_head", "shared", "position", "token_type")


def lora_params(cfg: Config, params: Params, model_type: Optional[str]) -> Params:
    """The LoRA adapters' parameters on the checkpoint's linears, from the header: r x (in + out) per
    targeted weight. The new head that trains fully is not included (`plan --exact` counts it)."""
    if params.count is None:
        return Params(None, [], params.source)
    p = cfg.peft
    if p.target_modules is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS  # lazy: imports torch

        targets = DEFAULTS.get(model_type) or ["all"]
    else:
        targets = list(p.target_modules)
    shapes = []
    for name, shape in zip(params.names, params.shapes):
        if len(shape) != 2 or not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        if targets == ["all"]:
            hit = not any(w in module for w in _NOT_LINEAR)
        else:
            hit = any(module == t or module.endswith("." + t) for t in targets)
        if hit:
            shapes += [[p.r, shape[1]], [shape[0], p.r]]
    return Params(sum(math.prod(s) for s in shapes), shapes,
                  f"LoRA r {p.r} on {', '.join(targets)} from the header; the new head is not included (--exact counts it)")


def memory_estimate(params: Params, precision: str, optimizer: str, strategy: str, world: int,
                    trainable: Optional[Params] = None) -> dict:
    """Bytes per worker for weights, gradients and optimizer state (activations come on top).

    `trainable`: the parameters that train when the rest is frozen (LoRA adapters): weights count
    all of them, gradients and optimizer state only the trainable ones.
    """
    if params.count is None:
        return {"parameters": None, "source": params.source}
    train = trainable if trainable is not None and trainable.count is not None else params
    w = _WEIGHT_BYTES.get(precision, 4)
    extra = train.count if train is not params else 0  # adapters come on top of the base weights
    weights = (params.count + extra) * w
    grads = train.count * w
    if optimizer == "adafactor":
        # transformers' Adafactor without beta1: factored row + column second moments for
        # matrices, a full second moment for vectors.
        states = sum((math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1]) if len(s) >= 2 else math.prod(s) for s in train.shapes)
        optim = states * w
    else:
        optim = 2 * train.count * w  # AdamW: exp_avg and exp_avg_sq in the weights' dtype
    shard = {"ddp": (1, 1, 1), "fsdp": (world, world, world), "fsdp2": (world, world, world), "deepspeed": (1, world, world)}[strategy]
    parts = {"weights": weights / shard[0], "gradients": grads / shard[1], "optimizer_state": optim / shard[2]}
    out = {
        "parameters": params.count + extra,
        "source": params.source,
        "precision": precision,
        "optimizer": optimizer,
        "sharding": {"ddp": "none (every worker holds everything)", "fsdp": f"weights, gradients and state / {world} workers",
                     "fsdp2": f"weights, gradients and state / {world} workers (fully_shard per layer)",
                     "deepspeed": f"ZeRO-2: gradients and state / {world} workers"}[strategy],
        "bytes_per_worker": {k: int(v) for k, v in parts.items()},
        "total_bytes_per_worker": int(sum(parts.values())),
    }
    if train is not params:
        out["trainable_parameters"] = train.count
        out["trainable_source"] = train.source
    return out
