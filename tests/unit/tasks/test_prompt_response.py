"""Decoder-only models for prompt → response data: summarization/translation with
task_options.decoder_only, and language-modeling with prompt_column/response_column.

Tiny GPT-2 and a word-level tokenizer built here; one with a chat template, one without. No Ray.
"""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import pytest
import torch

from launcher.config import ConfigError
from launcher.tasks import _prompts as prompts
from tests.helpers.config import base_config
from tests.helpers.generative import summary_rows, tiny_gpt2, translation_rows, write_jsonl

#: a chat template in the tiny vocabulary: the user turn ends with <s>, the assistant's with </s>
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }} <s>{% else %} {{ m['content'] }} </s>"
            "{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def gpt2_models(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("prompt-models")
    plain = tiny_gpt2(str(root / "plain"))
    chat = tiny_gpt2(str(root / "chat"))
    tok = AutoTokenizer.from_pretrained(chat)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(chat)
    return {"plain": plain, "chat": chat}


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_labels_cover_the_response_and_its_end_only(gpt2_models, kind):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_models[kind])
    fmt = prompts.prompt_format(tok)
    assert fmt == kind
    row = prompts.encode_pair(tok, "the cat sat on the mat .", "le chat", fmt, max_length=32, max_response=8)
    n = len(row["prompt_ids"])
    assert row["input_ids"][:n] == row["prompt_ids"] and row["labels"][:n] == [-100] * n
    assert tok.decode(row["labels"][n:]) == "le chat </s>"  # the response, then the end the model must learn
    if kind == "chat":
        assert tok.decode(row["prompt_ids"]).endswith("<s>")


def _cfg(model, tmp_path, task: str, **options):
    if task == "translation":
        rows, val = translation_rows(16, seed=1), translation_rows(6, seed=2)
        options = {"source_lang": "en", "target_lang": "fr", **options}
        data = {}
    else:
        rows, val = summary_rows(16, seed=1), summary_rows(6, seed=2)
        data = {"source_column": "document", "target_column": "summary"}
    files = {"train": write_jsonl(str(tmp_path / "t.jsonl"), rows), "validation": write_jsonl(str(tmp_path / "v.jsonl"), val)}
    cfg = base_config(model, files, str(tmp_path / "out"), task=task, data=data, ray={"num_workers": 1})
    cfg.task_options = {"decoder_only": True, "max_target_length": 8, **options}
    return cfg


def test_decoder_only_is_the_default_for_a_causal_lm_and_needs_room(gpt2_models, tmp_path):
    from launcher.training import prepare

    cfg = _cfg(gpt2_models["plain"], tmp_path, "summarization")
    cfg.task_options = {"max_target_length": 8}  # no decoder_only: a causal LM head decides it
    p = prepare.prepare(cfg)
    assert p.meta["decoder_only"] and cfg.task_options["decoder_only"] is True  # the workers and the export see the choice
    cfg.task_options = {"decoder_only": False}
    with pytest.raises(ConfigError, match="task_options.decoder_only true"):
        prepare.prepare(cfg)
    cfg = _cfg(gpt2_models["plain"], tmp_path, "summarization", max_target_length=60)
    with pytest.raises(ConfigError, match="task_options.max_target_length: data.max_length \\+ max_target_length = 92"):
        prepare.prepare(cfg)


@pytest.mark.parametrize("kind, task", [("plain", "summarization"), ("chat", "translation")])
def test_decoder_only_trains_on_targets_and_generates_continuations(gpt2_models, tmp_path, kind, task):
    from launcher import export
    from launcher.commands import predict
    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    cfg = _cfg(gpt2_models[kind], tmp_path, task)
    p = prepare.prepare(cfg)
    assert p.meta["decoder_only"] and p.meta["prompt_format"] == kind
    module = p.task.module(p.meta, p.tokenizer)
    loaders = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu")
    trainer.fit(module, loaders["train"], loaders["validation"])
    metric = "val_rougeL" if task == "summarization" else "val_bleu"
    m = trainer.callback_metrics
    assert math.isfinite(float(m["val_loss"])) and math.isfinite(float(m[metric])) and float(m["val_generated"]) == 6
    rows = module.last_generations["val"]
    batch = next(iter(loaders["validation"]))
    module.model.eval()
    with torch.no_grad():
        new = prompts.generate_continuations(module.model, p.tokenizer, batch["_prompt_ids"], batch["_prompt_mask"],
                                             max_new_tokens=8, num_beams=1)
    texts = [t.strip() for t in p.tokenizer.batch_decode(new, skip_special_tokens=True)]
    assert [r[1] for r in rows[: len(texts)]] == texts  # validation scored the continuations, not prompt + continuation
    best = str(tmp_path / "out" / "best")
    export.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
    inp = write_jsonl(str(tmp_path / "in.jsonl"), [{"document": "the cat sat on the mat .", "summary": "x"}] if task == "summarization"
                      else [{"translation": {"en": "the cat sat"}}])
    out = predict.run(best, inp, {"batch_size": 2, "max_new_tokens": 8})
    key = "summary_text" if task == "summarization" else "translation_text"
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(best).eval()
    source = "the cat sat on the mat ." if task == "summarization" else "the cat sat"
    ids, mask = prompts.pad_left([prompts.prompt_ids(p.tokenizer, source, kind, cfg.data.max_length)], p.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = p.tokenizer.decode(prompts.generate_continuations(exported, p.tokenizer, ids, mask, max_new_tokens=8, num_beams=1)[0],
                                      skip_special_tokens=True).strip()
    assert [r[key] for r in out] == [expected]  # only the continuation comes back


def test_language_modeling_prompt_response_scores_response_tokens_only(gpt2_models, tmp_path):
    import torch.nn.functional as F

    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    rows = [{"q": r["document"], "a": r["summary"]} for r in summary_rows(12, seed=3)]
    files = {"train": write_jsonl(str(tmp_path / "t.jsonl"), rows), "validation": write_jsonl(str(tmp_path / "v.jsonl"), rows[:4])}
    cfg = base_config(gpt2_models["chat"], files, str(tmp_path / "out"), task="language-modeling", ray={"num_workers": 1})
    cfg.task_options = {"prompt_column": "q", "response_column": "a"}
    p = prepare.prepare(cfg)
    module = p.task.module(p.meta, p.tokenizer).eval()
    loader = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)["validation"]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    got = trainer.validate(module, loader, verbose=False)[0]["val_loss"]
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in p.splits["validation"]:
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            logits = module.model(input_ids=ids).logits[0, :-1]
            target = labels[0, 1:]
            keep = target != -100
            total += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    tokens = sum(len(x) - 1 for x in p.splits["validation"]["input_ids"])
    prompt_tokens = sum(len(x) for x in p.splits["validation"]["prompt_ids"])
    assert count == tokens - prompt_tokens + len(rows[:4])  # every position after the prompt, none of the prompt
    assert got == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(ConfigError, match="prompt_column and response_column go together"):
        bad = base_config(gpt2_models["chat"], files, str(tmp_path / "o2"), task="language-modeling")
        bad.task_options = {"prompt_column": "q"}
        prepare.prepare(bad)
