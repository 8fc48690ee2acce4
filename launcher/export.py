"""Best checkpoint → `save_pretrained` folder, and the results files of `launcher train`.

Every file is written to a temporary name and renamed into place (launcher.files), and best/ is
built in a temporary folder renamed into place, so results.json, the text files and best/ are
either complete or absent.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Optional

from launcher import compat, storage
from launcher.config import Config, to_dict
from launcher.files import write_json, write_kv, write_yaml
from launcher.model_files import read_export_info
from launcher.tasks import _peft, get_task
from launcher.training.scoring import CHECKPOINT_NAME, best_row

# ---------------------------------------------------------------------- best checkpoint


def best_checkpoint(result, monitor: str, mode: str):
    """(checkpoint, metrics) with the best finite `monitor` among the checkpoints Ray kept (training.scoring's rule)."""
    pairs = list(result.best_checkpoints or [])
    row = best_row([m for _, m in pairs], monitor, mode)
    if row is None:
        return (result.checkpoint, result.metrics or {}) if result.checkpoint else (None, {})
    return next((c, m) for c, m in pairs if m is row)


def export_checkpoint(cfg: Config, task, meta: dict, tokenizer, checkpoint, out_dir: str, extra: Optional[dict] = None) -> dict:
    """Load a Lightning checkpoint's weights into the model and `save_pretrained` it to `out_dir`.

    Returns the model's trainable_parameters and total_parameters. With LoRA the checkpoint holds
    only the trainable tensors: the model is rebuilt on its pretrained base (in full precision for
    QLoRA), and every trainable tensor must come from the checkpoint.
    """
    import torch

    cfg = _peft.unquantized(cfg)
    if task.cfg is not cfg:  # a Tune trial's values (peft.r, ...) shape the model: build it from them
        task = copy.copy(task)
        task.cfg = cfg
    model = task.build_model(meta, pretrained=cfg.peft.enabled)
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_NAME), map_location="cpu", weights_only=False)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if cfg.peft.enabled:
        # Frozen base weights come from the base model; trainable ones must all be in the checkpoint.
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = [k for k in missing if k in trainable]
    # Tied weights (e.g. LM heads) may be absent from the state dict by design; anything else is a bug.
    missing = [k for k in missing if k not in compat.tied_weight_keys(model)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    counts = _peft.parameter_counts(model)
    save_folder(cfg, task, meta, model, tokenizer, out_dir, {**(extra or {}), **counts})
    return counts


def save_folder(cfg: Config, task, meta: dict, model, tokenizer, out_dir: str, extra: Optional[dict] = None) -> str:
    """Write model + tokenizer + the resolved config into `out_dir`, atomically (temp folder + rename).

    A model with LoRA adapters is written twice: merged into its base at the top (a plain
    transformers folder; not with peft.merge_on_export false) and as the adapter alone in adapter/
    (adapter_config.json + adapter_model.safetensors, with the tokenizer and launcher.json, so the
    folder also works by itself with `launcher predict`/`evaluate`).
    """
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-best-", dir=parent)
    try:
        info = {"task": cfg.task, "task_options": cfg.task_options, "data": to_dict(cfg)["data"],
                "meta": meta, **task.export_extras(meta), **(extra or {})}
        adapted = _peft.is_adapted(model)
        if adapted:
            info["peft"] = _peft.export_info(cfg)
            adapter = os.path.join(tmp, _peft.ADAPTER_DIR)
            model.save_pretrained(adapter, safe_serialization=True)
            _write_side_files(cfg, tokenizer, adapter, {**info, "adapter_only": True})
        if not adapted or cfg.peft.merge_on_export:
            (_peft.merged(model) if adapted else model).save_pretrained(tmp, safe_serialization=True)
        _write_side_files(cfg, tokenizer, tmp, info)
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


def _write_side_files(cfg: Config, tokenizer, folder: str, info: dict) -> None:
    tokenizer.save_pretrained(folder)
    write_json(os.path.join(folder, "launcher.json"), info)
    write_yaml(os.path.join(folder, "launcher_config.yaml"), to_dict(cfg))


def merge_adapter(adapter_dir: str, out_dir: str) -> str:
    """An exported adapter folder → its base model with the adapter merged in, saved to `out_dir`
    as launcher exports it (launcher.json included)."""
    info, cfg = read_export_info(adapter_dir)
    # The adapter folder has the tokenizer; its base model (and GGUF file) come from its launcher.json.
    cfg.model.name_or_path, cfg.model.tokenizer, cfg.model.gguf_file, cfg.model.from_config = adapter_dir, None, None, False
    cfg.peft.merge_on_export = True
    task = get_task(info["task"])(cfg)
    tokenizer = task.load_tokenizer()
    cfg.peft.method = "none"  # load the adapter as it is (no new one on top)
    model = task.build_model(info["meta"])
    extra = {k: v for k, v in info.items() if k not in ("adapter_only", "peft")}
    save_folder(cfg, task, info["meta"], model, tokenizer, os.path.join(out_dir, "merged"), extra)
    # save_folder also wrote merged/adapter/: not needed here
    shutil.rmtree(os.path.join(out_dir, "merged", _peft.ADAPTER_DIR), ignore_errors=True)
    return os.path.join(out_dir, "merged")


# ---------------------------------------------------------------------- results of `launcher train`


def finish_run(cfg: Config, prepared, outcome) -> dict:
    """Export the best epoch and write results.json, val_results.txt and test_results.txt."""
    checkpoint, best_metrics = best_checkpoint(outcome.result, outcome.monitor, outcome.mode)
    best_dir = os.path.join(cfg.output_dir, "best")
    counts = {}
    if checkpoint is not None:
        counts = export_checkpoint(cfg, prepared.task, prepared.meta, prepared.tokenizer, checkpoint, best_dir,
                                   extra={"best_epoch": best_metrics.get("epoch"), "monitor": outcome.monitor,
                                          "best_value": best_metrics.get(outcome.monitor)})
    results = results_dict(cfg, outcome, best_metrics, best_dir if checkpoint is not None else None)
    results.update(trainable_parameters=counts.get("trainable_parameters"), total_parameters=counts.get("total_parameters"))
    stream = getattr(prepared, "stream", None)
    if stream is not None:
        results["streaming"] = {"rows": stream.rows, "rows_from": stream.rows_from, "skipped_rows": stream.skipped_rows,
                                "worker_cpus": cfg.ray.cpus_per_worker}
    if cfg.peft.enabled and checkpoint is not None:
        results["best_adapter"] = os.path.join(os.path.abspath(best_dir), "adapter")
    if checkpoint is not None:
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
        "final_validation": final_validation(outcome.history),
    }


def final_validation(history: list[dict]) -> Optional[dict]:
    """When train.max_steps ended training mid-epoch: the validation run at that step (the workers'
    ReportCallback asks Lightning for it), so the run still has a best checkpoint and best/."""
    last = history[-1] if history else {}
    if not last.get("stopped_by"):
        return None
    return {"step": last.get("step"), "epoch": last.get("epoch"), "mid_epoch": True,
            "note": f"{last['stopped_by']} ended training mid-epoch: validated at step {last.get('step')}"}
