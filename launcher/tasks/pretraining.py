"""pretraining: a model's own pretraining objectives, through AutoModelForPreTraining.

Which objectives run follows the model's pretraining head:
- a next-sentence head (BERT): masked LM + next-sentence prediction. Sentence pairs are built from
  documents as the original BERT data pipeline does: segments of consecutive sentences up to
  `block_size` tokens, split at a random sentence; half of the time (`random_next_probability`) the
  second segment comes from another document (label 1), else it is the true continuation (label 0);
- a sentence-order head (ALBERT): masked LM + sentence-order prediction (two consecutive segments,
  swapped half the time; label 1 = swapped);
- a masked-LM head (RoBERTa, ...): masked LM on packed blocks.
Causal models are trained with `--task language-modeling` (with `--model.from_config true` from scratch).

Input: a .txt file whose documents are separated by blank lines, one sentence per line; or a text
column with one document per row (its lines are its sentences; a single line is split after . ! ?).
Pairs are drawn once per run with the run's seed; masking is redrawn every training epoch and fixed
per example for validation.

Metrics: mlm_loss (token-weighted) and mlm_perplexity = exp(mlm_loss); nsp_loss and nsp_accuracy
(sop_* for ALBERT); loss = mlm_loss + nsp_loss, the model's own training loss.
"""

from __future__ import annotations

import inspect
import random
import re
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from launcher.data import files as data_lib
from launcher.errors import ConfigError
from launcher.tasks.core import Task, TaskModule
from launcher.tasks.language_modeling import LMCollator, block_size_for, encode_lm, fill_mask, perplexity, token_loss

#: objective → (batch key of the pair label, metric prefix)
PAIR_OBJECTIVES = {"nsp": ("next_sentence_label", "nsp"), "sop": ("sentence_order_label", "sop")}
_SPLIT_SEED = {"train": 0, "validation": 1, "test": 2}


@dataclass
class Options:
    mlm_probability: float = 0.15
    """Fraction of tokens selected for masked-LM prediction (80% [MASK], 10% random, 10% kept)."""
    random_next_probability: float = 0.5
    """NSP: fraction of pairs whose second segment comes from another document."""
    short_seq_probability: float = 0.1
    """Fraction of pairs built to a random shorter length (as BERT does, so short inputs are seen too)."""

    def __post_init__(self):
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not 0 <= self.random_next_probability <= 1:
            raise ValueError(f"random_next_probability must be in [0, 1], got {self.random_next_probability}")
        if not 0 <= self.short_seq_probability <= 1:
            raise ValueError(f"short_seq_probability must be in [0, 1], got {self.short_seq_probability}")


