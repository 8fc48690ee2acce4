"""base: an AutoModel backbone plus your own head and objective, given by import path.

Config:
    task: base
    task_options:
      head: launcher.tasks.base:MeanPoolClassifier   # "package.module:Class"
      head_args: {dropout: 0.1}                 # keyword arguments of the head's constructor

Head protocol (a plain torch.nn.Module class):
    - constructed as `Head(backbone_config, **head_args)`; when its constructor takes `num_labels` and
      head_args does not set it, the number of classes in `data.label_column` is passed;
    - called as `head(backbone_outputs, batch) -> dict` with "loss" (a scalar tensor, required while
      training) and optionally "logits". `backbone_outputs` is what the AutoModel returns
      (`last_hidden_state`, ...); `batch` holds the tokenised inputs and `labels` when the data has
      `data.label_column` (strings and ints become class ids 0..k-1 in sorted order; floats and lists
      are passed through unchanged);
    - optionally `head.build_metrics() -> {name: torchmetrics.Metric}`; each metric is updated with
      `(logits, labels)` on validation/test rows and logged as f"{stage}_{name}". val_loss is always
      logged and is the default checkpoint monitor.

The head module must be importable where the workers run: an installed package, or a module in the
directory `launcher` is started from (Ray puts the driver's working directory on the workers' path
on a local cluster; use `ray job submit --working-dir .` for remote clusters).

Export (<output_dir>/best): the backbone as a `save_pretrained` folder (loads with `AutoModel` and
`pipeline("feature-extraction")`), the head's weights in head.pt, and its import path and resolved
arguments in launcher.json ("head", "head_args"). To load both in Python:

    from launcher.tasks.base import load_exported
    model = load_exported("runs/x/best")          # BackboneWithHead, in eval mode
    out = model(**tokenizer(["some text"], return_tensors="pt"))   # out.logits, out.loss (None)

or by hand: `backbone = AutoModel.from_pretrained(d)`; `head = Head(backbone.config, **info["head_args"])`;
`head.load_state_dict(torch.load(f"{d}/head.pt"))`.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from launcher.errors import ConfigError, first_line
from launcher.resolve import import_object
from launcher.tasks.core import Task, TaskModule, load_model, update_all
from launcher.tasks.precheck import unseen_labels

HEAD_WEIGHTS = "head.pt"


@dataclass
class Options:
    head: str = ""
    """The head class as "package.module:Class" (e.g. launcher.tasks.base:MeanPoolClassifier). Required."""
    head_args: dict = field(default_factory=dict)
    """Keyword arguments for the head's constructor (after the backbone config)."""


def load_head_class(path: str, key: str = "task_options.head") -> type:
    """"package.module:Class" → the head class; every failure is a ConfigError naming `key`."""
    example = "e.g. --task_options.head launcher.tasks.base:MeanPoolClassifier"
    if not path:
        raise ConfigError(key, "is required for task base", example)
    return import_object(path, key, base=nn.Module, example=example)


class MeanPoolClassifier(nn.Module):
    """An example head: mean of the backbone's last hidden states over real tokens → dropout → linear
    → cross-entropy.

    Args:
        config: the backbone's config (its `hidden_size`, or `d_model`, sizes the classifier).
        num_labels: number of classes; the base task fills it in from the label column when not given.
        dropout: dropout on the pooled vector.

    Labels are class ids (the base task maps string labels to ids in sorted order).
    """

    def __init__(self, config, num_labels: int = 2, dropout: float = 0.1):
        super().__init__()
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model")
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, outputs, batch: dict) -> dict:
        hidden = outputs.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = F.cross_entropy(logits.float(), batch["labels"].long())
        return out

    def build_metrics(self) -> dict:
        import torchmetrics as tm

        k = self.num_labels
        return {"accuracy": tm.Accuracy(task="multiclass", num_classes=k),
                "f1": tm.F1Score(task="multiclass", num_classes=k, average="macro")}


