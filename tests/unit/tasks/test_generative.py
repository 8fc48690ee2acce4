"""language-modeling, pretraining, summarization, translation without Ray: metrics against hand-computed
values, masking and packing, distributed generation gathered exactly once (two ranks simulated with
EvalShard), sentence pairs, and the one-line errors raised before Ray starts."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.helpers.cli import run_cli
from tests.helpers.config import base_config
from tests.helpers.data import write_csv
from tests.helpers.models import make_tiny_bert
from tests.helpers.generative import (FRENCH, bert_config_folder, summary_rows, tiny_bart, tiny_gpt2, tiny_t5,
                                      translation_rows, word_tokenizer, write_documents, write_jsonl, write_lines)
from launcher.config import Config, ConfigError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-models")
    return {"gpt2": tiny_gpt2(str(root / "gpt2")), "t5": tiny_t5(str(root / "t5")), "bart": tiny_bart(str(root / "bart")),
            "bert": make_tiny_bert(str(root / "bert"))}


def _validate(module, dataset, collate, batch_size: int, rank: int = 0, world: int = 1) -> dict:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from launcher.data.sampling import EvalShard

    loader = DataLoader(EvalShard(dataset, rank, world), batch_size=batch_size, collate_fn=collate)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, dataloaders=loader, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


# ---------------------------------------------------------------------- language modeling


def _hand_causal_nll(model, tokenizer, examples: list[list[int]]) -> tuple[float, int]:
    """Sum of -log p(token | prefix) over every token after the first, one example at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in examples:
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            for t in range(1, len(ids)):
                total -= float(logp[t - 1, ids[t]])
                count += 1
    return total, count


