"""LoRA on Ray Train workers: 1 worker vs 2 workers with accumulation give the same adapters, the
checkpoint Ray keeps is small, and results.json counts the parameters; FSDP2 (ray.strategy fsdp2)
on CPU workers for full fine-tuning and LoRA (slow); a Tune search over peft.r exports the best
trial's merged model and adapter (slow).
"""

from __future__ import annotations

import glob
import json
import os

import pytest
import torch

from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv

pytestmark = [pytest.mark.ray, pytest.mark.requires("peft", install="make venv")]
LORA = {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0}


def _files(tmp_path) -> dict:
    return {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(64, seed=5)),
            "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(8, seed=6))}


def _adapter(out: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(out, "best", "adapter", "adapter_model.safetensors"))


def test_lora_one_and_two_workers_with_accumulation_give_the_same_adapters(ray_session, tiny_bert, tmp_path):
    from launcher.commands import train as train_cmd

    files = _files(tmp_path)
    runs, results = {}, {}
    for name, workers, batch in [("one", 1, 8), ("two", 2, 4)]:
        out = str(tmp_path / name)
        cfg = base_config(tiny_bert, files, out, peft=dict(LORA),
                          train={"max_epochs": 1, "batch_size": batch, "accumulate_grad_batches": 2, "group_by_length": False},
                          ray={"num_workers": workers, "cpus_per_worker": 1.0 if workers == 1 else 0.5},
                          optim={"lr": 1e-2}, checkpoint={"num_to_keep": 1})
        results[name] = train_cmd.run(cfg)
        assert results[name]["global_step"] == 4
        runs[name] = _adapter(out)
    assert runs["one"] and set(runs["one"]) == set(runs["two"])
    for key, value in runs["one"].items():
        torch.testing.assert_close(runs["two"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    r = results["two"]
    assert 0 < r["trainable_parameters"] < r["total_parameters"] / 10
    assert os.path.isdir(r["best_adapter"]) and os.path.exists(os.path.join(r["best_model"], "model.safetensors"))
    ckpts = glob.glob(os.path.join(r["ray_storage"], "checkpoint_*", "checkpoint.ckpt"))
    weights = os.path.getsize(os.path.join(r["best_model"], "model.safetensors"))
    assert ckpts and all(os.path.getsize(c) < weights / 2 for c in ckpts)  # trainable tensors + their AdamW state only


@pytest.mark.slow
@pytest.mark.parametrize("peft", [None, LORA], ids=["full", "lora"])
def test_fsdp2_on_two_cpu_workers_matches_ddp(ray_session, tiny_bert, tmp_path, peft):
    """ray.strategy fsdp2 (torch fully_shard per layer) on 2 gloo workers gives DDP's weights."""
    from safetensors.torch import load_file

    from launcher.commands import train as train_cmd

    files = {**_files(tmp_path), "test": write_csv(str(tmp_path / "test.csv"), sentiment_rows(8, seed=7))}
    weights, tests = {}, {}
    for strategy in ("ddp", "fsdp2"):
        out = str(tmp_path / strategy)
        cfg = base_config(tiny_bert, files, out, peft=dict(peft or {}),
                          train={"max_epochs": 1, "batch_size": 4, "accumulate_grad_batches": 2, "group_by_length": False},
                          ray={"strategy": strategy}, optim={"lr": 1e-2}, checkpoint={"num_to_keep": 1})
        results = train_cmd.run(cfg)
        assert results["global_step"] == 4 and results["best_model"]
        weights[strategy] = load_file(os.path.join(out, "best", "model.safetensors"))
        tests[strategy] = results["test"]  # scored on the best epoch's weights, reloaded on the workers
    for key, value in weights["ddp"].items():
        torch.testing.assert_close(weights["fsdp2"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert tests["fsdp2"].keys() == tests["ddp"].keys() and tests["ddp"]
    for key, value in tests["ddp"].items():
        if isinstance(value, float):
            assert tests["fsdp2"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_tune_over_lora_rank_exports_the_best_trials_merged_model_and_adapter(ray_session, tiny_bert, tmp_path):
    from launcher.commands import tune as tune_cmd

    cfg = base_config(tiny_bert, _files(tmp_path), str(tmp_path / "search"), peft=dict(LORA),
                      train={"max_epochs": 1}, ray={"num_workers": 1, "cpus_per_worker": 0.5})
    cfg.tune.search_space = {"peft.r": {"grid": [2, 4, 8]}}
    cfg.tune.num_samples, cfg.tune.scheduler, cfg.tune.search_alg = 1, "fifo", "grid"
    result = tune_cmd.run(cfg)
    with open(os.path.join(cfg.output_dir, "best.json")) as f:
        best = json.load(f)
    assert best["search"]["trials"] == 3 and best["search"]["finished"] == 3
    r = best["params"]["peft.r"]
    with open(os.path.join(result.best_dir, "adapter", "adapter_config.json")) as f:
        assert json.load(f)["r"] == r
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(result.best_dir)  # the merged model loads as plain transformers
