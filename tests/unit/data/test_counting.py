"""launcher.data.counting: cheap row counts agree with what the readers load."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.data import sentiment_rows, write_csv, write_jsonl
from launcher.data import counting
from launcher.config import ConfigError
from tests.helpers.paths import REPO


def test_row_counts_match_what_datasets_reads(tmp_path):
    """Plan counts rows without `datasets`; every format must agree with launcher.data.read_file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from launcher.data.files import read_file

    rows = sentiment_rows(23, seed=4)
    rows[3]["text"] = 'a "quoted" text, with a comma\nand a newline'
    csv_path = write_csv(str(tmp_path / "a.csv"), rows)
    with open(csv_path, "a") as f:
        f.write("\n\n")  # trailing blank lines: pandas skips them
    tsv_path = str(tmp_path / "a.tsv")
    with open(tsv_path, "w") as f:
        f.write("text\tlabel\n" + "".join(f"{r['text'].splitlines()[0]}\t{r['label']}\n" for r in rows))
    jsonl_path = write_jsonl(str(tmp_path / "a.jsonl"), rows)
    with open(jsonl_path, "a") as f:
        f.write("\n")
    array_path = str(tmp_path / "a.json")
    with open(array_path, "w") as f:
        json.dump(rows, f)
    parquet_path = str(tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    disk_path = str(tmp_path / "disk")
    read_file("x", parquet_path).save_to_disk(disk_path)
    for path in (csv_path, tsv_path, jsonl_path, array_path, parquet_path, disk_path):
        assert counting.count_rows("data.train_file", path) == len(read_file("data.train_file", path)) == 23, path
    with pytest.raises(ConfigError, match="file not found"):
        counting.count_rows("data.train_file", str(tmp_path / "missing.csv"))


def test_conll_sentences_match_the_token_classification_reader(tmp_path):
    from launcher.tasks.token_classification import read_conll

    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- O\n\nalice B-PER\nlives O\n\n\nin O\nparis B-LOC\n-DOCSTART- O\nbob B-PER\n\n")
    assert counting.conll_sentences("data.train_file", str(path)) == len(read_conll("data.train_file", str(path))) == 3
    examples = os.path.join(REPO, "examples", "data", "ner_train.conll")
    if os.path.exists(examples):
        assert counting.conll_sentences("data.train_file", examples) == len(read_conll("data.train_file", examples))
