"""launcher.tasks.core: model loading options reach transformers (trust_remote_code, off by default)."""

from __future__ import annotations

import pytest

from tests.helpers.config import base_config
from launcher.config import Config


@pytest.mark.parametrize("trusted", [False, True])
def test_trust_remote_code_is_passed_through_and_off_by_default(trusted, tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import transformers

    from launcher.tasks import get_task

    cfg = base_config(tiny_bert, sentiment_files, str(tmp_path / "out"))
    assert Config().model.trust_remote_code is False
    cfg.model.trust_remote_code = trusted
    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    task = get_task(cfg.task)(cfg)
    task.model_config()
    task.load_tokenizer()
    task.build_model({"num_labels": 2, "id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}, "regression": False})
    assert {name for name, _ in seen} >= {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"}
    assert all(value is trusted for _, value in seen), seen
