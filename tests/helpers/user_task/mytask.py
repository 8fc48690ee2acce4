"""A user's own Task, written against the public API (docs/custom-tasks.md); tests copy this file into
a project folder as tests_pkg/mytask.py and name it in the YAML as `task: tests_pkg.mytask:MyTask`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from launcher.data.files import Need
from launcher.errors import ConfigError
from launcher.tasks import Task, TaskModule


@dataclass
class Options:
    positive: str = "pos"
    """The label value that counts as positive; every other value is negative."""


class MyModule(TaskModule):
    def build_metrics(self) -> nn.ModuleDict:
        import torchmetrics

        return nn.ModuleDict({"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=2)})

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        if keep.any():
            metrics["accuracy"].update(outputs.logits.detach()[keep].argmax(-1), batch["labels"][keep])


class MyTask(Task):
    """Positive-or-not text classification: a label column, one positive value."""

    name = "my-task"
    default_monitor = "val_accuracy"
    Options = Options
    Module = MyModule
    auto_model = "AutoModelForSequenceClassification"

    def model_kwargs(self, meta: dict) -> dict:
        return {"num_labels": 2}

    def needs(self, split: str) -> list[Need]:
        """The columns read from each split's file ("predict": the `launcher predict` input), checked by
        Task.check_split: a missing column or an empty cell is one error naming the key, file and row."""
        d = self.cfg.data
        columns = [Need("data.text_column", d.text_column, filled=True)]
        if split != "predict":
            columns.append(Need("data.label_column", d.label_column, filled=True))
        return columns

    def prepare(self, splits, tokenizer, meta=None):
        d, positive = self.cfg.data, self.options.positive
        if positive not in set(splits["train"][d.label_column]):
            raise ConfigError("task_options.positive", f"{positive!r} is not a label of the training data", "name one of its labels")

        def encode(batch):
            out = tokenizer(list(batch[d.text_column]), truncation=True, max_length=d.max_length)
            out["labels"] = [int(v == positive) for v in batch[d.label_column]]
            return out

        out = {s: ds.map(encode, batched=True, remove_columns=ds.column_names) for s, ds in splits.items()}
        return out, {"positive": positive}

    @torch.no_grad()
    def predict(self, model_dir, ds, options):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        texts = list(ds[self.cfg.data.text_column])
        enc = tokenizer(texts, truncation=True, max_length=self.cfg.data.max_length, padding=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1)[:, 1]
        return [{"text": t, "positive": bool(p > 0.5), "score": float(p)} for t, p in zip(texts, probs)]
