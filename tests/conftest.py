"""Shared fixtures: tiny models built from configs, tiny tokenizers written here, generated data.

Nothing is downloaded. A session-wide local Ray (2 CPUs) is shared by every `ray`-marked test so
each run pays only for its worker group, not for starting Ray.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

POSITIVE = ["good", "great", "fine", "superb", "lovely", "brilliant"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "terrible"]
FILLER = ["the", "film", "movie", "was", "plot", "acting", "a", "very", "and", "story", "it", "is", "quite", "this"]
ENTITY_WORDS = ["paris", "london", "alice", "bob", "acme", "google", "monday", "berlin"]
EXTRA = ["what", "who", "where", "lives", "in", "works", "at", "?", ".", ",", "[", "]", "x", "y", "z", "one", "two"]
WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER + ENTITY_WORDS + EXTRA))
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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return make_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


def sentiment_rows(n: int, seed: int = 0, min_len: int = 2, max_len: int = 6) -> list[dict]:
    """Texts whose label is decided by a sentiment word among filler; real variable lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(min_len, max_len))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "pos" if label else "neg"})
    rng.shuffle(rows)
    return rows


def write_csv(path: str, rows: list[dict]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def sentiment_files(tmp_path):
    return {
        "train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(240, seed=1)),
        "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(30, seed=2)),
        "test": write_csv(str(tmp_path / "test.csv"), sentiment_rows(30, seed=3)),
    }


def base_config(model: str, files: dict, output_dir: str, task: str = "sequence-classification", **sections):
    """A Config for a tiny, fast run: 2 workers x 0.5 CPU, small batches, no TensorBoard."""
    from launcher.config import Config

    cfg = Config(task=task, output_dir=output_dir)
    cfg.model.name_or_path = model
    cfg.data.train_file = files["train"]
    cfg.data.validation_file = files.get("validation")
    cfg.data.test_file = files.get("test")
    cfg.data.max_length = 32
    cfg.optim.lr = 5e-3
    cfg.train.max_epochs = 2
    cfg.train.batch_size = 4
    cfg.train.accumulate_grad_batches = 2
    cfg.ray.num_workers = 2
    cfg.ray.cpus_per_worker = 0.5
    cfg.ray.max_failures = 0
    cfg.logging.tensorboard = False
    cfg.logging.progress_every_s = 30
    for section, values in sections.items():
        target = getattr(cfg, section)
        if isinstance(values, dict) and not isinstance(target, dict):
            for k, v in values.items():
                setattr(target, k, v)
        else:
            setattr(cfg, section, values)
    return cfg


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, dashboard on loopback) for all ray-marked tests in this process."""
    import ray

    if not ray.is_initialized():
        from launcher.distributed.cluster import free_port

        # RAY_API_SERVER_ADDRESS: see launcher.distributed.init_ray (Train's placement-group cleaner
        # would otherwise ask another `ray start` cluster on this machine whether our runs are alive).
        port = free_port()
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 log_to_driver=True, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
                                                               "RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S": "60",
                                                               "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})
    yield ray
    ray.shutdown()


def run_cli(*args: str, cwd: str | None = None, env: dict | None = None, timeout: int = 600):
    """Run `python -m launcher ...` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def as_rank0_of_two(make, other):
    """A torchmetrics Metric whose compute() syncs as rank 0 of a 2-rank job would, without a process group.

    `make(**kwargs)` builds the metric; its gather returns [own state, `other`'s state] for each state
    (what all_gather hands rank 0), and torchmetrics concatenates them as in a real DDP sync.
    """
    from torchmetrics.utilities import dim_zero_cat

    calls = []

    def gather(tensor, group=None):
        theirs = [dim_zero_cat(v) for v in other.metric_state.values()]
        calls.append(1)
        return [tensor, theirs[(len(calls) - 1) % len(theirs)]]

    return make(dist_sync_fn=gather, distributed_available_fn=lambda: True)


def validate_then_evaluate_export(cfg) -> tuple[dict, dict]:
    """Validate an untrained task module in process, export it, and score the export with `launcher evaluate`.

    Returns (in-memory validation metrics, `launcher evaluate` metrics of the exported folder): the
    same weights and data must give the same numbers, whatever the task's export and reload involve.
    """
    import lightning.pytorch as pl
    import torch

    from launcher import export as export_lib
    from launcher.commands import evaluate as evaluate_cmd
    from launcher.config import to_dict
    from launcher.files import write_yaml
    from launcher.training import loop as loop_lib
    from launcher.training import prepare as prepare_lib

    p = prepare_lib.prepare(cfg)
    torch.manual_seed(0)
    module = p.task.module(p.meta, p.tokenizer)
    module.model.eval()
    loader = loop_lib.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)["validation"]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    direct = trainer.validate(module, loader, verbose=False)[0]
    best = os.path.join(cfg.output_dir, "best")
    export_lib.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
    write_yaml(os.path.join(cfg.output_dir, "config.yaml"), to_dict(cfg))
    out = os.path.join(cfg.output_dir, "evaluate.json")
    assert evaluate_cmd.main([os.path.join(cfg.output_dir, "config.yaml"), "--model", best, "--split", "validation", "--output", out]) == 0
    with open(out) as f:
        return direct, json.load(f)
