"""`launcher train` end to end on real Ray Train workers (2 workers, accumulation 2), tiny models."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.helpers.cli import run_cli
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from launcher.data.sampling import optimizer_steps

pytestmark = pytest.mark.ray


def test_sequence_classification_two_workers_with_accumulation(ray_session, tiny_bert, sentiment_files, tmp_path, capfd):
    from launcher.commands import train as train_cmd

    out = str(tmp_path / "run")
    cfg = base_config(tiny_bert, sentiment_files, out, train={"max_epochs": 3})
    results = train_cmd.run(cfg)
    # A quiet console: launcher's lines (the workers' too, through Ray's log streaming), not Ray
    # Train's INFO lines (one per report), which only --verbose shows.
    console = "".join(capfd.readouterr())
    assert "[launcher] validation after epoch 3" in console
    assert "Reporting training result" not in console and "Started training worker group" not in console

    expected = optimizer_steps(240, world=2, batch_size=4, accumulation=2, epochs=3)
    assert results["global_step"] == expected == 45
    assert results["epochs_completed"] == 3 and results["restarts"] == 0
    assert results["final_validation"] is None  # every epoch ended with its validation
    assert [e["epoch"] for e in results["epochs"]] == [1.0, 2.0, 3.0]
    accs = [e["val_accuracy"] for e in results["epochs"]]
    assert results["best_value"] == max(accs)
    last_best = len(accs) - 1 - accs[::-1].index(max(accs))  # ties: the later epoch (as Ray's top-k keeps)
    assert results["best_epoch"] == results["epochs"][last_best]["epoch"]
    assert max(accs) >= 0.8, accs  # the sentiment word decides the label: a tiny BERT learns it
    assert {"val_f1", "val_mcc", "val_loss", "train_loss"} <= set(results["epochs"][0])
    assert results["test"]["test_accuracy"] >= 0.7 and results["test"]["weights"] == "best"

    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    lines = open(os.path.join(out, "val_results.txt")).read().splitlines()
    assert lines == sorted(lines) and any(line.startswith("val_accuracy = ") for line in lines)
    assert os.path.exists(os.path.join(out, "test_results.txt"))
    assert os.path.exists(os.path.join(out, "logs", "csv", "metrics.csv"))
    csv_text = open(os.path.join(out, "logs", "csv", "metrics.csv")).read()
    assert "lr" in csv_text.splitlines()[0] and "train_loss_step" in csv_text.splitlines()[0]

    # The export is a plain transformers folder with the label names.
    from transformers import pipeline

    clf = pipeline("text-classification", model=os.path.join(out, "best"))
    assert clf.model.config.id2label == {0: "neg", 1: "pos"}
    assert clf("the film was great and superb")[0]["label"] == "pos"
    assert clf("the film was awful and boring")[0]["label"] == "neg"

    # Re-scoring the export on the validation data gives the reported best value.
    config_path = os.path.join(out, "config.yaml")
    proc = run_cli("evaluate", config_path, "--model", os.path.join(out, "best"), "--split", "validation")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["val_accuracy"] == pytest.approx(results["best_value"], abs=1e-6)

    inp = write_csv(str(tmp_path / "predict.csv"), [{"text": "a great film"}, {"text": "a dull plot"}, {"text": "superb"}])
    proc = run_cli("predict", "--model", os.path.join(out, "best"), "--input", inp, "--output", str(tmp_path / "p.jsonl"))
    assert proc.returncode == 0, proc.stderr
    preds = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert [p["label"] for p in preds] == ["pos", "neg", "pos"]


def test_max_steps_mid_epoch_still_validates_and_exports(ray_session, tiny_bert, sentiment_files, tmp_path):
    # 240 rows, 2 workers x batch 4 x accumulation 2: 15 optimizer steps an epoch; max_steps 4 stops
    # the run in its first epoch, where Lightning alone would never validate (no best/, "exported model: None").
    from launcher.commands import train as train_cmd

    out = str(tmp_path / "run")
    results = train_cmd.run(base_config(tiny_bert, sentiment_files, out, train={"max_steps": 4}))

    assert results["global_step"] == 4
    assert len(results["epochs"]) == 1 and results["epochs"][0]["step"] == 4
    epoch = results["epochs"][0]["epoch"]
    assert 0 < epoch < 1 and results["best_epoch"] == epoch
    assert results["final_validation"] == {"step": 4, "epoch": epoch, "mid_epoch": True,
                                           "note": "train.max_steps ended training mid-epoch: validated at step 4"}
    assert results["best_model"] == os.path.join(out, "best") and os.path.exists(os.path.join(out, "best", "config.json"))
    assert results["test"]["weights"] == "best"
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["final_validation"]["step"] == 4


def _final_weights(out: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(out, "best", "model.safetensors"))


def test_accumulation_and_workers_give_the_same_parameters(ray_session, tiny_bert, tmp_path):
    """1 x 16 == 1 worker x 8 x accumulation 2 == 2 workers x 4 x accumulation 2 (dropout off)."""
    from launcher.commands import train as train_cmd

    files = {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(64, seed=5)),
             "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(8, seed=6))}
    runs = {}
    for name, workers, batch, acc in [("ref", 1, 16, 1), ("acc", 1, 8, 2), ("ddp", 2, 4, 2)]:
        out = str(tmp_path / name)
        cfg = base_config(tiny_bert, files, out, train={"max_epochs": 1, "batch_size": batch, "accumulate_grad_batches": acc,
                                                        "group_by_length": False},
                          ray={"num_workers": workers, "cpus_per_worker": 1.0 if workers == 1 else 0.5},
                          optim={"lr": 1e-3}, checkpoint={"num_to_keep": 1})
        results = train_cmd.run(cfg)
        assert results["global_step"] == 4
        runs[name] = _final_weights(out)
    ref = runs["ref"]
    for name in ("acc", "ddp"):
        for key, value in ref.items():
            torch.testing.assert_close(runs[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
