"""token-classification: a tag per word (NER, chunking) from word lists or CoNLL files.

Data: JSON/JSONL/Parquet rows with a list of words (`task_options.words_column`, default "tokens")
and a list of tags (`task_options.tags_column`, default "ner_tags"), or CoNLL-style text files
(.conll, .txt, .bio, .iob, or any file with `task_options.format: conll`): one `word ... tag` per line
(the tag is the last whitespace field), a blank line between sentences, `-DOCSTART-` lines skipped.

Words are tokenised with `is_split_into_words=True`; each word's tag sits on its FIRST sub-token and
the other sub-tokens are ignored (-100), so metrics and predictions are per word. Words cut off by
`data.max_length` are not scored in training/validation (as in Hugging Face's run_ner); `launcher
predict` tags every word (long sentences are split into overlapping windows).

Metrics: entity-level precision / recall / F1 by seqeval's rules (`task_options.scheme`: IOB2 checks
spans strictly, IOB1 uses conlleval's lenient chunking) and word-level accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torchmetrics
from torch import nn

from launcher.data import files as data_lib
from launcher.errors import ConfigError
from launcher.data.counting import is_conll
from launcher.tasks.core import PadCollator, Task, TaskModule
from launcher.tasks.precheck import TokenClassificationColumns, check_words_and_tags, tag_strings, unseen_tags

SCHEMES = ("IOB2", "IOB1")
# Byte-level BPE tokenizers: they need add_prefix_space=True to tokenise pre-split words.
BYTE_LEVEL_BPE = ("RobertaTokenizer", "GPT2Tokenizer", "BloomTokenizer", "LongformerTokenizer", "BartTokenizer", "DebertaTokenizer")


@dataclass
class Options(TokenClassificationColumns):
    # words_column, tags_column, label_names: launcher.tasks.precheck
    scheme: str = "IOB2"
    """Tagging scheme for entity metrics: IOB2 (strict spans, B- starts every entity) or IOB1 (conlleval rules)."""
    format: Optional[str] = None
    """`conll` reads every file as CoNLL text; default: CoNLL for .conll/.txt/.bio/.iob files."""


# ---------------------------------------------------------------------- CoNLL files


def read_conll(key: str, path: str, words_column: str = "tokens", tags_column: str = "ner_tags"):
    """A CoNLL-style file → a Dataset with a words column and (when the lines carry tags) a tags column.

    Lines with one field are words without tags (input for `launcher predict`); lines with more have
    the word first and the tag last (middle columns such as POS and chunk tags are ignored).
    """
    import datasets

    if not os.path.isfile(path):
        raise ConfigError(key, f"file not found: {path}", "check the path (relative paths are from the current directory)")
    if os.path.getsize(path) == 0:
        raise ConfigError(key, f"file is empty: {path}", "give a file with at least one sentence")
    sentences, tags, words, wtags = [], [], [], []
    with_tags: Optional[bool] = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(words)
                    tags.append(wtags)
                words, wtags = [], []
                continue
            has_tag = len(fields) > 1
            if with_tags is None:
                with_tags = has_tag
            elif has_tag != with_tags:
                raise ConfigError(key, f"{path} line {lineno}: {'a tag' if has_tag else 'no tag'} here but "
                                  f"{'none' if has_tag else 'tags'} on earlier lines",
                                  "give every line `word tag` (or every line just `word` for prediction)")
            words.append(fields[0])
            wtags.append(fields[-1] if has_tag else None)
    if words:
        sentences.append(words)
        tags.append(wtags)
    if not sentences:
        raise ConfigError(key, f"no sentences in {path}", "CoNLL format: one `word tag` per line, a blank line between sentences")
    columns = {words_column: sentences}
    if with_tags:
        columns[tags_column] = tags
    return datasets.Dataset.from_dict(columns)


# ---------------------------------------------------------------------- metric


def seqeval_scores(target: list[list[str]], preds: list[list[str]], scheme: str = "IOB2") -> dict[str, float]:
    """Entity precision/recall/F1 (micro) and word accuracy, as seqeval computes them.

    IOB2: `mode="strict"` with the IOB2 scheme — an entity counts only when its span and type match
    exactly and it starts with B-. IOB1: seqeval's default (conlleval) chunking, where an I- tag after
    O or after another type starts an entity.
    """
    from seqeval import metrics as sm

    kwargs = {"zero_division": 0}
    if scheme == "IOB2":
        from seqeval.scheme import IOB2

        kwargs.update(mode="strict", scheme=IOB2)
    words = sum(len(t) for t in target)
    correct = sum(p == t for ps, ts in zip(preds, target) for p, t in zip(ps, ts))
    return {
        "precision": float(sm.precision_score(target, preds, **kwargs)),
        "recall": float(sm.recall_score(target, preds, **kwargs)),
        "f1": float(sm.f1_score(target, preds, **kwargs)),
        "accuracy": correct / words if words else 0.0,
    }


class SeqevalMetric(torchmetrics.Metric):
    """seqeval as a torchmetrics Metric, so tag sequences from every DDP rank are scored together.

    States are flat tensors of label ids plus each sentence's length ("cat" lists): tensors of any
    length gather across ranks (torchmetrics pads and trims them), and the lengths split them back
    into sentences in compute(). Every update appends, even with no rows, so each rank's states are
    non-empty tensors of the right dtype when they are gathered.
    """

    full_state_update = False

    def __init__(self, id2label: list[str], scheme: str = "IOB2", **kwargs):
        super().__init__(**kwargs)
        self.id2label = list(id2label)
        self.scheme = scheme
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> None:
        """preds/target: flat label ids of the scored words; lengths: words per sentence (sums to len(target))."""
        self.preds.append(preds.long().flatten())
        self.target.append(target.long().flatten())
        self.lengths.append(lengths.long().flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.utilities import dim_zero_cat

        preds, target, lengths = (dim_zero_cat(x).tolist() if (not isinstance(x, list) or x) else []
                                  for x in (self.preds, self.target, self.lengths))
        p_seqs, t_seqs, i = [], [], 0
        for n in lengths:
            p_seqs.append([self.id2label[j] for j in preds[i : i + n]])
            t_seqs.append([self.id2label[j] for j in target[i : i + n]])
            i += n
        scores = seqeval_scores(t_seqs, p_seqs, self.scheme)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}


# ---------------------------------------------------------------------- Lightning module


class TokenClassificationModule(TaskModule):
    def build_metrics(self) -> nn.ModuleDict:
        # Keys are ints after prepare() and strings after a JSON round trip (launcher.json).
        names = {int(k): v for k, v in self.meta["id2label"].items()}
        return nn.ModuleDict({"seqeval": SeqevalMetric([names[i] for i in range(self.meta["num_labels"])], self.meta["scheme"])})

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        preds = outputs.logits.detach().argmax(-1)[keep]
        labels = batch["labels"][keep]
        scored = labels != -100  # first sub-token of each (untruncated) word
        metrics["seqeval"].update(preds[scored], labels[scored], scored.sum(-1))

    def compute_metrics(self, metrics, loss) -> dict[str, float]:
        return metrics["seqeval"].compute()


# ---------------------------------------------------------------------- task


class TokenClassification(Task):
    name = "token-classification"
    default_monitor = "val_f1"
    Options = Options
    Module = TokenClassificationModule
    auto_model = "AutoModelForTokenClassification"
    pipeline_task = "token-classification"

    def __init__(self, cfg):
        super().__init__(cfg)
        o = self.options
        if o.scheme not in SCHEMES:
            raise ConfigError("task_options.scheme", f"invalid value {o.scheme!r}", "choose one of: " + ", ".join(SCHEMES))
        if o.format is not None and o.format.lower() not in ("conll", "auto"):
            raise ConfigError("task_options.format", f"invalid value {o.format!r}", "use conll (or leave it unset)")
        if o.format is not None and o.format.lower() == "auto":
            o.format = None

    # ------------------------------------------------------------------ data
    def read(self, key: str, path: str):
        if is_conll(path, self.options.format):
            return read_conll(key, path, self.options.words_column, self.options.tags_column)
        return data_lib.read_file(key, path)

    def check_split(self, split, path, ds) -> None:
        o = self.options
        key = f"data.{split}_file" if split != "predict" else "--input"
        if split == "predict":
            if o.words_column not in ds.column_names and self.cfg.data.text_column in ds.column_names:
                return  # plain texts: split on whitespace at prediction time
        super().check_split(split, path, ds)  # the columns (launcher.tasks.precheck)
        tag_names = self.tag_names(ds) if split != "predict" else None
        tags_col = list(ds[o.tags_column]) if split != "predict" else [None] * len(ds)
        check_words_and_tags(key, path, o, list(ds[o.words_column]), tags_col, tag_names)

    def tag_names(self, ds) -> Optional[list[str]]:
        """Names of integer tags: task_options.label_names, else the dataset's ClassLabel feature."""
        if self.options.label_names:
            return [str(n) for n in self.options.label_names]
        feature = ds.features.get(self.options.tags_column)
        inner = getattr(feature, "feature", None)
        return list(inner.names) if hasattr(inner, "names") else None

    def tags_as_strings(self, ds) -> list[list[str]]:
        return tag_strings(ds[self.options.tags_column], self.tag_names(ds))

    def check_tokenizer(self, tokenizer) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("model.tokenizer", "token-classification needs a fast (Rust) tokenizer to map sub-tokens to words",
                              "use a model folder with tokenizer.json, or set model.tokenizer to one")

    def load_tokenizer(self):
        tok = super().load_tokenizer()
        if getattr(tok, "add_prefix_space", None) is False and type(tok).__name__.startswith(BYTE_LEVEL_BPE):
            # Byte-level BPE tokenizers need a leading space per word to tokenise pre-split words as
            # they appear mid-sentence (Hugging Face's run_ner does the same).
            from transformers import AutoTokenizer

            m = self.cfg.model
            tok = AutoTokenizer.from_pretrained(m.tokenizer or m.name_or_path, trust_remote_code=m.trust_remote_code,
                                                revision=m.revision, add_prefix_space=True)
        return tok

    def prepare(self, splits, tokenizer, meta=None):
        self.check_tokenizer(tokenizer)
        o, d = self.options, self.cfg.data
        tags = {split: self.tags_as_strings(ds) for split, ds in splits.items() if o.tags_column in ds.column_names}
        if meta is None:
            names = sorted({t for row in tags["train"] for t in row})
            label2id = {n: i for i, n in enumerate(names)}
        else:
            label2id = {str(k): int(v) for k, v in meta["label2id"].items()}
        for split in ("validation", "test"):
            if split in tags:
                unseen = sorted({t for row in tags[split] for t in row} - set(label2id))
                if unseen:
                    raise unseen_tags(split, unseen)
        meta = {"num_labels": len(label2id), "id2label": {i: n for n, i in label2id.items()}, "label2id": label2id,
                "scheme": o.scheme}

        def encode(batch):
            return tokenize_words(tokenizer, batch[o.words_column], d.max_length, batch["_tag_ids"] if "_tag_ids" in batch else None)

        out = {}
        for split, ds in splits.items():
            if split in tags:
                ds = ds.add_column("_tag_ids", [[label2id[t] for t in row] for row in tags[split]])
            out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names,
                                num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
        return out, meta

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return PadCollator(DataCollatorForTokenClassification(tokenizer))

    def model_kwargs(self, meta):
        return {"num_labels": meta["num_labels"], "id2label": {int(k): v for k, v in meta["id2label"].items()},
                "label2id": {str(k): int(v) for k, v in meta["label2id"].items()}}

    # ------------------------------------------------------------------ predict
    def predict(self, model_dir, ds, options):
        """Word-level tags per row: {"tokens": [...], "tags": [...]} (each word's first sub-token decides)."""
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        o = self.options
        if o.words_column in ds.column_names:
            rows = list(ds[o.words_column])
        else:
            rows = [str(t).split() for t in ds[self.cfg.data.text_column]]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        device = torch.device(f"cuda:{options['device']}" if options.get("device", -1) >= 0 else "cpu")
        model.to(device)
        id2label = {int(k): v for k, v in model.config.id2label.items()}
        return [{"tokens": words, "tags": tags}
                for words, tags in zip(rows, tag_words(model, tokenizer, rows, self.cfg.data.max_length,
                                                        int(options.get("batch_size", 32)), id2label, device))]


