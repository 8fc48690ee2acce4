"""question-answering: SQuAD scoring rules, stride windows and post-processing, data errors, one Ray run."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from tests.helpers.config import base_config
from tests.helpers.data import FILLER, write_jsonl
from tests.helpers.models import make_tiny_bert
from tests.helpers.tasks import as_rank0_of_two, validate_then_evaluate_export
from launcher.__main__ import main as launcher_main
from launcher.config import ConfigError
from launcher.tasks.question_answering import (SquadMetric, f1, feature_spans, normalize_answer, qa_features,
                                               select_answers, squad_scores)


def qa_rows(n: int, seed: int, filler: tuple[int, int] = (0, 4)) -> list[dict]:
    """Two people, each living in a city and working at a company, in shuffled sentences with filler;
    questions ask where someone lives or works, or who works at a company."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        people = rng.sample(["alice", "bob"], 2)
        cities, orgs = rng.sample(["paris", "london", "berlin"], 2), rng.sample(["acme", "google"], 2)
        facts = [f for p, c, o in zip(people, cities, orgs) for f in ((p, "lives", "in", c), (p, "works", "at", o))]
        rng.shuffle(facts)
        noise = [" ".join(rng.choice(FILLER) for _ in range(4)) + " ." for _ in range(rng.randint(*filler))]
        text, where = "", {}
        for p, verb, prep, obj in facts:
            if noise and rng.random() < 0.5:
                text += noise.pop() + " "
            where[(p, verb)] = (obj, len(text) + len(f"{p} {verb} {prep} "))
            where[obj] = (p, len(text))
            text += f"{p} {verb} {prep} {obj} . "
        text = (text + " ".join(noise)).strip()
        kind, p = rng.randrange(3), rng.choice(people)
        if kind == 2:
            org = rng.choice(orgs)
            question, (answer, start) = f"who works at {org} ?", where[org]
        else:
            verb = ("lives", "works")[kind]
            question, (answer, start) = f"where {p} {verb} ?", where[(p, verb)]
        rows.append({"question": question, "context": text, "answers": {"text": [answer], "answer_start": [start]}})
    return rows


# ---------------------------------------------------------------------- scoring


