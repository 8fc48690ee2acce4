"""token-classification: CoNLL parsing, first-sub-token alignment, seqeval metric rules, data errors, one Ray run."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from tests.helpers.config import base_config
from tests.helpers.data import write_jsonl
from tests.helpers.models import SPECIALS, make_tiny_bert
from tests.helpers.tasks import as_rank0_of_two, validate_then_evaluate_export
from launcher.__main__ import main as launcher_main
from launcher.config import ConfigError
from launcher.tasks.token_classification import (SeqevalMetric, TokenClassification, read_conll, seqeval_scores,
                                                 tokenize_words)


def ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences from three templates: one-word PER/LOC entities and a two-word ORG (B-ORG I-ORG)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        per, loc, org = rng.choice(["alice", "bob"]), rng.choice(["paris", "london", "berlin"]), rng.choice(["acme", "google"])
        kind = rng.randrange(3)
        if kind == 0:
            words, tags = [per, "lives", "in", loc, "."], ["B-PER", "O", "O", "B-LOC", "O"]
        elif kind == 1:
            words, tags = [per, "works", "at", org, "x", "."], ["B-PER", "O", "O", "B-ORG", "I-ORG", "O"]
        else:
            words, tags = ["who", "lives", "in", loc, "?"], ["O", "O", "O", "B-LOC", "O"]
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


def write_conll(path: str, rows: list[dict], with_tags: bool = True) -> str:
    with open(path, "w") as f:
        f.write("-DOCSTART- -X- O O\n\n")
        for r in rows:
            for w, t in zip(r["tokens"], r["ner_tags"]):
                f.write(f"{w} NN I-NP {t}\n" if with_tags else f"{w}\n")
            f.write("\n")
    return path


# ---------------------------------------------------------------------- metric


def test_iob1_and_iob2_differ_on_an_entity_that_starts_with_i():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]
    # conlleval (IOB1): I- after O opens an entity, so PER(0..1) matches exactly.
    assert seqeval_scores(gold, pred, "IOB1")["f1"] == 1.0
    # strict IOB2: an entity must start with B-, so the prediction holds no entity at all.
    strict = seqeval_scores(gold, pred, "IOB2")
    assert strict["f1"] == 0.0 and strict["precision"] == 0.0 and strict["recall"] == 0.0
    assert strict["accuracy"] == pytest.approx(2 / 3)


def test_entity_precision_recall_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    s = seqeval_scores(gold, pred, "IOB2")
    # predicted PER, ORG, ORG, LOC (4): PER and the second ORG are right; gold PER, LOC, ORG (3).
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_metric_combines_sentences_from_two_ranks():
    names = ["B-LOC", "B-PER", "I-PER", "O"]
    ids = {n: i for i, n in enumerate(names)}

    def update(m, gold_rows, pred_rows):
        flat = lambda rows: torch.tensor([ids[t] for r in rows for t in r], dtype=torch.long)
        m.update(flat(pred_rows), flat(gold_rows), torch.tensor([len(r) for r in gold_rows]))

    gold0, pred0 = [["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]
    gold1, pred1 = [["O", "B-LOC"], ["B-PER"]], [["O", "O"], ["B-PER"]]
    rank1 = SeqevalMetric(names)
    rank0 = as_rank0_of_two(lambda **kw: SeqevalMetric(names, **kw), rank1)
    update(rank0, gold0, pred0)
    update(rank0, [], [])  # a batch of pad rows only: still an update, so every rank has states
    update(rank1, gold1, pred1)
    got = {k: float(v) for k, v in rank0.compute().items()}
    want = seqeval_scores(gold0 + gold1, pred0 + pred1, "IOB2")
    assert got == pytest.approx(want)
    assert got["recall"] == pytest.approx(2 / 3) and got["precision"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- data


def test_conll_parsing(tmp_path):
    path = tmp_path / "data.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nAlice NNP B-NP B-PER\nlives VBZ B-VP O\n\n\n"
                    "in IN B-PP O\nParis NNP B-NP B-LOC\n-DOCSTART- -X- -X- O\nbob\tB-PER\n")
    ds = read_conll("data.train_file", str(path))
    assert ds["tokens"] == [["Alice", "lives"], ["in", "Paris"], ["bob"]]
    assert ds["ner_tags"] == [["B-PER", "O"], ["O", "B-LOC"], ["B-PER"]]
    words_only = tmp_path / "words.txt"
    words_only.write_text("alice\nlives\n\nbob\n")
    ds = read_conll("--input", str(words_only))
    assert ds.column_names == ["tokens"] and ds["tokens"] == [["alice", "lives"], ["bob"]]
    mixed = tmp_path / "mixed.bio"
    mixed.write_text("alice B-PER\nlives\n")
    with pytest.raises(ConfigError, match="mixed.bio line 2"):
        read_conll("data.train_file", str(mixed))


def test_tags_sit_on_the_first_sub_token(tmp_path):
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + ["alice", "lives", "in", "ber", "##lin", "."]) + "\n")
    tok = BertTokenizerFast(vocab=str(vocab))
    enc = tokenize_words(tok, [["alice", "lives", "in", "berlin", "."]], 32, [[1, 0, 0, 2, 0]])
    assert tok.convert_ids_to_tokens(enc["input_ids"][0]) == ["[CLS]", "alice", "lives", "in", "ber", "##lin", ".", "[SEP]"]
    assert enc["labels"][0] == [-100, 1, 0, 0, 2, -100, 0, -100]
    # Truncation drops whole words' labels, never shifts them.
    short = tokenize_words(tok, [["alice", "lives", "in", "berlin", "."]], 6, [[1, 0, 0, 2, 0]])
    assert short["labels"][0] == [-100, 1, 0, 0, 2, -100]


@pytest.fixture
def ner_files(tmp_path):
    return {"train": write_jsonl(str(tmp_path / "train.jsonl"), ner_rows(24, 1)),
            "validation": write_jsonl(str(tmp_path / "val.jsonl"), ner_rows(8, 2))}


def prepare(cfg):
    from launcher.training import prepare as prepare_lib

    return prepare_lib.prepare(cfg)


def test_data_errors_name_file_and_row(tmp_path, tiny_bert, ner_files):
    rows = ner_rows(5, 3)
    rows[3]["ner_tags"] = rows[3]["ner_tags"][:-1]
    bad = write_jsonl(str(tmp_path / "bad.jsonl"), rows)
    cfg = base_config(tiny_bert, {"train": bad, "validation": ner_files["validation"]}, str(tmp_path / "out"), task="token-classification")
    with pytest.raises(ConfigError, match=r"bad\.jsonl row 4: \d+ words but \d+ tags") as e:
        prepare(cfg)
    assert e.value.key == "data.train_file"

    unseen = ner_rows(4, 4)
    unseen[1]["ner_tags"][0] = "B-MISC"
    cfg.data.train_file, cfg.data.validation_file = ner_files["train"], write_jsonl(str(tmp_path / "unseen.jsonl"), unseen)
    with pytest.raises(ConfigError, match="tags not seen in training: B-MISC") as e:
        prepare(cfg)
    assert e.value.key == "data.validation_file"

    pos = ner_rows(4, 5)
    pos[2]["ner_tags"][1] = "NN"
    cfg.data.validation_file = write_jsonl(str(tmp_path / "pos.jsonl"), pos)
    with pytest.raises(ConfigError, match=r"pos\.jsonl row 3: tag 'NN' is not an IOB tag"):
        prepare(cfg)

    cfg.data.validation_file = ner_files["validation"]
    cfg.task_options = {"words_column": "words"}
    with pytest.raises(ConfigError, match="column 'words' not in") as e:
        prepare(cfg)
    assert e.value.key == "task_options.words_column"
    cfg.task_options = {"scheme": "BILOU"}
    with pytest.raises(ConfigError, match="task_options.scheme: invalid value 'BILOU'"):
        TokenClassification(cfg)


def test_integer_tags_use_label_names(tmp_path, tiny_bert):
    names = ["O", "B-PER", "B-LOC", "I-PER", "B-ORG", "I-ORG"]
    rows = [{"tokens": r["tokens"], "ner_tags": [names.index(t) for t in r["ner_tags"]]} for r in ner_rows(12, 6)]
    files = {"train": write_jsonl(str(tmp_path / "t.jsonl"), rows[:8]), "validation": write_jsonl(str(tmp_path / "v.jsonl"), rows[8:])}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), task="token-classification")
    with pytest.raises(ConfigError, match="integer tag .* has no name") as e:
        prepare(cfg)
    assert e.value.key == "task_options.label_names"
    cfg.task_options = {"label_names": names}
    p = prepare(cfg)
    assert set(p.meta["label2id"]) <= set(names) and "B-PER" in p.meta["label2id"]


def test_predict_tags_every_word_of_long_sentences(tmp_path, tiny_bert):
    """Sentences longer than max_length run as windows, and every word gets its own first sub-token's tag.

    The model has no layers and no position/segment embeddings, so each token's tag depends on the
    token alone: tagging the long sentence must give the tags of its words tagged one by one.
    """
    import datasets
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    folder = str(tmp_path / "tagger")
    labels = {0: "O", 1: "B-PER", 2: "B-LOC"}
    config = BertConfig.from_pretrained(tiny_bert, num_hidden_layers=0, num_labels=3, id2label=labels,
                                        label2id={v: k for k, v in labels.items()})
    torch.manual_seed(3)
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.zero_()
        model.bert.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    cfg = base_config(tiny_bert, {"train": "unused"}, str(tmp_path / "out"), task="token-classification")
    cfg.data.max_length = 8
    task = TokenClassification(cfg)
    long = "alice lives in paris and bob works at acme in berlin and the film was quite dull".split()
    ds = datasets.Dataset.from_list([{"text": " ".join(long)}, {"text": "bob"}])  # plain texts: split on spaces
    preds = task.predict(folder, ds, {"batch_size": 2, "device": -1})
    assert [p["tokens"] for p in preds] == [long, ["bob"]]
    one_by_one = task.predict(folder, datasets.Dataset.from_list([{"tokens": [w]} for w in long]), {"batch_size": 8, "device": -1})
    assert preds[0]["tags"] == [p["tags"][0] for p in one_by_one]
    assert len(set(preds[0]["tags"])) > 1  # the check above is not vacuous


def test_exported_folder_evaluates_like_the_module(tmp_path, tiny_bert, ner_files):
    cfg = base_config(tiny_bert, ner_files, str(tmp_path / "out"), task="token-classification")
    direct, evaluated = validate_then_evaluate_export(cfg)
    assert set(direct) == {"val_loss", "val_precision", "val_recall", "val_f1", "val_accuracy"}
    assert evaluated == pytest.approx(direct)


# ---------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_ray_run_exports_a_tagger(tmp_path, ray_session):
    from transformers import pipeline

    from launcher.commands import train as train_cmd
    from launcher.data.sampling import optimizer_steps

    model = make_tiny_bert(str(tmp_path / "bert"))
    train_rows, val_rows = ner_rows(40, 11), ner_rows(13, 12)
    files = {"train": write_conll(str(tmp_path / "train.conll"), train_rows),
             "validation": write_jsonl(str(tmp_path / "val.jsonl"), val_rows)}
    cfg = base_config(model, files, str(tmp_path / "out"), task="token-classification",
                      train={"max_epochs": 2, "accumulate_grad_batches": 2})
    results = train_cmd.run(cfg)

    assert results["monitor"] == "val_f1"
    last = results["epochs"][-1]
    for key in ("val_precision", "val_recall", "val_f1", "val_accuracy", "val_loss"):
        assert key in last and 0.0 <= last[key] <= 1.0 or key == "val_loss", key
    t = cfg.train
    assert results["global_step"] == optimizer_steps(len(train_rows), cfg.ray.num_workers, t.batch_size, t.accumulate_grad_batches, t.max_epochs)

    best = os.path.join(cfg.output_dir, "best")
    tagger = pipeline("token-classification", model=best)
    assert isinstance(tagger("alice lives in paris ."), list)
    with open(os.path.join(best, "config.json")) as f:
        assert set(json.load(f)["id2label"].values()) == {"B-LOC", "B-ORG", "B-PER", "I-ORG", "O"}

    words = write_conll(str(tmp_path / "predict.txt"), val_rows[:5], with_tags=False)
    out = str(tmp_path / "pred.jsonl")
    # `launcher predict` in this process: the subprocess would only add an interpreter start.
    assert launcher_main(["predict", "--model", best, "--input", words, "--output", out]) == 0
    preds = [json.loads(line) for line in open(out)]
    assert [p["tokens"] for p in preds] == [r["tokens"] for r in val_rows[:5]]
    assert all(len(p["tags"]) == len(p["tokens"]) for p in preds)
