"""LoRA (peft.method lora) without Ray: config checks, which modules get adapters and which train
fully, trainable-only checkpoints and exact resume, merged export == adapter on base, predict and
evaluate on both folders, every task building and training with adapters, and `launcher plan`.

Plain Lightning on tiny models built here; a few seconds each.
"""

from __future__ import annotations

import json
import os
import warnings

import lightning.pytorch as pl
import pytest
import torch

from launcher.config import Config, ConfigError, validate
from launcher.tasks import _peft
from tests.helpers.config import base_config
from tests.helpers.data import sentiment_rows, write_csv, write_jsonl

pytestmark = pytest.mark.requires("peft", install="make venv")  # a dependency of launcher

LORA = {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0}


def _cfg(**peft) -> Config:
    cfg = Config()
    cfg.model.name_or_path, cfg.data.train_file = "m", "t.csv"
    for k, v in peft.items():
        setattr(cfg.peft, k, v)
    return cfg


@pytest.mark.parametrize("peft, message", [
    ({"method": "lora", "r": 0}, "peft.r: must be >= 1, got 0"),
    ({"method": "lora", "alpha": 0}, "peft.alpha: must be > 0"),
    ({"method": "lora", "dropout": 1.0}, "peft.dropout: must be in [0, 1), got 1.0"),
    ({"method": "lora", "target_modules": []}, "peft.target_modules: must be null or a non-empty list"),
    ({"method": "qlora"}, "peft.method: qlora needs CUDA GPUs (bitsandbytes 4-bit weights) — set --ray.use_gpu true"),
])
def test_config_errors_name_the_key(peft, message):
    with pytest.raises(ConfigError) as e:
        validate(_cfg(**peft))
    assert message in str(e.value)


def test_lora_on_random_weights_is_refused():
    cfg = _cfg(method="lora")
    cfg.model.from_config = True
    with pytest.raises(ConfigError, match="peft.method: lora adapts pretrained weights, but model.from_config"):
        validate(cfg)


def test_peft_keys_are_searchable():
    from launcher.search import space as space_lib

    cfg = _cfg(method="lora")
    cfg.tune.search_space = {"peft.r": {"choice": [4, 8, 16]}, "peft.dropout": {"uniform": [0.0, 0.2]}}
    dims = space_lib.parse_space(cfg)
    space_lib.validate_search(cfg, dims)
    assert space_lib.apply_params(cfg, {"peft.r": 16.0}).peft.r == 16
    cfg.tune.search_space = {"peft.r": {"choice": [0, 8]}}
    with pytest.raises(ConfigError, match="peft.r=0 gives an invalid config: peft.r: must be >= 1"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))


def test_pbt_cannot_search_adapter_shapes():
    from launcher.search import space as space_lib

    cfg = _cfg(method="lora")
    cfg.tune.scheduler, cfg.tune.num_samples = "pbt", 4
    cfg.tune.search_space = {"peft.r": {"choice": [4, 8]}}
    with pytest.raises(ConfigError, match="tune.search_space.peft.r: pbt copies weights between trials"):
        space_lib.validate_search(cfg, space_lib.parse_space(cfg))
    cfg.tune.search_space = {"peft.alpha": {"choice": [8, 16]}}
    space_lib.validate_search(cfg, space_lib.parse_space(cfg))


# ---------------------------------------------------------------------- which modules


def _tiny(kind: str):
    import transformers as T

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    return {
        "bert-seq": lambda: T.BertForSequenceClassification(T.BertConfig(**small, num_labels=3)),
        "bert-qa": lambda: T.BertForQuestionAnswering(T.BertConfig(**small)),
        "bert-pretraining": lambda: T.BertForPreTraining(T.BertConfig(**small)),
        "distilbert-seq": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                                             vocab_size=100)),
        "t5-seq": lambda: T.T5ForSequenceClassification(T.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                                                                    vocab_size=100, num_labels=3)),
        "gpt2-lm": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100)),
    }[kind]()


