"""Best checkpoint → `save_pretrained` folder, and the results files of a run.

Every file is written to a temporary name and renamed into place, so results.json, the text files
and best/ are either complete or absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any, Optional

from launcher import config as config_lib
from launcher.config import Config

def redact(obj: Any) -> Any:
    """Copies `obj` with values of secret-looking keys (hf_token, api_key; not tokenizer) and
    secret-looking parts of strings (tokens, user:password@ in URIs) replaced by ***."""
    from launcher.secrets import is_secret_key, mask

    if isinstance(obj, dict):
        return {k: ("***" if isinstance(k, str) and is_secret_key(k) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return mask(obj)
    return obj


def atomic_write(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose a file whose data is not on disk yet
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, json.dumps(redact(obj), indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def save_config(cfg: Config, path: str) -> None:
    import yaml

    atomic_write(path, yaml.safe_dump(redact(config_lib.to_dict(cfg)), sort_keys=False))


def clear_output_dir(path: str) -> None:
    if os.path.isdir(path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)


def write_kv(path: str, metrics: dict) -> None:
    """`key = value` lines, sorted (as the original Lightning transformers example wrote them)."""
    atomic_write(path, "".join(f"{k} = {v}\n" for k, v in sorted(metrics.items())))


# ---------------------------------------------------------------------- best checkpoint


def best_checkpoint(result, monitor: str, mode: str):
    """(checkpoint, metrics) with the best finite `monitor` among the checkpoints Ray kept."""
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if _finite(m.get(monitor))]
    if not candidates:
        return (result.checkpoint, result.metrics or {}) if result.checkpoint else (None, {})
    # Ties go to the later epoch, matching Ray's top-k ordering and the workers' best tracking.
    sign = 1.0 if mode == "max" else -1.0
    return max(candidates, key=lambda cm: (sign * cm[1][monitor], float(cm[1].get("epoch", 0))))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def export_checkpoint(cfg: Config, task, meta: dict, tokenizer, checkpoint, out_dir: str, extra: Optional[dict] = None) -> str:
    """Load a Lightning checkpoint's weights into the model and `save_pretrained` it to `out_dir`."""
    import torch

    from launcher.callbacks import CHECKPOINT_NAME

    model = task.build_model(meta, pretrained=False)
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_NAME), map_location="cpu", weights_only=False)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied weights (e.g. LM heads) may be absent from the state dict by design; anything else is a bug.
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return save_folder(cfg, task, meta, model, tokenizer, out_dir, extra)


def _tied_keys(model) -> set:
    keys = set()
    tied = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(tied, dict):
        tied = list(tied)
    for k in tied:
        keys.add(k)
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        for name, _ in model.named_parameters(remove_duplicate=False):
            if name.endswith(("lm_head.weight", "decoder.weight")):
                keys.add(name)
    return keys


def save_folder(cfg: Config, task, meta: dict, model, tokenizer, out_dir: str, extra: Optional[dict] = None) -> str:
    """Write model + tokenizer + the resolved config into `out_dir`, atomically (temp folder + rename)."""
    import yaml

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-best-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"task": cfg.task, "task_options": cfg.task_options, "data": config_lib.to_dict(cfg)["data"],
                "meta": meta, **task.export_extras(meta), **(extra or {})}
        atomic_write(os.path.join(tmp, "launcher.json"), json.dumps(redact(info), indent=2, default=_jsonable) + "\n")
        atomic_write(os.path.join(tmp, "launcher_config.yaml"), yaml.safe_dump(redact(config_lib.to_dict(cfg)), sort_keys=False))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves the previous best/ (or none), never half of one
        raise
    old = None
    if os.path.exists(out_dir):
        old = out_dir.rstrip("/") + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------------- results of `launcher train`


def finish(cfg: Config, prepared, outcome) -> dict:
    """Export the best epoch and write results.json, val_results.txt and test_results.txt."""
    checkpoint, best_metrics = best_checkpoint(outcome.result, outcome.monitor, outcome.mode)
    best_dir = os.path.join(cfg.output_dir, "best")
    if checkpoint is not None:
        export_checkpoint(cfg, prepared.task, prepared.meta, prepared.tokenizer, checkpoint, best_dir,
                          extra={"best_epoch": best_metrics.get("epoch"), "monitor": outcome.monitor,
                                 "best_value": best_metrics.get(outcome.monitor)})
    results = results_dict(cfg, outcome, best_metrics, best_dir if checkpoint is not None else None)
    if checkpoint is not None:
        from launcher import storage

        # With bucket storage the output_dir is often temporary (a job's folder on the head): the
        # copy next to the run's checkpoints outlives the cluster.
        uri = storage.publish_best(best_dir, outcome.storage, outcome.name)
        if uri:
            results["best_model_uri"] = storage.redact_uri(uri)
    write_json(os.path.join(cfg.output_dir, "results.json"), results)
    if best_metrics:
        write_kv(os.path.join(cfg.output_dir, "val_results.txt"),
                 {k: v for k, v in best_metrics.items() if k.startswith("val_")} | {"epoch": best_metrics.get("epoch")})
    if outcome.test:
        write_kv(os.path.join(cfg.output_dir, "test_results.txt"), outcome.test)
    return results


def results_dict(cfg: Config, outcome, best_metrics: dict, best_dir: Optional[str]) -> dict:
    last = outcome.history[-1] if outcome.history else {}
    return {
        "task": cfg.task,
        "monitor": outcome.monitor,
        "mode": outcome.mode,
        "best_value": best_metrics.get(outcome.monitor),
        "best_epoch": best_metrics.get("epoch"),
        "best_step": best_metrics.get("step"),
        "best_model": os.path.abspath(best_dir) if best_dir else None,
        "epochs": [{k: v for k, v in h.items() if k.startswith(("val_", "train_")) or k in ("epoch", "step")}
                   for h in outcome.history],
        "test": outcome.test or None,
        "global_step": int(outcome.end.get("global_step", last.get("step", 0))),
        "epochs_completed": outcome.end.get("epochs_completed", last.get("epoch", 0)),
        "restarts": outcome.restarts,
        "skipped_steps": int(outcome.end.get("skipped_steps", 0)),
        "resumed_steps": outcome.end.get("resumed_steps", []),
        "train_wall_time_s": round(outcome.wall_s, 2),
        "train_samples_per_s": round(outcome.train_samples / outcome.wall_s, 2) if outcome.wall_s else None,
        "ray_storage": os.path.join(outcome.storage, outcome.name),
    }
