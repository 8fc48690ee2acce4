"""Tiny models built from configs: a 2-layer BERT and its word-level tokenizer over tests.helpers.data.WORDS."""

from __future__ import annotations

import os

from tests.helpers.data import WORDS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_bert_tokenizer(path: str, words=WORDS) -> None:
    from transformers import BertTokenizerFast

    os.makedirs(path, exist_ok=True)
    vocab = os.path.join(path, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(SPECIALS + list(words)) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (a path or dict); `vocab_file` is silently ignored
    # and leaves a tokenizer that maps every word to [UNK].
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(path)


def make_tiny_bert(path: str, dropout: float = 0.0, max_positions: int = 128, **overrides) -> str:
    """A 2-layer, hidden-32 BERT (≈ 50 k parameters) with a word-level vocabulary, saved to `path`."""
    from transformers import BertConfig, BertModel

    write_bert_tokenizer(path)
    config = BertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, **overrides)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path