def pretraining_objective(model_config) -> str:
    """nsp, sop or mlm, from the forward signature of the model type's pretraining class."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_PRETRAINING_MAPPING_NAMES

    model_type = getattr(model_config, "model_type", "?")
    name = MODEL_FOR_PRETRAINING_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise ConfigError("model.name_or_path", f"{model_type} has no pretraining head in transformers",
                          "use --task language-modeling for causal or masked LM training")
    params = inspect.signature(cls.forward).parameters
    if "next_sentence_label" in params:
        return "nsp"
    if "sentence_order_label" in params:
        return "sop"
    if name.endswith("MaskedLM"):
        return "mlm"
    raise ConfigError("model.name_or_path", f"the pretraining objective of {name} is not supported (supported: masked LM, "
                      "+ next-sentence or sentence-order prediction)",
                      "for causal models use --task language-modeling (add --model.from_config true to start from random weights)")


# ---------------------------------------------------------------------- documents → pairs


def document_sentences(text: str) -> list[str]:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [s for s in re.split(r"(?<=[.!?])\s+", lines[0]) if s]
    return lines


def sentence_pairs(docs: list[list[str]], lengths: list[list[int]], max_tokens: int, objective: str, rng: random.Random,
                   random_next: float = 0.5, short_seq: float = 0.1, pool: list[list[str]] | None = None) -> list[tuple[str, str, int]]:
    """(segment A, segment B, label) pairs from documents of sentences, as BERT's create_pretraining_data.

    Args:
        docs: sentences per document; lengths: their token counts.
        max_tokens: token budget of A + B (block size minus the pair's special tokens).
        objective: nsp (B is the continuation, label 0, or from another document of `pool`, label 1)
            or sop (A and B consecutive; swapped with label 1 half of the time).
        pool: documents that random next segments come from (default: `docs`).
    """
    pool = pool if pool is not None else docs
    pairs = []
    for d, (sents, lens) in enumerate(zip(docs, lengths)):
        target = rng.randint(2, max_tokens) if rng.random() < short_seq else max_tokens
        chunk, size, i = [], 0, 0
        while i < len(sents):
            chunk.append(i)
            size += lens[i]
            if i == len(sents) - 1 or size >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [sents[j] for j in chunk[:a_end]]
                b, label = [], 0
                if objective == "nsp" and (len(chunk) == 1 or rng.random() < random_next):
                    others = [k for k in range(len(pool)) if pool[k] is not sents and pool[k]]
                    if others:
                        other = pool[rng.choice(others)]
                        start = rng.randrange(len(other))
                        budget = target - sum(lens[j] for j in chunk[:a_end])
                        b = other[start : start + max(1, _fit(other[start:], budget))]
                        label = 1
                        i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    b = [sents[j] for j in chunk[a_end:]]
                    if objective == "sop" and b and rng.random() < 0.5:
                        a, b, label = b, a, 1
                if a and b:
                    pairs.append((" ".join(a), " ".join(b), label))
                chunk, size = [], 0
                target = rng.randint(2, max_tokens) if rng.random() < short_seq else max_tokens
            i += 1
    return pairs


def _fit(sentences: list[str], budget: int) -> int:
    # Approximate (whitespace words): the tokenizer truncates the pair to block_size anyway.
    n, used = 0, 0
    for s in sentences:
        used += len(s.split())
        if used > budget and n:
            break
        n += 1
    return n


# ---------------------------------------------------------------------- Lightning


class PretrainingModule(TaskModule):
    def build_metrics(self) -> nn.ModuleDict:
        import torchmetrics as tm

        metrics = {"mlm": tm.MeanMetric()}
        if self.meta["objective"] in PAIR_OBJECTIVES:
            metrics["pair_loss"] = tm.MeanMetric()
            metrics["pair_accuracy"] = tm.Accuracy(task="multiclass", num_classes=2)
        return nn.ModuleDict(metrics)

    def eval_forward(self, batch, stage):
        inputs = self.model_inputs(batch)
        labels = inputs.pop("labels")
        pair_key = PAIR_OBJECTIVES.get(self.meta["objective"], (None,))[0]
        pair_labels = inputs.pop(pair_key) if pair_key else None
        keep = batch["_pad"] == 0 if "_pad" in batch else torch.ones(labels.shape[0], dtype=torch.bool)
        out = self.model(**inputs)
        logits = out.prediction_logits if "prediction_logits" in out else out.logits
        total, tokens = token_loss(logits, labels, keep, shift=False)
        pair_logits = None
        if pair_key:
            pair_logits = out.seq_relationship_logits if "seq_relationship_logits" in out else out.sop_logits
        # loss=None: the epoch loss (mlm + pair loss) is assembled in compute_metrics from exact parts.
        return SimpleNamespace(loss=None, mlm_sum=total, tokens=tokens, pair_logits=pair_logits, pair_labels=pair_labels)

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        if outputs.tokens:
            metrics["mlm"].update(outputs.mlm_sum.detach() / outputs.tokens, weight=outputs.tokens)
        if outputs.pair_logits is not None and int(keep.sum()):
            logits = outputs.pair_logits.detach().float()[keep]
            labels = outputs.pair_labels[keep]
            metrics["pair_loss"].update(F.cross_entropy(logits, labels), weight=len(labels))
            metrics["pair_accuracy"].update(logits.argmax(-1), labels)

    def compute_metrics(self, metrics, loss):
        mlm = float(metrics["mlm"].compute()) if metrics["mlm"].update_called else float("nan")
        values = {"mlm_loss": mlm, "mlm_perplexity": perplexity(mlm), "loss": mlm}
        if "pair_loss" in metrics:
            prefix = PAIR_OBJECTIVES[self.meta["objective"]][1]
            pair = float(metrics["pair_loss"].compute()) if metrics["pair_loss"].update_called else float("nan")
            values[f"{prefix}_loss"] = pair
            values[f"{prefix}_accuracy"] = float(metrics["pair_accuracy"].compute()) if metrics["pair_accuracy"].update_called else float("nan")
            values["loss"] = mlm + pair
        return values


class Pretraining(Task):
    name = "pretraining"
    default_monitor = "val_loss"
    Options = Options
    Module = PretrainingModule
    auto_model = "AutoModelForPreTraining"
    pipeline_task = "fill-mask"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.objective = None
        self.block_size = None

    def check_model(self, model_config, tokenizer) -> None:
        self.objective = pretraining_objective(model_config)
        if tokenizer.mask_token is None:
            raise ConfigError("model.tokenizer", "masked-LM pretraining needs a tokenizer with a mask token; this one has none",
                              "use the model's own tokenizer (e.g. a BERT WordPiece tokenizer with [MASK])")
        self.block_size = block_size_for(self.cfg, model_config)
        if self.objective in PAIR_OBJECTIVES and self.block_size <= tokenizer.num_special_tokens_to_add(pair=True) + 2:
            raise ConfigError("data.block_size", f"{self.block_size} leaves no room for two segments", "use 16 or more")

    def read(self, key, path):
        # Training documents are separated by blank lines (one row per document); a `launcher predict`
        # input holds one text per line.
        return data_lib.read_file(key, path, **({"sample_by": "paragraph"} if key.startswith("data.") else {}))

    def prepare(self, splits, tokenizer, meta=None):
        if meta is not None:
            self.objective, self.block_size = meta["objective"], meta["block_size"]
        elif self.objective is None:
            self.check_model(self.model_config(), tokenizer)
        d = self.cfg.data
        out = {}
        if self.objective == "mlm":
            for split, ds in splits.items():
                out[split] = encode_lm(ds, tokenizer, d.text_column, "masked", self.block_size, True, documents=True,
                                       num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
        else:
            docs = {split: [s for s in (document_sentences(t) for t in ds[d.text_column]) if s] for split, ds in splits.items()}
            if self.objective == "nsp" and len(docs.get("train", [])) < 2:
                raise ConfigError("data.train_file", f"next-sentence prediction needs at least 2 documents, found {len(docs.get('train', []))}",
                                  "separate documents with a blank line (.txt) or give one document per row")
            for split, split_docs in docs.items():
                out[split] = self.encode_pairs(split, split_docs, docs.get("train") or split_docs, tokenizer)
        return out, {"objective": self.objective, "block_size": self.block_size}

    def encode_pairs(self, split: str, docs: list[list[str]], train_docs: list[list[str]], tokenizer):
        import datasets

        flat = [s for doc in docs for s in doc]
        counts = [len(x) for x in tokenizer(flat, add_special_tokens=False)["input_ids"]] if flat else []
        lengths, k = [], 0
        for doc in docs:
            lengths.append(counts[k : k + len(doc)])
            k += len(doc)
        max_tokens = self.block_size - tokenizer.num_special_tokens_to_add(pair=True)
        rng = random.Random(self.cfg.train.seed * 1000 + _SPLIT_SEED.get(split, 3))
        pool = docs if len(docs) >= 2 else train_docs
        o = self.options
        pairs = sentence_pairs(docs, lengths, max_tokens, self.objective, rng, o.random_next_probability, o.short_seq_probability, pool)
        if not pairs:
            return datasets.Dataset.from_dict({"input_ids": []})
        enc = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation="longest_first", max_length=self.block_size,
                        return_special_tokens_mask=True, return_token_type_ids=True)
        label_key = PAIR_OBJECTIVES[self.objective][0]
        return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                                           "special_tokens_mask": enc["special_tokens_mask"], label_key: [p[2] for p in pairs]})

    def collator(self, tokenizer):
        return LMCollator(tokenizer, "masked", self.options.mlm_probability, self.cfg.train.seed)

    def export_extras(self, meta):
        return {"pipeline": "fill-mask"}

    def predict(self, model_dir, ds, options):
        return fill_mask(model_dir, ds[self.cfg.data.text_column], options)
