"""Example heads for the `base` task (an AutoModel backbone + your own objective).

The head protocol (see launcher/tasks/base_head.py for the full contract):

    head = Head(backbone_config, **task_options.head_args)        # an nn.Module
    out = head(backbone_outputs, batch)                            # dict: "loss" (training), "logits" optional
    metrics = head.build_metrics()                                 # optional: {name: torchmetrics.Metric}

`batch` holds the tokenised inputs (input_ids, attention_mask, ...) and `labels` when the data has a
`data.label_column`. Point the config at a head with `task_options.head: "pkg.module:Class"`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class MeanPoolClassifier(nn.Module):
    """Mean of the backbone's last hidden states over real tokens → dropout → linear → cross-entropy.

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

