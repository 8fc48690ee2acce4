"""Shared test builders: tiny models built from configs, generated data, configs, clusters. Nothing is downloaded.

models (tiny BERT and its tokenizer), data (word lists, sentiment rows, CSV/JSONL writers), config
(base_config), cli (run_cli), tasks (metric sync and export checks shared by the task tests), generative
(tiny GPT-2/T5/BART), cluster (isolated Ray heads, S3), faults (fault injection), paths (the checkout).
"""
