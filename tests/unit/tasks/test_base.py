"""base task: head import paths, the example head's pooling and loss, one Ray run with export and predict."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv
from tests.helpers.models import make_tiny_bert
from tests.helpers.tasks import validate_then_evaluate_export
from launcher.__main__ import main as launcher_main
from launcher.config import ConfigError
from launcher.tasks.base import MeanPoolClassifier
from launcher.tasks.base import BaseTask, load_head_class


@pytest.mark.parametrize("path, message", [
    ("", "is required for task base"),
    ("launcher.heads.MeanPoolClassifier", "is not an import path"),
    ("launcher.no_such_module:Head", "cannot import launcher.no_such_module"),
    ("launcher.heads:MeanPool", "launcher.heads has no MeanPool .* MeanPoolClassifier"),
    ("launcher.heads:F", "is not a torch.nn.Module class"),
])
def test_bad_head_paths_name_the_option(path, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_head_class(path)
    assert e.value.key == "task_options.head"


def test_bad_head_args_fail_before_ray(tmp_path, tiny_bert, sentiment_files):
    from launcher.training import prepare as prepare_lib

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"), task="base",
                      task_options={"head": "launcher.heads:MeanPoolClassifier", "head_args": {"hidden": 3}})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'hidden'") as e:
        prepare_lib.prepare(cfg)
    assert e.value.key == "task_options.head_args"
    cfg.task_options = {"head": "launcher.heads:nope"}
    with pytest.raises(ConfigError) as e:
        BaseTask(cfg)
    assert e.value.key == "task_options.head"


def test_mean_pool_classifier_ignores_padding():
    head = MeanPoolClassifier(types.SimpleNamespace(hidden_size=2), num_labels=2, dropout=0.0)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
        head.classifier.bias.zero_()
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # last position is padding
    batch = {"attention_mask": torch.tensor([[1, 1, 0]]), "labels": torch.tensor([1])}
    out = head(types.SimpleNamespace(last_hidden_state=hidden), batch)
    assert out["logits"].tolist() == [[2.0, 3.0]]  # mean of the two real tokens
    assert float(out["loss"].detach()) == pytest.approx(float(F.cross_entropy(torch.tensor([[2.0, 3.0]]), torch.tensor([1]))))
    assert set(head.build_metrics()) == {"accuracy", "f1"}


def test_exported_folder_evaluates_like_the_module(tmp_path, tiny_bert, sentiment_files):
    """The export (backbone folder + head.pt) reloads with the trained head: same numbers as in memory."""
    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"), task="base",
                      task_options={"head": "launcher.heads:MeanPoolClassifier"})
    direct, evaluated = validate_then_evaluate_export(cfg)
    assert set(direct) == {"val_loss", "val_accuracy", "val_f1"}
    assert evaluated == pytest.approx(direct)


@pytest.mark.ray
def test_ray_run_exports_backbone_and_head(tmp_path, ray_session):
    from transformers import AutoModel, pipeline

    from launcher.commands import train as train_cmd
    from launcher.data.sampling import optimizer_steps
    from launcher.tasks.base import load_exported

    model = make_tiny_bert(str(tmp_path / "bert"))
    train_rows, val_rows = sentiment_rows(40, seed=1), sentiment_rows(14, seed=2)
    files = {"train": write_csv(str(tmp_path / "train.csv"), train_rows), "validation": write_csv(str(tmp_path / "val.csv"), val_rows)}
    cfg = base_config(model, files, str(tmp_path / "out"), task="base",
                      task_options={"head": "launcher.heads:MeanPoolClassifier", "head_args": {"dropout": 0.0}},
                      train={"max_epochs": 2, "accumulate_grad_batches": 2})
    results = train_cmd.run(cfg)

    assert results["monitor"] == "val_loss"
    last = results["epochs"][-1]
    assert "val_loss" in last and 0.0 <= last["val_accuracy"] <= 1.0 and 0.0 <= last["val_f1"] <= 1.0
    t = cfg.train
    assert results["global_step"] == optimizer_steps(len(train_rows), cfg.ray.num_workers, t.batch_size, t.accumulate_grad_batches, t.max_epochs)

    best = os.path.join(cfg.output_dir, "best")
    with open(os.path.join(best, "launcher.json")) as f:
        info = json.load(f)
    assert info["head"] == "launcher.heads:MeanPoolClassifier"
    assert info["head_args"] == {"dropout": 0.0, "num_labels": 2}  # num_labels filled in from the labels
    assert type(AutoModel.from_pretrained(best)).__name__ == "BertModel"
    features = pipeline("feature-extraction", model=best)("the film was good")
    assert len(features[0][0]) == 32  # hidden size of the tiny BERT
    reloaded = load_exported(best)
    assert reloaded.head.classifier.weight.shape == (2, 32)

    inputs = write_csv(str(tmp_path / "texts.csv"), [{"text": r["text"]} for r in val_rows[:6]])
    out = str(tmp_path / "pred.jsonl")
    # `launcher predict` in this process: the subprocess would only add an interpreter start.
    assert launcher_main(["predict", "--model", best, "--input", inputs, "--output", out]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert [r["text"] for r in rows] == [r["text"] for r in val_rows[:6]]
    assert all(r["label"] in ("neg", "pos") and len(r["logits"]) == 2 for r in rows)