@dataclass
class HeadOutput:
    """What BackboneWithHead returns: the head's loss and logits, the rest of its dict in `extras`."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    extras: dict = field(default_factory=dict)


class BackboneWithHead(nn.Module):
    """An AutoModel backbone and a user head behind one forward(**batch), saved as backbone folder + head.pt."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = backbone.config
        # A LoRA backbone (peft's PeftModel) names fewer inputs than the model it wraps: ask the model.
        inner = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        self._backbone_inputs = set(inspect.signature(inner.forward).parameters) - {"labels"}

    def forward(self, **batch) -> HeadOutput:
        outputs = self.backbone(**{k: v for k, v in batch.items() if k in self._backbone_inputs})
        out = self.head(outputs, batch)
        if not isinstance(out, dict):
            raise TypeError(f"{type(self.head).__name__} returned {type(out).__name__}; a head returns a dict with 'loss' (and optionally 'logits')")
        if self.training and out.get("loss") is None:
            raise ValueError(f"{type(self.head).__name__} returned no 'loss' while training (are labels in the batch? set data.label_column)")
        return HeadOutput(loss=out.get("loss"), logits=out.get("logits"),
                          extras={k: v for k, v in out.items() if k not in ("loss", "logits")})

    def save_pretrained(self, path: str, **kwargs) -> None:
        self.backbone.save_pretrained(path, **kwargs)
        torch.save(self.head.state_dict(), os.path.join(path, HEAD_WEIGHTS))


def load_exported(model_dir: str) -> BackboneWithHead:
    """An exported base-task folder → BackboneWithHead with its trained head, in eval mode."""
    from transformers import AutoModel

    with open(os.path.join(model_dir, "launcher.json")) as f:
        info = json.load(f)
    cls = load_head_class(info["head"])
    backbone = AutoModel.from_pretrained(model_dir)
    head = cls(backbone.config, **info.get("head_args", {}))
    head.load_state_dict(torch.load(os.path.join(model_dir, HEAD_WEIGHTS), map_location="cpu", weights_only=True))
    return BackboneWithHead(backbone, head).eval()


class BaseModule(TaskModule):
    def build_metrics(self) -> nn.ModuleDict:
        make = getattr(self.model.head, "build_metrics", None)
        return nn.ModuleDict(dict(make()) if make is not None else {})

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        if not len(metrics) or outputs.logits is None or "labels" not in batch:
            return
        update_all(metrics, outputs.logits.detach()[keep], batch["labels"][keep])


