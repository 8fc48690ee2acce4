"""launcher.export: a failed export leaves the previous best folder as it was."""

from __future__ import annotations

import os

import pytest

from tests.helpers.config import base_config
from launcher import export as export_lib


def test_failed_export_leaves_previous_best(tmp_path, tiny_bert, sentiment_files):
    from transformers import AutoTokenizer, BertForSequenceClassification

    from launcher.tasks import get_task

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    task = get_task(cfg.task)(cfg)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    best = str(tmp_path / "out" / "best")
    export_lib.save_folder(cfg, task, {"num_labels": 2}, model, tok, best)
    before = sorted(os.listdir(best))

    class Broken:
        def save_pretrained(self, path):
            with open(os.path.join(path, "tokenizer.json"), "w") as f:
                f.write("{")  # half written
            raise OSError("node lost")

    with pytest.raises(OSError):
        export_lib.save_folder(cfg, task, {"num_labels": 2}, model, Broken(), best)
    assert sorted(os.listdir(best)) == before
    assert sorted(os.listdir(tmp_path / "out")) == ["best"]  # no temp folder left