@pytest.mark.parametrize("kind, heads, targets", [
    ("bert-seq", ["classifier"], ["query", "value"]),                      # peft's table for bert
    ("bert-qa", ["qa_outputs"], ["query", "value"]),
    ("distilbert-seq", ["classifier", "pre_classifier"], None),            # not in peft's table: every linear but the head
    ("t5-seq", ["classification_head"], ["q", "v"]),                        # peft's own SEQ_CLS list misses this head
    ("gpt2-lm", [], ["c_attn"]),                                            # the tied lm_head never trains
])
def test_the_new_head_trains_fully_and_targets_follow_the_architecture(kind, heads, targets):
    model = _tiny(kind)
    got_targets, got_heads = _peft.resolve_modules(model, _cfg(method="lora").peft)
    assert got_heads == heads
    if targets is None:
        assert got_targets and not any(t.startswith(("classifier", "pre_classifier")) for t in got_targets)
    else:
        assert got_targets == targets


def test_missing_keys_pick_the_pretraining_head_but_not_the_tied_decoder():
    model = _tiny("bert-pretraining")
    missing = ["cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
               "cls.predictions.decoder.weight", "cls.seq_relationship.weight"]
    assert _peft.new_head_modules(model, missing) == ["cls.predictions.transform.LayerNorm", "cls.predictions.transform.dense",
                                                      "cls.seq_relationship"]


def test_all_linear_excludes_heads_and_output_embeddings():
    model = _tiny("bert-qa")
    targets, _ = _peft.resolve_modules(model, _cfg(method="lora", target_modules=["all"]).peft)
    assert "qa_outputs" not in targets and any(t.endswith("intermediate.dense") for t in targets)
    assert not any("lm_head" in t for t in _peft.all_linear(_tiny("gpt2-lm"), []))


def test_unknown_module_names_are_config_errors():
    with pytest.raises(ConfigError, match=r"peft.target_modules: no module named 'q_proj' in BertForSequenceClassification — linear layers"):
        _peft.resolve_modules(_tiny("bert-seq"), _cfg(method="lora", target_modules=["q_proj"]).peft)
    with pytest.raises(ConfigError, match=r"peft.modules_to_save: no module named 'head'"):
        _peft.resolve_modules(_tiny("bert-seq"), _cfg(method="lora", modules_to_save=["head"]).peft)


# ---------------------------------------------------------------------- training, checkpoints, export


@pytest.fixture
def lora_run(tmp_path, tiny_bert):
    """A LoRA sequence-classification module trained 2 epochs with plain Lightning, and a checkpoint after epoch 1."""
    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    files = {"train": write_csv(str(tmp_path / "train.csv"), sentiment_rows(48, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), sentiment_rows(12, seed=2))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"), peft=dict(LORA), ray={"num_workers": 1})
    p = prepare.prepare(cfg)

    class Crash(RuntimeError):
        pass

    class CheckpointThenCrash(pl.Callback):
        """Saves a checkpoint after optimizer step `at` and dies, as a worker lost right after a report."""

        def __init__(self, at: int, path: str):
            self.at, self.path = at, path

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.at:
                trainer.save_checkpoint(self.path)
                raise Crash()

    def fit(epochs: int, ckpt_path=None, save_at_end=None, crash_at=None):
        from launcher.training.resume import LoaderPosition

        pl.seed_everything(0, verbose=False)
        module = p.task.module(p.meta, p.tokenizer)
        loaders = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)
        callbacks = [LoaderPosition(loaders["train"])] + ([CheckpointThenCrash(*crash_at)] if crash_at else [])
        trainer = pl.Trainer(max_epochs=epochs, accumulate_grad_batches=2, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", callbacks=callbacks)
        if crash_at:
            with pytest.raises(Crash):
                trainer.fit(module, loaders["train"], loaders["validation"], ckpt_path=ckpt_path)
        else:
            trainer.fit(module, loaders["train"], loaders["validation"], ckpt_path=ckpt_path)
        if save_at_end:
            trainer.save_checkpoint(save_at_end)
        return module, loaders

    return cfg, p, fit


def test_only_adapters_and_head_change_and_checkpoints_hold_only_them(lora_run, tmp_path):
    cfg, p, fit = lora_run
    pl.seed_everything(0, verbose=False)
    before = {k: v.clone() for k, v in p.task.module(p.meta, p.tokenizer).state_dict().items()}
    ckpt = str(tmp_path / "e1.ckpt")
    module, _ = fit(1, save_at_end=ckpt)
    after = module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = module.trainable_keys()
    assert changed and changed <= trainable
    assert all("lora_" in k or ".modules_to_save." in k for k in trainable)
    assert any("classifier.modules_to_save" in k for k in changed) and any("lora_B" in k for k in changed)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert set(state["state_dict"]) == trainable
    assert len(state["optimizer_states"][0]["state"]) == len(trainable)  # AdamW state for trainable tensors only
    full = sum(v.numel() * v.element_size() for v in after.values())
    kept = sum(v.numel() * v.element_size() for v in state["state_dict"].values())
    assert kept < full / 10


def test_resume_from_a_trainable_only_checkpoint_is_exact(lora_run, tmp_path):
    cfg, p, fit = lora_run
    straight, _ = fit(2)
    ckpt = str(tmp_path / "step3.ckpt")
    fit(2, crash_at=(3, ckpt))  # mid-epoch 1 (6 optimizer steps per epoch)
    resumed, _ = fit(2, ckpt_path=ckpt)
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)
    other = base_config(cfg.model.name_or_path, {"train": cfg.data.train_file}, str(tmp_path / "o"), peft={**LORA, "target_modules": ["all"]})
    module = type(p.task)(other).module(p.meta, p.tokenizer)
    with pytest.raises(RuntimeError, match=r"the checkpoint lacks \d+ trainable tensors, .*other peft settings"):
        module.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])


