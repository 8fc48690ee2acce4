"""Fixed batch shapes for XLA: a graph is compiled per distinct input shape, so sequence lengths are
padded up to one of a few buckets and every batch has the full batch size."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from launcher.config import Config

if TYPE_CHECKING:
    import torch

#: Batch keys padded with -100 (the loss's ignore index) when a sequence axis grows.
IGNORE_KEYS = ("labels", "start_positions", "end_positions")


def length_buckets(max_length: int) -> list[int]:
    """Sequence-length buckets: max_length/8, /4, /2 and max_length, each rounded up to a multiple of 8."""
    sizes = {max_length}
    for div in (2, 4, 8):
        sizes.add(max(8, -(-(max_length // div) // 8) * 8))
    return sorted(s for s in sizes if s <= max_length)


def bucket_for(length: int, buckets: list[int]) -> int:
    """The smallest bucket that holds `length`; beyond the largest, the next multiple of it."""
    for b in buckets:
        if length <= b:
            return b
    top = buckets[-1]
    return -(-length // top) * top


class FixedShapeCollator:
    """Wraps a task's collator so that XLA sees a few shapes only.

    Every tensor with a sequence axis (dim 1) is padded on the tokenizer's padding side up to the
    next bucket (input ids with the pad token, label-like keys with -100, masks and the rest with 0),
    and a short batch is completed up to `batch_size`.
    """

    def __init__(self, inner: Callable, batch_size: int, buckets: list[int], pad_token_id: Optional[int], padding_side: str = "right"):
        self.inner = inner
        self.batch_size = batch_size
        self.buckets = buckets
        self.pad_token_id = pad_token_id if pad_token_id is not None else 0
        self.left = padding_side == "left"

    def pad_value(self, key: str) -> int:
        if key in IGNORE_KEYS or key.endswith("labels"):
            return -100
        if key.endswith("input_ids"):
            return self.pad_token_id
        return 0

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        rows = list(rows)
        missing = self.batch_size - len(rows)
        if rows and missing > 0:
            if "_pad" in rows[0]:
                # Evaluation: marked pad rows, which metrics skip (every example still scored once).
                filler = dict(rows[-1], _pad=1)
                if "_index" in filler:
                    filler["_index"] = -1
                rows += [dict(filler) for _ in range(missing)]
            else:
                # Training: the short last batch repeats its own rows, as DistributedSampler's
                # wrap-around padding does; the step count stays that of the CPU/GPU path.
                rows += [dict(rows[i % len(rows)]) for i in range(missing)]
        batch = self.inner(rows)
        for key, value in list(batch.items()):
            if isinstance(value, torch.Tensor) and value.ndim >= 2 and not key.startswith("_"):
                batch[key] = self._pad_axis1(key, value)
        return batch

    def _pad_axis1(self, key: str, t: "torch.Tensor") -> "torch.Tensor":
        import torch

        target = bucket_for(t.shape[1], self.buckets)
        extra = target - t.shape[1]
        if extra <= 0:
            return t
        shape = list(t.shape)
        shape[1] = extra
        pad = torch.full(shape, self.pad_value(key), dtype=t.dtype)
        return torch.cat([pad, t] if self.left else [t, pad], dim=1)


def collators(collate: Callable, tokenizer, cfg: Config) -> tuple[Callable, Callable]:
    """(train collator, evaluation collator) with fixed shapes for `cfg`."""
    buckets = length_buckets(cfg.data.max_length)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    side = getattr(tokenizer, "padding_side", "right")
    eval_bs = cfg.train.eval_batch_size_or_default()
    return (FixedShapeCollator(collate, cfg.train.batch_size, buckets, pad_id, side),
            FixedShapeCollator(collate, eval_bs, buckets, pad_id, side))
