"""launcher.tasks.precheck and launcher.data.precheck: the cheap checks of model and data, before the ML stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launcher.config import Config
from launcher.data import precheck as data_precheck
from launcher.data.files import Need
from launcher.errors import ConfigError
from launcher.tasks import TASKS, precheck
from tests.helpers.data import write_csv, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_importing_the_prechecks_loads_no_ml_library():
    code = ("import sys, launcher.tasks.precheck, launcher.data.precheck, launcher.training.prepare; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'lightning', 'pyarrow', 'pandas', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout.strip()
    assert out == "[]"


def test_every_task_declares_its_columns():
    assert set(precheck.COLUMNS) == set(TASKS)


def _raises(fn, *args) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args)
    return str(e.value)


NEEDS = [Need("data.text_column", "text", filled=True), Need("data.label_column", "label", filled=True)]


def test_csv_columns_and_first_empty_row(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": ""}, {"text": " ", "label": "y"}]
    path = write_csv(str(tmp_path / "t.csv"), rows)
    # text is checked before label, as the task's check of the loaded data does
    assert _raises(data_precheck.check_file, "data.train_file", path, NEEDS) == f"data.text_column: {path} row 3: empty 'text' — fill or drop that row"
    assert "row 2: empty 'label'" in _raises(data_precheck.check_file, "data.train_file", path, NEEDS[1:])
    data_precheck.check_file("data.train_file", path, NEEDS[1:], max_rows=1)  # rows past data.max_*_samples are not read
    assert _raises(data_precheck.check_file, "data.train_file", path, [Need("data.label_column", "sentiment")]) == (
        f"data.label_column: column 'sentiment' not in {path} — present columns: text, label")


def test_json_lines_columns_come_from_every_record(tmp_path):
    path = write_jsonl(str(tmp_path / "t.jsonl"), [{"text": "a"}, {"text": "b", "label": "x"}])
    # label exists (second record); the first record lacks it: null there, so empty
    assert "row 1: empty 'label'" in _raises(data_precheck.check_file, "data.train_file", path, NEEDS)
    assert "present columns: text, label" in _raises(data_precheck.check_file, "data.train_file", path, [Need("k", "answers")])


def test_parquet_schema_and_empty_cells(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"text": ["a", None, "c"], "label": ["x", "y", "z"]}), path)
    assert "row 2: empty 'text'" in _raises(data_precheck.check_file, "data.train_file", path, NEEDS)
    assert "present columns: text, label" in _raises(data_precheck.check_file, "data.train_file", path, [Need("k", "answers")])


def test_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\ncaf\xe9,pos\nok,neg\n".encode("latin-1"))
    assert "'utf-8' codec can't decode byte 0xe9 in position 14" in _raises(data_precheck.check_file, "data.train_file", str(path), NEEDS)


def _cfg(tmp_path, model: str, task: str = "sequence-classification", **data) -> Config:
    cfg = Config(task=task, output_dir=str(tmp_path / "out"))
    cfg.model.name_or_path = model
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _model(tmp_path, config: dict | None = None, tokenizer: bool = True) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        (folder / "vocab.txt").write_text("[PAD]\n")
    return str(folder)


def test_model_folder_checks(tmp_path):
    train = write_csv(str(tmp_path / "t.csv"), [{"text": "a", "label": "x"}])
    assert "model folder not found" in _raises(precheck.check, _cfg(tmp_path, "/no/such/model", train_file=train))
    empty = _model(tmp_path, config=None)
    assert "cannot load a model config from" in _raises(precheck.check, _cfg(tmp_path, empty, train_file=train))


def test_positions_and_tokenizer_from_the_folder(tmp_path):
    train = write_csv(str(tmp_path / "t.csv"), [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    model = _model(tmp_path, config={"model_type": "bert", "max_position_embeddings": 64}, tokenizer=False)
    assert "no tokenizer files in" in _raises(precheck.check, _cfg(tmp_path, model, train_file=train))
    (tmp_path / "model" / "vocab.txt").write_text("[PAD]\n")
    assert _raises(precheck.check, _cfg(tmp_path, model, train_file=train, max_length=128)) == (
        "data.max_length: 128 is above the model's 64 positions — use --data.max_length 64 or less")
    precheck.check(_cfg(tmp_path, model, train_file=train, max_length=64))


def test_task_column_options(tmp_path):
    model = _model(tmp_path, config={"model_type": "bert"})
    rows = [{"q": "who?", "context": "bob", "answers": {"text": ["bob"], "answer_start": [0]}}]
    train = write_jsonl(str(tmp_path / "t.jsonl"), rows)
    cfg = _cfg(tmp_path, model, task="question-answering", train_file=train)
    assert "task_options.question_column: column 'question' not in" in _raises(precheck.check, cfg)
    cfg.task_options = {"question_column": "q"}
    precheck.check(cfg)
    cfg.task_options = {"question_colum": "q"}  # misspelt: left to the task, which names the option
    precheck.check(cfg)


def test_label_values_plain_strings_only(tmp_path):
    model = _model(tmp_path, config={"model_type": "bert"})
    one = write_csv(str(tmp_path / "one.csv"), [{"text": "a", "label": "pos"}, {"text": "b", "label": "pos"}])
    two = write_csv(str(tmp_path / "two.csv"), [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    other = write_csv(str(tmp_path / "other.csv"), [{"text": "a", "label": "neutral"}])
    assert "only one label ('pos')" in _raises(precheck.check, _cfg(tmp_path, model, train_file=one, validation_file=two))
    assert "data.validation_file: labels not seen in training: neutral" in _raises(
        precheck.check, _cfg(tmp_path, model, train_file=two, validation_file=other))
    # numbers: pandas types them (1 and 1.0 may be one class or not): left to the task
    ints = write_csv(str(tmp_path / "ints.csv"), [{"text": "a", "label": "1"}, {"text": "b", "label": "1"}])
    precheck.check(_cfg(tmp_path, model, train_file=ints, validation_file=two))


def test_task_readers_of_their_own_are_left_alone(tmp_path):
    model = _model(tmp_path, config={"model_type": "bert"})
    conll = tmp_path / "train.conll"
    conll.write_text("alice B-PER\nlives O\n\nbob B-PER\n")
    precheck.check(_cfg(tmp_path, model, task="token-classification", train_file=str(conll)))
    precheck.check(_cfg(tmp_path, model, task="my_pkg.tasks:MyTask", train_file=str(conll)))
    assert "file not found" in _raises(precheck.check, _cfg(tmp_path, model, task="token-classification", train_file="nope.conll"))
