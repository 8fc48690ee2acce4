"""sequence-classification: single texts or text pairs → a class (string or int labels) or a score.

Labels: strings or ints become classes (id2label/label2id saved in the exported config); a float
label column means regression (num_labels=1). Metrics: accuracy, macro-F1, MCC; Pearson/Spearman
and MSE for regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from launcher.errors import ConfigError
from launcher.tasks.core import Task, TaskModule, update_all
from launcher.tasks.precheck import SequenceClassificationColumns, one_label, unseen_labels


@dataclass
class Options(SequenceClassificationColumns):
    pass  # regression: launcher.tasks.precheck


class SequenceClassificationModule(TaskModule):
    def build_metrics(self) -> nn.ModuleDict:
        import torchmetrics as tm

        if self.meta["regression"]:
            return nn.ModuleDict({"pearson": tm.PearsonCorrCoef(), "spearman": tm.SpearmanCorrCoef(), "mse": tm.MeanSquaredError()})
        k = self.meta["num_labels"]
        return nn.ModuleDict({
            "accuracy": tm.Accuracy(task="multiclass", num_classes=k),
            "f1": tm.F1Score(task="multiclass", num_classes=k, average="macro"),
            "mcc": tm.MatthewsCorrCoef(task="multiclass", num_classes=k),
        })

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        logits = outputs.logits.detach().float()[keep]
        update_all(metrics, logits.squeeze(-1) if self.meta["regression"] else logits.argmax(-1), batch["labels"][keep])


class SequenceClassification(Task):
    name = "sequence-classification"
    default_monitor = "val_accuracy"
    Options = Options
    Module = SequenceClassificationModule
    auto_model = "AutoModelForSequenceClassification"
    pipeline_task = "text-classification"

    def label_info(self, splits: dict, meta: Optional[dict]) -> dict:
        """Label map from the training data (or from an exported model's config when given)."""
        col = self.cfg.data.label_column
        if meta is not None:
            return meta
        values = splits["train"][col]
        floats = any(isinstance(v, float) and not float(v).is_integer() for v in values)
        regression = self.options.regression if self.options.regression is not None else floats
        if regression:
            return {"regression": True, "num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}}
        labels = sorted({v for v in values}, key=lambda v: (isinstance(v, str), v))
        if len(labels) < 2:
            raise one_label(labels[0])
        names = [str(v) for v in labels]
        if all(isinstance(v, int) for v in labels) and labels == list(range(len(labels))):
            mapping = {v: v for v in labels}
        else:
            mapping = {v: i for i, v in enumerate(labels)}
        return {"regression": False, "num_labels": len(labels), "id2label": {i: n for i, n in enumerate(names)},
                "label2id": {n: i for i, n in enumerate(names)}, "_raw_to_id": {str(k): v for k, v in mapping.items()}}

    def prepare(self, splits, tokenizer, meta=None):
        d = self.cfg.data
        meta = self.label_info(splits, meta)
        if not meta["regression"]:
            raw_to_id = self.raw_to_id(meta)
            for split in ("validation", "test"):
                if split in splits:
                    unseen = sorted({str(v) for v in splits[split][d.label_column]} - set(raw_to_id))
                    if unseen:
                        raise unseen_labels(split, unseen)
        encode = self.encoder(tokenizer, meta)
        out = {}
        for split, ds in splits.items():
            out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names,
                                num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
        meta = {k: v for k, v in meta.items() if not k.startswith("_")}
        return out, meta

    @staticmethod
    def raw_to_id(meta: dict) -> dict:
        return meta.get("_raw_to_id") or {str(k): int(v) for k, v in meta["label2id"].items()}

    def encoder(self, tokenizer, meta):
        d = self.cfg.data
        regression = meta["regression"]
        raw_to_id = None if regression else self.raw_to_id(meta)

        def encode(batch):
            args = (batch[d.text_column],) if not d.text_pair_column else (batch[d.text_column], batch[d.text_pair_column])
            out = tokenizer(*args, truncation=True, max_length=d.max_length)
            if d.label_column in batch:
                if regression:
                    out["labels"] = [float(v) for v in batch[d.label_column]]
                else:
                    out["labels"] = [raw_to_id[str(v)] for v in batch[d.label_column]]
            return out

        return encode

    def stream_columns(self):
        d = self.cfg.data
        cols = {"data.text_column": d.text_column, "data.label_column": d.label_column}
        if d.text_pair_column:
            cols["data.text_pair_column"] = d.text_pair_column
        return cols

    def stream_meta(self, rows):
        col = self.cfg.data.label_column
        if col not in rows.columns():
            raise ConfigError("data.label_column", f"column {col!r} not in {self.cfg.data.train_file}",
                              "present columns: " + ", ".join(c for c in rows.columns() if c != "path"))
        values = [v for v in rows.unique(col) if v is not None and not (isinstance(v, str) and not v.strip())]
        return self.label_info({"train": {col: values}}, None)

    def model_kwargs(self, meta):
        kwargs = {"num_labels": meta["num_labels"], "id2label": {int(k): v for k, v in meta["id2label"].items()},
                  "label2id": dict(meta["label2id"])}
        if meta["regression"]:
            kwargs["problem_type"] = "regression"
        else:
            kwargs["problem_type"] = "single_label_classification"
        return kwargs

    def predict(self, model_dir, ds, options):
        from transformers import pipeline

        d = self.cfg.data
        clf = pipeline("text-classification", model=model_dir, device=options.get("device", -1))
        texts = list(ds[d.text_column])  # datasets 5 returns a lazy Column, which pipelines reject
        inputs = texts if not d.text_pair_column else [{"text": a, "text_pair": b} for a, b in zip(texts, list(ds[d.text_pair_column]))]
        # Regression scores are raw; classification keeps the pipeline's default (softmax / sigmoid).
        # transformers 5 has no "default" choice any more: leave the argument out instead.
        regression = getattr(clf.model.config, "problem_type", None) == "regression"
        preds = clf(inputs, batch_size=options.get("batch_size", 32), truncation=True, max_length=d.max_length,
                    **({"function_to_apply": "none"} if regression else {}))
        return [{"text": t, "label": p["label"], "score": float(p["score"])} for t, p in zip(texts, preds)]