def test_merged_export_equals_adapter_on_base_and_both_predict_and_evaluate(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from launcher import export
    from launcher.commands import evaluate, predict
    from launcher.files import write_yaml
    from launcher.config import to_dict

    cfg, p, fit = lora_run
    module, loaders = fit(1)
    best = str(tmp_path / "out" / "best")
    export.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
    adapter = os.path.join(best, "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "launcher.json"} <= set(os.listdir(adapter))
    assert os.path.getsize(os.path.join(adapter, "adapter_model.safetensors")) < os.path.getsize(os.path.join(best, "model.safetensors")) / 5
    batch = {k: v for k, v in next(iter(loaders["validation"])).items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    module.model.eval()
    with torch.no_grad():
        ref = module.model(**batch).logits
        merged = AutoModelForSequenceClassification.from_pretrained(best).eval()
        on_base = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(cfg.model.name_or_path, num_labels=2),
                                            adapter).eval()
        torch.testing.assert_close(merged(**batch).logits, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(on_base(**batch).logits, ref, rtol=1e-6, atol=1e-6)
    assert AutoTokenizer.from_pretrained(adapter) is not None
    write_yaml(str(tmp_path / "cfg.yaml"), to_dict(cfg))
    scores = {d: evaluate.run(cfg, d, "validation") for d in (best, adapter)}
    assert scores[best] == pytest.approx(scores[adapter], abs=1e-5)
    inp = write_csv(str(tmp_path / "in.csv"), [{"text": "great film"}, {"text": "awful plot"}])
    preds = {d: predict.run(d, inp, {"batch_size": 2}) for d in (best, adapter)}
    assert [r["label"] for r in preds[best]] == [r["label"] for r in preds[adapter]]
    assert [r["score"] for r in preds[best]] == pytest.approx([r["score"] for r in preds[adapter]], abs=1e-5)


def test_without_merge_best_holds_the_adapter_only(lora_run, tmp_path):
    from launcher import export
    from launcher.commands import evaluate

    cfg, p, fit = lora_run
    module, _ = fit(1)
    cfg.peft.merge_on_export = False
    best = str(tmp_path / "out" / "best")
    export.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
    assert "model.safetensors" not in os.listdir(best) and _peft.adapter_folder(best) == os.path.join(best, "adapter")
    with open(os.path.join(best, "launcher.json")) as f:
        info = json.load(f)["peft"]
    assert info["base_model"]["name_or_path"] == cfg.model.name_or_path and info["r"] == 4
    assert set(evaluate.run(cfg, best, "validation")) >= {"val_loss", "val_accuracy"}


# ---------------------------------------------------------------------- every task


def _task_cases(tmp_path, tiny_bert):
    from tests.helpers.generative import summary_rows, tiny_gpt2, tiny_t5, translation_rows, write_documents, write_lines

    gpt2, t5 = tiny_gpt2(str(tmp_path / "gpt2")), tiny_t5(str(tmp_path / "t5"))
    ner = [{"tokens": ["alice", "lives", "in", "paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
           {"tokens": ["bob", "works", "at", "acme"], "ner_tags": ["B-PER", "O", "O", "B-ORG"]}] * 4
    qa = [{"question": "where does alice live ?", "context": "alice lives in paris .", "answers": {"text": ["paris"], "answer_start": [15]}},
          {"question": "who works at acme ?", "context": "bob works at acme .", "answers": {"text": ["bob"], "answer_start": [0]}}] * 4
    j = lambda name, rows: write_jsonl(str(tmp_path / name), rows)  # noqa: E731
    return {
        "sequence-classification": (tiny_bert, {"train": write_csv(str(tmp_path / "s.csv"), sentiment_rows(8))}, {}, "classifier"),
        "token-classification": (tiny_bert, {"train": j("n.jsonl", ner)}, {}, "classifier"),
        "question-answering": (tiny_bert, {"train": j("q.jsonl", qa)}, {"doc_stride": 8}, "qa_outputs"),
        "base": (tiny_bert, {"train": write_csv(str(tmp_path / "b.csv"), sentiment_rows(8))},
                 {"head": "launcher.tasks.base:MeanPoolClassifier"}, "head"),
        "language-modeling": (gpt2, {"train": write_lines(str(tmp_path / "l.txt"), 16)}, {}, None),
        "pretraining": (tiny_bert, {"train": write_documents(str(tmp_path / "d.txt"), 4)}, {}, "cls.seq_relationship"),
        "summarization": (t5, {"train": j("sum.jsonl", summary_rows(8))}, {}, None),
        "translation": (t5, {"train": j("tr.jsonl", translation_rows(8))}, {"source_lang": "en", "target_lang": "fr"}, None),
    }


def test_every_task_trains_adapters_and_exports_both_folders(tmp_path, tiny_bert):
    from launcher import export
    from launcher.training import loop, prepare

    warnings.filterwarnings("ignore")
    for task, (model, files, options, head) in _task_cases(tmp_path, tiny_bert).items():
        cfg = base_config(model, files, str(tmp_path / task), task=task, peft=dict(LORA), ray={"num_workers": 1},
                          train={"max_steps": 2, "batch_size": 2, "accumulate_grad_batches": 1})
        cfg.data.source_column, cfg.data.target_column = ("document", "summary") if task == "summarization" else (None, None)
        cfg.task_options = dict(options, **({"max_target_length": 8} if task in ("summarization", "translation") else {}))
        p = prepare.prepare(cfg)
        module = p.task.module(p.meta, p.tokenizer)
        trainable = module.trainable_keys()
        assert any("lora_A" in k for k in trainable), task
        if head:
            assert any(f".{head}." in k and "lora_" not in k for k in trainable), (task, sorted(trainable)[:6])
        loaders = loop.build_loaders(p.task, cfg, p.splits, p.tokenizer, 0, 1)
        trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, accelerator="cpu", limit_val_batches=0)
        trainer.fit(module, loaders["train"])
        best = str(tmp_path / task / "best")
        export.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, best)
        assert os.path.exists(os.path.join(best, "adapter", "adapter_model.safetensors")), task
        assert "config.json" in os.listdir(best) and not any("lora" in f for f in os.listdir(best)), task


# ---------------------------------------------------------------------- plan


def test_plan_counts_trainable_parameters_and_frozen_base_memory(tiny_bert, tmp_path):
    from launcher.commands import plan

    files = {"train": write_csv(str(tmp_path / "t.csv"), sentiment_rows(20)), "validation": write_csv(str(tmp_path / "v.csv"), sentiment_rows(6))}
    cfg = base_config(tiny_bert, files, str(tmp_path / "out"))
    full = plan.build(cfg)["memory"]
    cfg.peft.method, cfg.peft.r = "lora", 4
    fast = plan.build(cfg)["memory"]
    exact = plan.build(cfg, exact=True)["memory"]
    # bert: LoRA on query and value of 2 layers, 32 x 32 each: 4 x r x (32 + 32)
    assert fast["trainable_parameters"] == 4 * 4 * 64
    assert exact["trainable_parameters"] == 4 * 4 * 64 + (32 * 2 + 2)  # + the classifier, which trains fully
    assert fast["bytes_per_worker"]["gradients"] == 4 * fast["trainable_parameters"]
    assert fast["bytes_per_worker"]["optimizer_state"] < full["bytes_per_worker"]["optimizer_state"] / 10
    assert "trainable:" in plan.render({**plan.build(cfg), "plan_seconds": 0})
