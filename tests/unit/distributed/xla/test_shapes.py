"""launcher.distributed.xla.shapes: length buckets and the fixed-shape collator (no torch-xla needed)."""

from __future__ import annotations

import torch

from launcher.distributed.xla.shapes import FixedShapeCollator, bucket_for, length_buckets


def test_buckets():
    assert length_buckets(128) == [16, 32, 64, 128]
    assert length_buckets(32) == [8, 16, 32]
    assert length_buckets(100) == [16, 32, 56, 100]
    assert [bucket_for(n, [8, 16, 32]) for n in (1, 8, 9, 16, 17, 32, 33, 70)] == [8, 8, 16, 16, 32, 32, 64, 96]


def _rows(lengths, pad=None):
    rows = []
    for i, n in enumerate(lengths):
        row = {"input_ids": list(range(1, n + 1)), "labels": [i] * n if pad == "tokens" else i}
        if pad == "eval":
            row.update(_pad=0, _index=i)
        rows.append(row)
    return rows


def _inner(rows):
    """A minimal collator: right-pads input_ids (pad id 0) and token labels to the longest row."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows]),
           "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])}
    if isinstance(rows[0]["labels"], list):
        out["labels"] = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    else:
        out["labels"] = torch.tensor([r["labels"] for r in rows])
    for k in ("_pad", "_index"):
        if k in rows[0]:
            out[k] = torch.tensor([r[k] for r in rows])
    return out


def test_training_batch_is_filled_and_bucketed():
    collate = FixedShapeCollator(_inner, batch_size=4, buckets=[8, 16, 32], pad_token_id=0)
    batch = collate(_rows([3, 11]))
    assert batch["input_ids"].shape == (4, 16) and batch["attention_mask"].shape == (4, 16)
    # The short batch repeats its own rows (wrap-around), the extra columns are padding.
    assert batch["labels"].tolist() == [0, 1, 0, 1]
    assert batch["attention_mask"].sum(1).tolist() == [3, 11, 3, 11]
    assert batch["input_ids"][1, 11:].eq(0).all()


def test_eval_batch_gets_marked_pad_rows_and_token_labels_ignore_index():
    collate = FixedShapeCollator(_inner, batch_size=4, buckets=[8, 16], pad_token_id=7, padding_side="left")
    rows = _rows([5, 6, 2], pad="eval")
    for r in rows:
        r["labels"] = [1] * len(r["input_ids"])
    batch = collate(rows)
    assert batch["_pad"].tolist() == [0, 0, 0, 1] and batch["_index"].tolist() == [0, 1, 2, -1]
    assert batch["input_ids"].shape == (4, 8)
    # Left padding side: the bucket padding goes in front, with the pad id and -100 for labels.
    assert batch["input_ids"][0, :2].tolist() == [7, 7] and batch["labels"][0, :2].tolist() == [-100, -100]
    assert batch["attention_mask"][0, :2].tolist() == [0, 0]


def test_bucketing_turns_many_batch_shapes_into_few(tiny_bert):
    """What the compile count rests on: over an epoch of 15 batches of 3-27 word texts, dynamic padding
    gives a new shape every few batches (one XLA graph each); the fixed-shape collator one per bucket."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from tests.helpers.data import sentiment_rows
    from launcher.tasks.core import PadCollator

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = [dict(tok(r["text"], truncation=True, max_length=32), labels=i % 2)
            for i, r in enumerate(sentiment_rows(117, seed=11, min_len=2, max_len=26))]
    dynamic = PadCollator(DataCollatorWithPadding(tok))
    fixed = FixedShapeCollator(dynamic, batch_size=8, buckets=length_buckets(32), pad_token_id=tok.pad_token_id)
    batches = [rows[i:i + 8] for i in range(0, 117, 8)]  # 15 batches, the last one short (5 rows)
    shapes = {tuple(dynamic([dict(r) for r in b])["input_ids"].shape) for b in batches}
    bucketed = {tuple(fixed([dict(r) for r in b])["input_ids"].shape) for b in batches}
    assert len(shapes) >= 6 and bucketed <= {(8, 8), (8, 16), (8, 32)}, (shapes, bucketed)