def test_perplexity_is_exp_of_token_weighted_mean_loss(models, tmp_path):
    """Documents of very different lengths (packing off) in batches of 2: the epoch loss must be the mean
    over tokens, not over batches; on rank 1 of 2 the pad row must not count."""
    from launcher.training import prepare as prepare_lib

    rng = random.Random(0)
    from tests.helpers.generative import sentence

    docs = [" ".join(sentence(rng) for _ in range(k)) for k in (1, 5, 2, 4, 1)]
    files = {"train": write_csv(str(tmp_path / "train.csv"), [{"text": d} for d in docs]),
             "validation": write_csv(str(tmp_path / "val.csv"), [{"text": d} for d in docs])}
    cfg = base_config(models["gpt2"], files, str(tmp_path / "out"), task="language-modeling",
                      data={"max_length": 64, "block_size": 40}, task_options={"packing": False})
    p = prepare_lib.prepare(cfg)
    val = p.splits["validation"]
    assert p.meta == {"objective": "causal", "block_size": 40}
    module = p.task.module(p.meta, p.tokenizer)
    module.model.eval()
    collate = p.task.collator(p.tokenizer)
    examples = [val[i]["input_ids"] for i in range(len(val))]
    assert all(e[-1] == p.tokenizer.eos_token_id or len(e) == 40 for e in examples)  # documents end with EOS

    got = _validate(module, val, collate, batch_size=2)
    total, count = _hand_causal_nll(module.model, p.tokenizer, examples)
    assert got["val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["val_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    per_batch = [_hand_causal_nll(module.model, p.tokenizer, examples[i : i + 2]) for i in range(0, 5, 2)]
    # The mean of batch means differs from the token mean by more than the tolerance above: the check can tell them apart.
    assert abs(sum(t / c for t, c in per_batch) / len(per_batch) - got["val_loss"]) > 10 * 1e-5 * got["val_loss"]

    # Rank 1 of 2 holds examples 1 and 3 plus a pad row (a copy of example 0) that must not count.
    got1 = _validate(module, val, collate, batch_size=2, rank=1, world=2)
    t1, c1 = _hand_causal_nll(module.model, p.tokenizer, [examples[1], examples[3]])
    assert got1["val_loss"] == pytest.approx(t1 / c1, rel=1e-5)


def test_packing_concatenates_and_cuts_blocks(models, tmp_path):
    from launcher.training import prepare as prepare_lib

    path = write_lines(str(tmp_path / "train.txt"), 40, seed=3)
    cfg = base_config(models["gpt2"], {"train": path, "validation": path}, str(tmp_path / "out"), task="language-modeling",
                      data={"block_size": 16})
    p = prepare_lib.prepare(cfg)
    blocks = p.splits["validation"]["input_ids"]
    tok = p.tokenizer
    with open(path) as f:
        expected = tok(f.read(), add_special_tokens=False)["input_ids"]  # lines of a .txt: no EOS between them
    assert [len(b) for b in blocks[:-1]] == [16] * (len(blocks) - 1) and 2 <= len(blocks[-1]) <= 16
    assert [t for b in blocks for t in b] == expected


def test_causal_documents_from_a_column_are_separated_by_eos(models, tmp_path):
    from launcher.training import prepare as prepare_lib

    rows = [{"text": "the cat sat ."}, {"text": "a dog ran ."}, {"text": "the fox ."}]
    path = write_csv(str(tmp_path / "d.csv"), rows)
    cfg = base_config(models["gpt2"], {"train": path, "validation": path}, str(tmp_path / "out"), task="language-modeling",
                      data={"block_size": 64})
    p = prepare_lib.prepare(cfg)
    ids = p.splits["validation"]["input_ids"][0]
    assert p.tokenizer.decode(ids) == "the cat sat . </s> a dog ran . </s> the fox . </s>"


def test_masked_eval_masking_is_fixed_per_example(models):
    from transformers import AutoTokenizer

    from launcher.tasks.language_modeling import LMCollator

    tok = AutoTokenizer.from_pretrained(models["bert"])
    collate = LMCollator(tok, "masked", mlm_probability=0.3, seed=7)
    texts = ["the film was good and the plot was great", "a very dull story", "it is quite boring and the acting is poor"]
    enc = tok(texts, return_special_tokens_mask=True)
    rows = [{"input_ids": enc["input_ids"][i], "special_tokens_mask": enc["special_tokens_mask"][i], "_pad": 0, "_index": i}
            for i in range(3)]
    together = collate([dict(r) for r in rows])
    alone = collate([dict(rows[2])])
    n = len(enc["input_ids"][2])
    assert torch.equal(together["labels"][2, :n], alone["labels"][0, :n])  # independent of batch and padding
    assert torch.equal(together["labels"], collate([dict(r) for r in rows])["labels"])  # same every epoch
    special = torch.zeros_like(together["labels"], dtype=torch.bool)
    for i in range(3):
        special[i, : len(enc["input_ids"][i])] = torch.tensor(enc["special_tokens_mask"][i], dtype=torch.bool)
    assert not (together["labels"][special] != -100).any()  # [CLS]/[SEP] are never predicted
    assert (together["labels"][together["attention_mask"] == 0] == -100).all()
    masked = together["labels"] != -100
    assert masked.any()
    assert torch.equal(together["labels"][masked], torch.tensor(enc["input_ids"][0] + enc["input_ids"][1] + enc["input_ids"][2])[
        torch.cat([masked[i, : len(enc["input_ids"][i])] for i in range(3)])])


def test_masked_lm_exports_for_fill_mask_and_predict(models, tmp_path):
    from transformers import pipeline

    from launcher import export as export_lib
    from launcher.training import prepare as prepare_lib

    path = write_csv(str(tmp_path / "t.csv"), [{"text": "the film was good"}, {"text": "the plot was dull"}] * 4)
    cfg = base_config(models["bert"], {"train": path, "validation": path}, str(tmp_path / "out"), task="language-modeling")
    p = prepare_lib.prepare(cfg)
    assert p.meta["objective"] == "masked"  # BERT's default
    module = p.task.module(p.meta, p.tokenizer)
    got = _validate(module, p.splits["validation"], p.task.collator(p.tokenizer), batch_size=4)
    assert got["val_perplexity"] == pytest.approx(math.exp(got["val_loss"]), rel=1e-5)
    best = export_lib.save_folder(cfg, p.task, p.meta, module.model, p.tokenizer, str(tmp_path / "best"))
    assert len(pipeline("fill-mask", model=best)("the film was [MASK]", top_k=2)) == 2
    ds = p.task.read("--input", write_csv(str(tmp_path / "in.csv"), [{"text": "the [MASK] was good"}]))
    rows = p.task.predict(best, ds, {"top_k": 3, "batch_size": 2, "device": -1})
    assert rows[0]["text"] == "the [MASK] was good" and len(rows[0]["predictions"][0]) == 3
    bad = p.task.read("--input", write_csv(str(tmp_path / "bad.csv"), [{"text": "no mask here"}]))
    with pytest.raises(ConfigError, match="no \\[MASK\\] token"):
        p.task.predict(best, bad, {"device": -1})


def test_default_objective_follows_the_model_config():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    from launcher.tasks.language_modeling import default_objective

    assert default_objective(BertConfig()) == "masked"
    assert default_objective(BertConfig(is_decoder=True)) == "causal"
    assert default_objective(GPT2Config()) == "causal"
    assert default_objective(LlamaConfig()) == "causal"
    assert default_objective(BertConfig(architectures=["BertForMaskedLM"])) == "masked"


# ---------------------------------------------------------------------- text metrics on known strings


def _task(name: str, **options):
    from launcher.tasks import get_task

    return get_task(name)(Config(task=name, task_options=options))


def test_rouge_matches_hand_computed_values():
    task = _task("summarization")
    metrics = task.text_metrics()
    # pred/ref unigrams share the, the, cat, on, mat (5 of 6 each); bigrams share the cat, on the, the mat
    # (3 of 5); the longest common subsequence is "the cat on the mat" (5 of 6).
    task.update_text_metrics(metrics, ["the cat sat on the mat"], ["the cat is on the mat"])
    # Second pair: identical → 1.0 everywhere. Corpus ROUGE is the mean of the per-pair F-measures.
    task.update_text_metrics(metrics, ["a dog ran"], ["a dog ran"])
    got = task.text_metric_values(metrics)
    assert got["rouge1"] == pytest.approx((5 / 6 + 1) / 2)
    assert got["rouge2"] == pytest.approx((3 / 5 + 1) / 2)
    assert got["rougeL"] == pytest.approx((5 / 6 + 1) / 2)


def test_bleu_matches_hand_computed_value():
    task = _task("translation", source_lang="en", target_lang="fr")
    metrics = task.text_metrics()
    task.update_text_metrics(metrics, ["the cat sat on the mat"], ["the cat sat on the red mat"])
    # n-gram precisions 6/6, 4/5, 3/4, 2/3; hypothesis 6 tokens vs reference 7: brevity penalty exp(1 - 7/6).
    expected = math.exp(1 - 7 / 6) * math.exp((math.log(1) + math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3)) / 4)
    assert task.text_metric_values(metrics)["bleu"] == pytest.approx(expected, rel=1e-5)
    exact = task.text_metrics()
    task.update_text_metrics(exact, ["le chat dort sur le tapis ."], ["le chat dort sur le tapis ."])
    assert task.text_metric_values(exact)["bleu"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- distributed generation


def test_generation_over_two_simulated_ranks_gives_one_output_per_input(models, tmp_path):
    """7 examples on world=2: rank 1 carries a pad row. Each rank generates for its EvalShard; the merged
    rows are exactly the 7 examples in order, equal to a 1-process run, and so are the metrics."""
    from torch.utils.data import DataLoader

    from launcher.training import prepare as prepare_lib
    from launcher.data.sampling import EvalShard
    from launcher.tasks._seq2seq import merge_generations, score_rows

    files = {"train": write_csv(str(tmp_path / "train.csv"), summary_rows(8, seed=1)),
             "validation": write_csv(str(tmp_path / "val.csv"), summary_rows(7, seed=2))}
    cfg = base_config(models["t5"], files, str(tmp_path / "out"), task="summarization",
                      data={"source_column": "document", "target_column": "summary"}, task_options={"max_target_length": 6})
    p = prepare_lib.prepare(cfg)
    module = p.task.module(p.meta, p.tokenizer)
    module.model.eval()
    collate = p.task.collator(p.tokenizer)
    val = p.splits["validation"]

    def run(rank: int, world: int) -> list[tuple]:
        module.generations["val"] = []
        with torch.no_grad():
            for batch in DataLoader(EvalShard(val, rank, world), batch_size=3, collate_fn=collate):
                module.update_metrics(None, batch, module.eval_forward(batch, "val"), batch["_pad"] == 0)
        return module.generations["val"]

    single = run(0, 1)
    rows0, rows1 = run(0, 2), run(1, 2)
    assert [r[0] for r in rows0] == [0, 2, 4, 6] and [r[0] for r in rows1] == [1, 3, 5]  # the pad row is not recorded
    merged = merge_generations([rows0, rows1], expected=7)
    assert merged == merge_generations([single], expected=7)
    assert [r[2] for r in merged] == [r["summary"] for r in summary_rows(7, seed=2)]
    values = score_rows(p.task, p.task.text_metrics(), merged)
    assert values == score_rows(p.task, p.task.text_metrics(), single) and values["generated"] == 7
    # Through the module's end-of-epoch path (no torch.distributed: the local rows are all rows).
    module.generations["val"], module.generated["val"] = single, True
    assert module.compute_metrics(module.metrics["val"], 0.0) == values
    assert len(module.last_generations["val"]) == 7


def test_merge_generations_rejects_duplicates_and_gaps():
    from launcher.tasks._seq2seq import merge_generations

    assert merge_generations([[(2, "c"), (0, "a"), (-1, "pad")], [(1, "b")]], expected=3) == [(0, "a"), (1, "b"), (2, "c")]
    with pytest.raises(RuntimeError, match="twice"):
        merge_generations([[(0, "a")], [(0, "a")]])
    with pytest.raises(RuntimeError, match="missing"):
        merge_generations([[(0, "a")], [(2, "c")]], expected=3)


def test_generate_every_n_epochs_skips_text_metrics(models, tmp_path):
    from launcher.training import prepare as prepare_lib

    files = {"train": write_jsonl(str(tmp_path / "t.jsonl"), translation_rows(6)),
             "validation": write_jsonl(str(tmp_path / "v.jsonl"), translation_rows(5, seed=1))}
    cfg = base_config(models["bart"], files, str(tmp_path / "out"), task="translation",
                      task_options={"source_lang": "en", "target_lang": "fr", "max_target_length": 5, "generate_every_n_epochs": 0})
    p = prepare_lib.prepare(cfg)
    module = p.task.module(p.meta, p.tokenizer)
    got = _validate(module, p.splits["validation"], p.task.collator(p.tokenizer), batch_size=2)
    # trainer.validate alone is "epoch 1 of max_epochs 1000": with generate_every_n_epochs 0 only the loss is computed.
    assert math.isfinite(got["val_loss"]) and math.isnan(got["val_bleu"]) and math.isnan(got["val_generated"])


def test_seq2seq_labels_end_with_eos_and_prefix_is_applied(models, tmp_path):
    from launcher.training import prepare as prepare_lib

    files = {"train": write_csv(str(tmp_path / "t.csv"), [{"en": "the cat sat", "fr": "le chat assis"}] * 3)}
    cfg = base_config(models["bart"], {**files, "validation": files["train"]}, str(tmp_path / "out"), task="translation",
                      data={"source_column": "en", "target_column": "fr"},
                      task_options={"source_prefix": "a ", "max_target_length": 3})
    p = prepare_lib.prepare(cfg)
    row = p.splits["validation"][0]
    assert p.tokenizer.decode(row["input_ids"]) == "a the cat sat </s>"
    assert row["labels"] == p.tokenizer("le chat </s>", add_special_tokens=False)["input_ids"]  # truncated, still ends in EOS
    assert row["_target"] == "le chat assis"
    assert FRENCH["cat"] == "chat"


# ---------------------------------------------------------------------- pretraining pairs


def test_sentence_pairs_nsp_and_sop():
    from launcher.tasks.pretraining import sentence_pairs

    docs = [[f"d{d} s{i}" for i in range(8)] for d in range(6)]
    lengths = [[2] * 8 for _ in docs]
    pairs = sentence_pairs(docs, lengths, max_tokens=8, objective="nsp", rng=random.Random(0), short_seq=0.0)
    labels = [lab for _, _, lab in pairs]
    assert 0 in labels and 1 in labels
    for a, b, label in pairs:
        a_doc, b_doc = a.split()[0], b.split()[0]
        a_last, b_first = int(a.split()[-1][1:]), int(b.split()[1][1:])
        if label == 0:  # the true continuation: same document, next sentence
            assert a_doc == b_doc and b_first == a_last + 1
        else:
            assert a_doc != b_doc
    sop = sentence_pairs(docs, lengths, max_tokens=8, objective="sop", rng=random.Random(0), short_seq=0.0)
    assert {lab for _, _, lab in sop} == {0, 1}
    for a, b, label in sop:
        first, second = (a, b) if label == 0 else (b, a)
        assert first.split()[0] == second.split()[0] and int(second.split()[1][1:]) == int(first.split()[-1][1:]) + 1


def test_pretraining_builds_pairs_from_blank_line_documents(tmp_path):
    from launcher.training import prepare as prepare_lib

    model = bert_config_folder(str(tmp_path / "bert-config"))
    path = write_documents(str(tmp_path / "docs.txt"), 6, seed=1)
    cfg = base_config(model, {"train": path, "validation": path}, str(tmp_path / "out"), task="pretraining")
    cfg.model.from_config = True
    p = prepare_lib.prepare(cfg)
    ds = p.splits["train"]
    assert p.meta["objective"] == "nsp" and set(ds.column_names) >= {"input_ids", "token_type_ids", "next_sentence_label"}
    cls_id, sep_id = p.tokenizer.cls_token_id, p.tokenizer.sep_token_id
    for row in ds:
        assert row["input_ids"][0] == cls_id and row["input_ids"][-1] == sep_id and row["input_ids"].count(sep_id) == 2
        assert len(row["input_ids"]) <= 32 and row["token_type_ids"][-1] == 1
    assert len(p.task.read("data.train_file", path)) == 6  # documents
    assert len(p.task.read("--input", path)) == 6 * 6 + 5  # predict inputs: lines (blank ones included)
    module = p.task.module(p.meta, p.tokenizer)
    got = _validate(module, p.splits["validation"], p.task.collator(p.tokenizer), batch_size=8)
    assert got["val_loss"] == pytest.approx(got["val_mlm_loss"] + got["val_nsp_loss"], rel=1e-5)
    assert got["val_mlm_perplexity"] == pytest.approx(math.exp(got["val_mlm_loss"]), rel=1e-5)


# ---------------------------------------------------------------------- errors before Ray


def _prepare_error(cfg) -> ConfigError:
    from launcher.training import prepare as prepare_lib

    with pytest.raises(ConfigError) as e:
        prepare_lib.prepare(cfg)
    assert "\n" not in str(e.value)
    return e.value


def test_errors(models, tmp_path):
    csv_path = write_csv(str(tmp_path / "s.csv"), summary_rows(4))
    lm_path = write_lines(str(tmp_path / "lm.txt"), 10)
    files = {"train": csv_path, "validation": csv_path}

    e = _prepare_error(base_config(models["t5"], files, str(tmp_path / "o"), task="summarization",
                                   data={"source_column": "document", "target_column": "abstract"}))
    assert e.key == "data.target_column" and "present columns: document, summary" in str(e)
    empty = write_csv(str(tmp_path / "e.csv"), [{"document": "the cat sat", "summary": "the cat"}, {"document": "a dog", "summary": ""}])
    e = _prepare_error(base_config(models["t5"], {"train": empty, "validation": empty}, str(tmp_path / "o"), task="summarization",
                                   data={"source_column": "document", "target_column": "summary"}))
    assert e.key == "data.target_column" and "row 2" in str(e)
    e = _prepare_error(base_config(models["gpt2"], files, str(tmp_path / "o"), task="summarization",
                                   task_options={"decoder_only": False}))
    assert e.key == "model.name_or_path" and "decoder-only" in str(e)
    e = _prepare_error(base_config(models["gpt2"], {"train": lm_path}, str(tmp_path / "o"), task="language-modeling",
                                   data={"block_size": 128}))
    assert e.key == "data.block_size" and "64 positions" in str(e)
    e = _prepare_error(base_config(models["gpt2"], {"train": lm_path}, str(tmp_path / "o"), task="language-modeling",
                                   task_options={"objective": "masked"}))
    assert e.key == "task_options.objective" and "no masked LM head" in str(e)
    no_mask = str(tmp_path / "bert-no-mask")
    import shutil

    shutil.copytree(models["bert"], no_mask)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (tmp_path / "bert-no-mask" / name).unlink(missing_ok=True)
    word_tokenizer(no_mask, mask=False)
    e = _prepare_error(base_config(no_mask, {"train": lm_path}, str(tmp_path / "o"), task="language-modeling"))
    assert e.key == "task_options.objective" and "mask token" in str(e)
    e = _prepare_error(base_config(models["gpt2"], {"train": lm_path}, str(tmp_path / "o"), task="pretraining"))
    assert e.key == "model.name_or_path" and "language-modeling" in str(e)
    e = _prepare_error(base_config(models["gpt2"], {"train": lm_path}, str(tmp_path / "o"), task="language-modeling",
                                   task_options={"objective": "mlm"}))
    assert e.key == "task_options" and "causal or masked" in str(e)
    tr = write_jsonl(str(tmp_path / "t.jsonl"), translation_rows(4))
    e = _prepare_error(base_config(models["bart"], {"train": tr, "validation": tr}, str(tmp_path / "o"), task="translation",
                                   task_options={"max_target_length": 128}))
    assert e.key == "task_options.max_target_length" and "64 positions" in str(e)
    e = _prepare_error(base_config(models["bart"], {"train": tr, "validation": tr}, str(tmp_path / "o"), task="translation",
                                   task_options={"max_target_length": 8}))
    assert e.key == "task_options.source_lang"
    e = _prepare_error(base_config(models["bart"], {"train": tr, "validation": tr}, str(tmp_path / "o"), task="translation",
                                   task_options={"source_lang": "en", "target_lang": "de", "max_target_length": 8}))
    assert e.key == "task_options.target_lang" and "row 1" in str(e)
    e = _prepare_error(base_config(models["t5"], files, str(tmp_path / "o"), task="summarization",
                                   data={"source_column": "document", "target_column": "summary"},
                                   task_options={"num_beam": 2}))
    assert e.key == "task_options.num_beam" and "num_beams" in str(e)
    one_doc = str(tmp_path / "one.txt")
    with open(one_doc, "w") as f:
        f.write("the film was good\nthe plot was dull\n")
    cfg = base_config(bert_config_folder(str(tmp_path / "bc")), {"train": one_doc, "validation": one_doc}, str(tmp_path / "o"),
                      task="pretraining")
    cfg.model.from_config = True
    e = _prepare_error(cfg)
    assert e.key == "data.train_file" and "2 documents" in str(e)


def test_cli_error_is_one_line_before_ray(models, tmp_path):
    csv_path = write_csv(str(tmp_path / "s.csv"), summary_rows(4))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"task: summarization\nmodel:\n  name_or_path: {models['gpt2']}\ndata:\n  train_file: {csv_path}\n"
                   f"  source_column: document\n  target_column: summary\n  max_length: 32\noutput_dir: {tmp_path / 'o'}\n"
                   "task_options:\n  decoder_only: false\n")  # a causal LM trains decoder-only unless told otherwise
    r = run_cli("train", str(cfg))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("launcher train: error: model.name_or_path: summarization needs an encoder-decoder")
    assert "ray" not in r.stderr.lower()
