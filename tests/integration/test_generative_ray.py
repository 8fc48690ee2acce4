"""One small 2-worker Ray run per generative task (accumulation 2): per-epoch metrics in results.json,
an exported folder that transformers loads, `launcher predict` outputs, and distributed generation
that scores every validation example exactly once (checked against a 1-process `launcher evaluate`).
"""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.helpers.config import base_config
from tests.helpers.data import write_csv
from tests.helpers.generative import (bert_config_folder, summary_rows, tiny_bart, tiny_gpt2, tiny_t5,
                                      translation_rows, write_documents, write_jsonl, write_lines)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def _predict(tmp_path, model_dir: str, rows: list[dict], *options: str) -> list[dict]:
    from launcher.commands.predict import main as predict_main

    inp = write_jsonl(str(tmp_path / "predict_in.jsonl"), rows)
    out = str(tmp_path / "predict_out.jsonl")
    args = ["--model", model_dir, "--input", inp, "--output", out, "--overwrite"]
    for o in options:
        args += ["--option", o]
    assert predict_main(args) == 0
    with open(out) as f:
        return [json.loads(line) for line in f]


def test_causal_lm_on_text_file(ray_session, tmp_path):
    from transformers import pipeline

    from launcher.commands import train as train_cmd

    model = tiny_gpt2(str(tmp_path / "gpt2"))
    files = {"train": write_lines(str(tmp_path / "train.txt"), 160, seed=1),
             "validation": write_lines(str(tmp_path / "val.txt"), 25, seed=2)}
    out = str(tmp_path / "run")
    cfg = base_config(model, files, out, task="language-modeling", data={"block_size": 24})
    results = train_cmd.run(cfg)

    assert results["monitor"] == "val_loss" and results["global_step"] > 0
    assert [e["epoch"] for e in results["epochs"]] == [1.0, 2.0]
    for e in results["epochs"]:
        assert e["val_perplexity"] == pytest.approx(math.exp(e["val_loss"]), rel=1e-5)
    assert results["epochs"][-1]["val_loss"] < results["epochs"][0]["val_loss"] + 0.5
    best = results["best_model"]
    assert os.path.exists(os.path.join(best, "generation_config.json"))
    gen = pipeline("text-generation", model=best)
    assert isinstance(gen("the cat", max_new_tokens=3, do_sample=False)[0]["generated_text"], str)
    rows = _predict(tmp_path, best, [{"text": "the cat"}, {"text": "a dog ran"}, {"text": "the"}],
                    "max_new_tokens=4", "temperature=0.7", "top_p=0.9", "seed=0")
    assert [r["text"] for r in rows] == ["the cat", "a dog ran", "the"]
    assert all(isinstance(r["generated_text"], str) for r in rows)


def test_pretraining_bert_from_config(ray_session, tmp_path):
    from transformers import pipeline

    from launcher.commands import train as train_cmd

    model = bert_config_folder(str(tmp_path / "bert-config"))  # no weights: random init
    files = {"train": write_documents(str(tmp_path / "train.txt"), 24, seed=1),
             "validation": write_documents(str(tmp_path / "val.txt"), 5, seed=2)}
    out = str(tmp_path / "run")
    cfg = base_config(model, files, out, task="pretraining")
    cfg.model.from_config = True
    results = train_cmd.run(cfg)

    for e in results["epochs"]:
        assert e["val_loss"] == pytest.approx(e["val_mlm_loss"] + e["val_nsp_loss"], rel=1e-5)
        assert e["val_mlm_perplexity"] == pytest.approx(math.exp(e["val_mlm_loss"]), rel=1e-5)
        assert 0.0 <= e["val_nsp_accuracy"] <= 1.0
    best = results["best_model"]
    with open(os.path.join(best, "config.json")) as f:
        assert json.load(f)["architectures"] == ["BertForPreTraining"]
    fill = pipeline("fill-mask", model=best)
    assert len(fill("the film was [MASK] .", top_k=3)) == 3
    rows = _predict(tmp_path, best, [{"text": "the film was [MASK] ."}, {"text": "[MASK] acting and [MASK] plot"}], "top_k=2")
    assert len(rows[0]["predictions"]) == 1 and len(rows[0]["predictions"][0]) == 2
    assert len(rows[1]["predictions"]) == 2


def test_summarization_generation_is_gathered_exactly_once(ray_session, tmp_path):
    """21 validation rows on 2 workers: one pad row; `generated` must be 21 and the metrics must equal a
    1-process evaluation of the exported model."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from launcher.commands import train as train_cmd
    from launcher.commands.evaluate import main as evaluate_main

    model = tiny_t5(str(tmp_path / "t5"))
    files = {"train": write_csv(str(tmp_path / "train.csv"), summary_rows(64, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), summary_rows(21, seed=2))}
    out = str(tmp_path / "run")
    cfg = base_config(model, files, out, task="summarization", data={"source_column": "document", "target_column": "summary"},
                      task_options={"max_target_length": 12, "num_beams": 2, "generate_every_n_epochs": 2})
    results = train_cmd.run(cfg)

    first, last = results["epochs"]
    assert math.isfinite(first["val_loss"]) and math.isnan(first["val_rougeL"])  # no generation in epoch 1
    assert last["val_generated"] == 21
    for k in ("val_rouge1", "val_rouge2", "val_rougeL"):
        assert 0.0 <= last[k] <= 1.0
    assert results["best_epoch"] == 2.0 and results["monitor"] == "val_rougeL"

    best = results["best_model"]
    with open(os.path.join(best, "generation_config.json")) as f:
        gen_cfg = json.load(f)
    assert gen_cfg["num_beams"] == 2 and gen_cfg["max_new_tokens"] == 12
    metrics_file = str(tmp_path / "eval.json")
    assert evaluate_main([os.path.join(out, "config.yaml"), "--model", best, "--output", metrics_file]) == 0
    with open(metrics_file) as f:
        single = json.load(f)
    assert single["val_generated"] == 21
    for k in ("val_loss", "val_rouge1", "val_rouge2", "val_rougeL", "val_gen_len"):
        assert single[k] == pytest.approx(last[k], abs=1e-4), k

    tok, m = AutoTokenizer.from_pretrained(best), AutoModelForSeq2SeqLM.from_pretrained(best)
    assert m.generate(**tok(["the cat sat on the mat ."], return_tensors="pt")).shape[0] == 1
    rows = _predict(tmp_path, best, [{"document": r["document"]} for r in summary_rows(3, seed=5)])
    assert len(rows) == 3 and all(isinstance(r["summary_text"], str) for r in rows)


def test_translation_dict_column(ray_session, tmp_path):
    from launcher.commands import train as train_cmd

    model = tiny_bart(str(tmp_path / "bart"))
    files = {"train": write_jsonl(str(tmp_path / "train.jsonl"), translation_rows(64, seed=1)),
             "validation": write_jsonl(str(tmp_path / "val.jsonl"), translation_rows(15, seed=2))}
    out = str(tmp_path / "run")
    cfg = base_config(model, files, out, task="translation",
                      task_options={"source_lang": "en", "target_lang": "fr", "max_target_length": 8})
    results = train_cmd.run(cfg)

    for e in results["epochs"]:
        assert e["val_generated"] == 15
        assert 0.0 <= e["val_bleu"] <= 1.0
    rows = _predict(tmp_path, results["best_model"], translation_rows(4, seed=3), "num_beams=2")
    assert [r["source"] for r in rows] == [r["translation"]["en"] for r in translation_rows(4, seed=3)]
    assert all(isinstance(r["translation_text"], str) for r in rows)