def tokenize_words(tokenizer, words: list[list[str]], max_length: int, tag_ids: Optional[list[list[int]]]) -> dict:
    """Tokenise pre-split words; each word's tag id goes on its first sub-token, -100 elsewhere."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    out = {k: list(v) for k, v in enc.items()}
    if tag_ids is not None:
        labels = []
        for i, row in enumerate(tag_ids):
            previous, row_labels = None, []
            for w in enc.word_ids(i):
                row_labels.append(-100 if w is None or w == previous else row[w])
                previous = w
            labels.append(row_labels)
        out["labels"] = labels
    return out


@torch.no_grad()
def tag_words(model, tokenizer, rows: list[list[str]], max_length: int, batch_size: int, id2label: dict, device) -> list[list[str]]:
    """Tag every word of every row; rows longer than max_length run as overlapping windows."""
    stride = max(1, max_length // 4)
    tags: list[list[Optional[str]]] = [[None] * len(r) for r in rows]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, padding=True, return_tensors="pt")
        sample = enc.pop("overflow_to_sample_mapping").tolist()
        inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        preds = model(**inputs).logits.argmax(-1).tolist()
        for f, row in enumerate(sample):
            previous = None
            for pos, w in enumerate(enc.word_ids(f)):
                # A word's first sub-token in the first window that holds it decides its tag.
                if w is not None and w != previous and tags[start + row][w] is None:
                    tags[start + row][w] = id2label[preds[f][pos]]
                previous = w
    # A word that yields no sub-token at all (e.g. a lone control character) gets the "outside" tag.
    outside = "O" if "O" in id2label.values() else id2label[0]
    return [[t if t is not None else outside for t in row] for row in tags]