def test_squad_normalisation_and_scores_by_hand():
    assert normalize_answer("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert f1("the cat sat", "cat sat on mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P = 2/2, R = 2/4
    assert f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # overlap counts repeated tokens once
    s = squad_scores(["Paris!", "in berlin", "acme"], [["paris", "London"], ["Berlin"], ["google"]])
    # EM: 1 (max over golds), 0, 0; F1: 1, 2/3 (P 1/2, R 1), 0.
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_no_answer_scores_when_both_are_empty():
    assert squad_scores([""], [[]]) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_scores(["paris"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_scores([""], [["paris"]]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_scores(["the"], [["a"]]) == {"exact_match": 100.0, "f1": 100.0}  # both normalise to ""


def test_null_score_threshold_decides_no_answer():
    contexts = ["alice lives in paris ."]
    span = (5.0, 15, 20)  # "paris", score 5
    assert select_answers([0], [span], [4.0], contexts, version_2=True, threshold=0.0)[0][0] == "paris"
    assert select_answers([0], [span], [6.0], contexts, version_2=True, threshold=0.0)[0][0] == ""
    assert select_answers([0], [span], [6.0], contexts, version_2=True, threshold=2.0)[0][0] == "paris"
    assert select_answers([0], [span], [60.0], contexts, version_2=False, threshold=0.0)[0][0] == "paris"


# ---------------------------------------------------------------------- windows


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from tests.helpers.models import write_bert_tokenizer

    path = str(tmp_path_factory.mktemp("tok"))
    write_bert_tokenizer(path)
    return AutoTokenizer.from_pretrained(path)


def oracle_logits(feats: dict, i: int):
    """Logits that point at feature i's labelled start/end (CLS when the answer is not in the window)."""
    n = len(feats["input_ids"][i])
    s, e = torch.zeros(n), torch.zeros(n)
    s[feats["start_positions"][i]] += 10
    e[feats["end_positions"][i]] += 10
    return s, e


def test_stride_windows_recover_an_answer_in_the_second_window(tokenizer):
    context = "the film was dull and the plot was boring . " * 3 + "alice lives in berlin ."
    start = context.index("berlin")
    question = ["where alice lives ?"]
    answers = [{"text": ["berlin"], "answer_start": [start]}]
    feats = qa_features(tokenizer, question, [context], max_length=24, stride=4, answers=answers, example_ids=[7])
    n = len(feats["input_ids"])
    assert n >= 2 and feats["example_id"] == [7] * n
    assert all(len(ids) <= 24 for ids in feats["input_ids"])
    # The first window lacks the answer: labelled with CLS (position 0); the last one holds it.
    assert feats["start_positions"][0] == feats["end_positions"][0] == 0
    last = n - 1
    s, e = feats["start_positions"][last], feats["end_positions"][last]
    assert s > 0 and tokenizer.decode(feats["input_ids"][last][s : e + 1]) == "berlin"
    # Offsets are (-1, -1) on question and special tokens, character offsets into the context elsewhere.
    offs = feats["offset_mapping"][last]
    assert offs[0] == [-1, -1] and context[offs[s][0] : offs[e][1]] == "berlin"

    # Post-processing over all windows picks the span from the window that holds it.
    ids, spans, nulls = [], [], []
    for i in range(n):
        st, en = oracle_logits(feats, i)
        mask = torch.ones(1, len(st), dtype=torch.long)
        values = feature_spans(st[None], en[None], mask, torch.tensor([feats["input_ids"][i]]), [feats["offset_mapping"][i]],
                               [0], tokenizer.cls_token_id, _options())
        ids.append(7)
        spans.append((float(values[2][0]), int(values[0][0]), int(values[1][0])))
        nulls.append(float(values[3][0]))
    answers = select_answers(ids, spans, nulls, {7: context}, version_2=True, threshold=0.0)
    assert answers[7][0] == "berlin"


def _options(**kw):
    from launcher.tasks.question_answering import Options

    return Options(**kw)


def test_metric_answers_each_example_once_from_windows_on_two_ranks(tokenizer):
    rows = qa_rows(6, seed=5, filler=(4, 6))
    contexts = [r["context"] for r in rows]
    feats = qa_features(tokenizer, [r["question"] for r in rows], contexts, 32, 6, [r["answers"] for r in rows], list(range(6)))
    assert len(feats["input_ids"]) > len(rows)  # some examples span several windows
    examples = {"context": contexts, "answers": [r["answers"]["text"] for r in rows]}
    make = lambda **kw: SquadMetric(examples, version_2=False, threshold=0.0, **kw)
    rank1 = make()
    rank0 = as_rank0_of_two(make, rank1)
    # Alternate features between the ranks, as EvalShard does, so windows of one example are split.
    for i in range(len(feats["input_ids"])):
        st, en = oracle_logits(feats, i)
        mask = torch.ones(1, len(st), dtype=torch.long)
        values = feature_spans(st[None], en[None], mask, torch.tensor([feats["input_ids"][i]]), [feats["offset_mapping"][i]],
                               [0], tokenizer.cls_token_id, _options())
        (rank0 if i % 2 == 0 else rank1).update(torch.tensor([feats["example_id"][i]]), *values)
    got = rank0.compute()
    assert float(got["exact_match"]) == pytest.approx(100.0) and float(got["f1"]) == pytest.approx(100.0)
    alone = make()  # rank 0's features only: examples whose answer window sits on rank 1 are wrong
    for i in range(0, len(feats["input_ids"]), 2):
        st, en = oracle_logits(feats, i)
        values = feature_spans(st[None], en[None], torch.ones(1, len(st), dtype=torch.long), torch.tensor([feats["input_ids"][i]]),
                               [feats["offset_mapping"][i]], [0], tokenizer.cls_token_id, _options())
        alone.update(torch.tensor([feats["example_id"][i]]), *values)
    assert float(alone.compute()["exact_match"]) < 100.0


# ---------------------------------------------------------------------- data errors


def prepare(cfg):
    from launcher.training import prepare as prepare_lib

    return prepare_lib.prepare(cfg)


def test_data_errors(tmp_path, tiny_bert):
    rows = qa_rows(6, 1)
    rows[4]["answers"]["answer_start"] = [rows[4]["answers"]["answer_start"][0] + 1]
    files = {"train": write_jsonl(str(tmp_path / "train.jsonl"), rows), "validation": write_jsonl(str(tmp_path / "val.jsonl"), qa_rows(3, 2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), task="question-answering", task_options={"doc_stride": 8})
    with pytest.raises(ConfigError, match=r"train\.jsonl row 5: answer '\w+' is not at answer_start \d+ of the context \(it occurs at") as e:
        prepare(cfg)
    assert e.value.key == "data.train_file"

    unanswerable = qa_rows(4, 3)
    unanswerable[2]["answers"] = {"text": [], "answer_start": []}
    cfg.data.train_file = write_jsonl(str(tmp_path / "v2.jsonl"), unanswerable)
    with pytest.raises(ConfigError, match=r"v2\.jsonl row 3: no answer — .*version_2_with_negative"):
        prepare(cfg)
    cfg.task_options = {"doc_stride": 8, "version_2_with_negative": True}
    p = prepare(cfg)
    assert p.sizes["train"] >= 4

    cfg.task_options = {"doc_stride": 32}
    with pytest.raises(ConfigError, match=r"task_options.doc_stride: must be >= 0 and below data.max_length \(32\)"):
        prepare(cfg)
    # Windows of 32 tokens: [CLS] question [SEP] context [SEP] leaves 29 - 5 = 24 context tokens after a
    # 5-token question, no more than a stride of 24 (the tokenizer would panic on it).
    cfg.task_options = {"doc_stride": 24, "version_2_with_negative": True}
    cfg.data.train_file = files["train"].replace("train.jsonl", "v2.jsonl")
    with pytest.raises(ConfigError, match=r"v2\.jsonl row \d+: the question takes 5 tokens and leaves 24 for context") as e:
        prepare(cfg)
    assert e.value.key == "data.max_length"
    cfg.task_options = {"question_col": "q"}
    with pytest.raises(ConfigError, match="did you mean task_options.question_column"):
        prepare(cfg)


def test_predict_reads_every_window_of_long_contexts(tmp_path, tiny_bert):
    """Without training: a QA head on the tiny BERT; answers must come from the context, even past max_length."""
    import datasets
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from launcher.tasks.question_answering import QuestionAnswering

    folder = str(tmp_path / "qa")
    AutoModelForQuestionAnswering.from_pretrained(tiny_bert).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    rows = qa_rows(3, 9, filler=(6, 8))
    cfg = base_config(tiny_bert, {"train": "unused"}, str(tmp_path / "out"), task="question-answering",
                      task_options={"doc_stride": 4})
    cfg.data.max_length = 16
    ds = datasets.Dataset.from_list([{"question": r["question"], "context": r["context"]} for r in rows])
    preds = QuestionAnswering(cfg).predict(folder, ds, {"batch_size": 4, "device": -1})
    assert [p["question"] for p in preds] == [r["question"] for r in rows]
    for p, r in zip(preds, rows):
        assert p["answer"] and p["answer"] in r["context"] and 0.0 < p["score"] <= 1.0


def test_exported_folder_evaluates_like_the_module(tmp_path, tiny_bert):
    files = {"train": write_jsonl(str(tmp_path / "t.jsonl"), qa_rows(8, 1)), "validation": write_jsonl(str(tmp_path / "v.jsonl"), qa_rows(7, 2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), task="question-answering", task_options={"doc_stride": 8})
    direct, evaluated = validate_then_evaluate_export(cfg)
    assert set(direct) == {"val_loss", "val_exact_match", "val_f1"}
    assert evaluated == pytest.approx(direct)


# ---------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_ray_run_exports_a_reader(tmp_path, ray_session):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from launcher.commands import train as train_cmd
    from launcher.training import prepare as prepare_lib
    from launcher.data.sampling import optimizer_steps

    model = make_tiny_bert(str(tmp_path / "bert"))
    val_rows = qa_rows(12, 22)
    files = {"train": write_jsonl(str(tmp_path / "train.jsonl"), qa_rows(30, 21)),
             "validation": write_jsonl(str(tmp_path / "val.jsonl"), val_rows)}
    cfg = base_config(model, files, str(tmp_path / "out"), task="question-answering", task_options={"doc_stride": 8},
                      train={"max_epochs": 2, "accumulate_grad_batches": 2})
    features = prepare_lib.prepare(cfg).sizes["train"]  # windows, not rows, are the training examples
    results = train_cmd.run(cfg)

    assert results["monitor"] == "val_f1"
    last = results["epochs"][-1]
    assert 0.0 <= last["val_exact_match"] <= 100.0 and 0.0 <= last["val_f1"] <= 100.0 and "val_loss" in last
    t = cfg.train
    assert results["global_step"] == optimizer_steps(features, cfg.ray.num_workers, t.batch_size, t.accumulate_grad_batches, t.max_epochs)

    best = os.path.join(cfg.output_dir, "best")
    reader = AutoModelForQuestionAnswering.from_pretrained(best)
    tok = AutoTokenizer.from_pretrained(best)
    out = reader(**tok("who works at acme ?", "bob works at acme .", return_tensors="pt"))
    assert out.start_logits.shape == out.end_logits.shape
    with open(os.path.join(best, "launcher.json")) as f:
        assert "examples" not in json.load(f)["meta"]  # evaluation contexts stay out of the export

    inputs = write_jsonl(str(tmp_path / "ask.jsonl"), [{"question": r["question"], "context": r["context"]} for r in val_rows[:5]])
    pred = str(tmp_path / "pred.jsonl")
    # `launcher predict` in this process: the subprocess would only add an interpreter start.
    assert launcher_main(["predict", "--model", best, "--input", inputs, "--output", pred]) == 0
    rows = [json.loads(line) for line in open(pred)]
    assert [r["question"] for r in rows] == [r["question"] for r in val_rows[:5]]
    for r, src in zip(rows, val_rows[:5]):
        assert r["answer"] in src["context"] and 0.0 <= r["score"] <= 1.0