class BaseTask(Task):
    name = "base"
    default_monitor = "val_loss"
    Options = Options
    Module = BaseModule
    auto_model = "AutoModel"
    pipeline_task = "feature-extraction"
    # A head may leave backbone parameters out of the loss (MeanPoolClassifier ignores BERT's pooler);
    # DDP must then look for unused parameters each step instead of waiting for their gradients.
    ddp_find_unused_parameters = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head_cls = load_head_class(self.options.head)
        if not isinstance(self.options.head_args, dict):
            raise ConfigError("task_options.head_args", f"must be a mapping, got {self.options.head_args!r}", "e.g. {dropout: 0.1}")

    # ------------------------------------------------------------------ model
    def head_kwargs(self, meta: dict) -> dict:
        kwargs = dict(self.options.head_args)
        params = inspect.signature(self.head_cls.__init__).parameters
        if meta.get("label_names") and "num_labels" in params and "num_labels" not in kwargs:
            kwargs["num_labels"] = len(meta["label_names"])
        return kwargs

    def make_head(self, backbone_config, meta: dict) -> nn.Module:
        try:
            return self.head_cls(backbone_config, **self.head_kwargs(meta))
        except TypeError as e:
            raise ConfigError("task_options.head_args", f"{self.options.head}: {first_line(e)}",
                              f"the head is built as {self.head_cls.__name__}(backbone_config, **head_args)") from None

    def build_model(self, meta: dict, pretrained: bool = True) -> nn.Module:
        import transformers

        backbone = load_model(transformers.AutoModel, self.cfg, {}, pretrained=pretrained)
        head = self.make_head(backbone.config, meta)
        weights = os.path.join(self.cfg.model.name_or_path, HEAD_WEIGHTS)
        if pretrained and os.path.exists(weights) and self._same_head(self.cfg.model.name_or_path):
            # Continuing from (or evaluating) an exported base folder: keep its trained head.
            head.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return BackboneWithHead(backbone, head)

    def _same_head(self, folder: str) -> bool:
        try:
            with open(os.path.join(folder, "launcher.json")) as f:
                return json.load(f).get("head") == self.options.head
        except (OSError, ValueError):
            return False

    # ------------------------------------------------------------------ data
    def prepare(self, splits, tokenizer, meta=None):
        d = self.cfg.data
        has_labels = d.label_column in splits["train"].column_names
        for split, ds in splits.items():
            if has_labels and split != "train" and d.label_column not in ds.column_names:
                raise ConfigError("data.label_column", f"column {d.label_column!r} is in the training data but not in data.{split}_file",
                                  "give every split the same columns")
        names = None
        if meta is not None and meta.get("label_names"):
            names = list(meta["label_names"])
        elif has_labels:
            values = splits["train"][d.label_column]
            if all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                names = [str(v) for v in sorted(set(values), key=lambda v: (isinstance(v, str), v))]
        to_id = {n: i for i, n in enumerate(names)} if names else None
        if to_id is not None:
            for split in ("validation", "test"):
                if split in splits and d.label_column in splits[split].column_names:
                    unseen = sorted({str(v) for v in splits[split][d.label_column]} - set(to_id))
                    if unseen:
                        raise unseen_labels(split, unseen)
        meta = {"label_names": names, "has_labels": has_labels}
        # Fail on bad head_args here, before Ray starts.
        self.make_head(self.model_config(), meta)

        def encode(batch):
            args = (batch[d.text_column],) if not d.text_pair_column else (batch[d.text_column], batch[d.text_pair_column])
            out = tokenizer(*args, truncation=True, max_length=d.max_length)
            if has_labels and d.label_column in batch:
                values = batch[d.label_column]
                out["labels"] = [to_id[str(v)] for v in values] if to_id is not None else values
            return out

        out = {split: ds.map(encode, batched=True, remove_columns=ds.column_names,
                             num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
               for split, ds in splits.items()}
        return out, meta

    # ------------------------------------------------------------------ export / predict
    def export_extras(self, meta):
        return {"head": self.options.head, "head_args": self.head_kwargs(meta), "head_weights": HEAD_WEIGHTS}

    @torch.no_grad()
    def predict(self, model_dir, ds, options):
        """{"text", "logits"} per row, plus "label" when the head classifies into the training labels."""
        from transformers import AutoTokenizer, DataCollatorWithPadding

        d = self.cfg.data
        with open(os.path.join(model_dir, "launcher.json")) as f:
            names = (json.load(f).get("meta") or {}).get("label_names")
        model = load_exported(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        device = torch.device(f"cuda:{options['device']}" if options.get("device", -1) >= 0 else "cpu")
        model.to(device)
        pad = DataCollatorWithPadding(tokenizer)
        # datasets 5 returns lazy Column objects; tokenizers want lists.
        texts = list(ds[d.text_column])
        pairs = list(ds[d.text_pair_column]) if d.text_pair_column else None
        bs = int(options.get("batch_size", 32))
        rows = []
        for start in range(0, len(texts), bs):
            chunk = texts[start : start + bs]
            args = (chunk,) if pairs is None else (chunk, pairs[start : start + bs])
            enc = tokenizer(*args, truncation=True, max_length=d.max_length)
            batch = pad([{k: enc[k][i] for k in enc} for i in range(len(chunk))])
            out = model(**{k: v.to(device) for k, v in batch.items()})
            if out.logits is None:
                raise ConfigError("task_options.head", f"{type(model.head).__name__} returns no 'logits'", "return logits from the head to predict with it")
            for text, logits in zip(chunk, out.logits.float().cpu()):
                row: dict[str, Any] = {"text": text, "logits": logits.tolist()}
                if names and logits.ndim == 1 and len(logits) == len(names):
                    row["label"] = names[int(logits.argmax())]
                rows.append(row)
        return rows
