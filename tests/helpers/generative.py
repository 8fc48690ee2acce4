"""Tiny generative models (GPT-2, T5, BART, BERT) built from configs, a word-level tokenizer written
here, and generated text data for the language-modeling, pretraining, summarization and translation
tests. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>", "<mask>"]
NOUNS = ["cat", "dog", "bird", "fish", "cow", "fox"]
VERBS = ["sat", "ran", "slept", "ate", "sang", "jumped"]
PLACES = ["mat", "park", "house", "tree", "river", "field"]
OTHER = ["the", "a", "on", "in", "by", "near", ".", "and", "then"]
FRENCH = {"the": "le", "a": "un", "cat": "chat", "dog": "chien", "bird": "oiseau", "fish": "poisson", "cow": "vache",
          "fox": "renard", "sat": "assis", "ran": "couru", "slept": "dormi", "ate": "mangé", "sang": "chanté", "jumped": "sauté"}
WORDS = sorted(set(NOUNS + VERBS + PLACES + OTHER + list(FRENCH.values())))
VOCAB_SIZE = len(SPECIALS) + len(WORDS)


def word_tokenizer(path: str, seq2seq: bool = False, mask: bool = True):
    """A word-level fast tokenizer (<pad>=0, </s>=1, <unk>=2, <s>=3, <mask>=4); seq2seq ones append </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if seq2seq:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}
    if mask:
        specials["mask_token"] = "<mask>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    return fast


def tiny_gpt2(path: str, positions: int = 64) -> str:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    word_tokenizer(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=2, n_positions=positions, bos_token_id=3,
                        eos_token_id=1, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def tiny_t5(path: str) -> str:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    word_tokenizer(path, seq2seq=True)
    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, num_heads=2, d_ff=64, num_layers=2, num_decoder_layers=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0)
    T5ForConditionalGeneration(config).save_pretrained(path)
    return path


def tiny_bart(path: str) -> str:
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    word_tokenizer(path, seq2seq=True)
    torch.manual_seed(0)
    config = BartConfig(vocab_size=VOCAB_SIZE, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, eos_token_id=1, bos_token_id=3, decoder_start_token_id=1, forced_eos_token_id=1, dropout=0.0)
    BartForConditionalGeneration(config).save_pretrained(path)
    return path


def bert_config_folder(path: str) -> str:
    """config.json + tokenizer only (no weights): what pretraining from scratch starts from."""
    from transformers import BertConfig

    from tests.helpers.data import WORDS as BERT_WORDS
    from tests.helpers.models import SPECIALS as BERT_SPECIALS, write_bert_tokenizer

    write_bert_tokenizer(path)
    BertConfig(vocab_size=len(BERT_SPECIALS) + len(BERT_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, architectures=["BertForPreTraining"]).save_pretrained(path)
    return path


# ---------------------------------------------------------------------- data


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(['the', 'a'])} {rng.choice(NOUNS)} {rng.choice(VERBS)} {rng.choice(['on', 'in', 'by', 'near'])} the {rng.choice(PLACES)} ."


def write_lines(path: str, n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("".join(sentence(rng) + "\n" for _ in range(n)))
    return path


def summary_rows(n: int, seed: int = 0) -> list[dict]:
    """Two-sentence documents whose summary is the first sentence (lead summarization)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        first, second = sentence(rng), sentence(rng)
        rows.append({"document": f"{first} {second}", "summary": first})
    return rows


def translation_rows(n: int, seed: int = 0) -> list[dict]:
    """{"translation": {"en": ..., "fr": ...}} rows: three-word phrases translated word by word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(["the", "a"]), rng.choice(NOUNS), rng.choice(VERBS)]
        rows.append({"translation": {"en": " ".join(words), "fr": " ".join(FRENCH[w] for w in words)}})
    return rows


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_documents(path: str, n_docs: int, seed: int = 0, sentences: int = 6) -> str:
    """Documents separated by blank lines, one sentence per line, in the tiny BERT's vocabulary."""
    from tests.helpers.data import sentiment_rows

    rows = [r["text"] for r in sentiment_rows(n_docs * sentences, seed=seed)]
    docs = ["\n".join(rows[i : i + sentences]) for i in range(0, len(rows), sentences)]
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return path
