"""launcher.lightning_base: a user's BaseTransformer subclass, defined here, trained on Ray Train workers."""

from __future__ import annotations

import argparse
import csv
import json
import os

import pytest
import torch

from launcher.lightning_base import BaseTransformer, add_generic_args, generic_train
from tests.helpers.data import sentiment_rows, write_csv

pytestmark = pytest.mark.ray


class TinyClassifier(BaseTransformer):
    """Written as a run_glue-style script would write it: the data from get_dataloader, the steps."""

    def __init__(self, hparams):
        super().__init__(hparams, num_labels=2, mode="sequence-classification")

    def get_dataloader(self, type_path, batch_size, shuffle=False):
        from torch.utils.data import DataLoader, TensorDataset

        with open(os.path.join(self.hparams.data_dir, f"{type_path}.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        enc = self.tokenizer([r["text"] for r in rows], padding="max_length", max_length=12, truncation=True, return_tensors="pt")
        labels = torch.tensor([int(r["label"] == "pos") for r in rows])
        return DataLoader(TensorDataset(enc["input_ids"], enc["attention_mask"], labels), batch_size=batch_size, shuffle=shuffle)

    def training_step(self, batch, batch_idx):
        ids, mask, labels = batch
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        ids, mask, labels = batch
        out = self.model(input_ids=ids, attention_mask=mask, labels=labels)
        acc = (out.logits.argmax(-1) == labels).float().mean()
        prefix = "test" if self.trainer.testing else "val"
        self.log(f"{prefix}_loss", out.loss, sync_dist=True)
        self.log(f"{prefix}_acc", acc, sync_dist=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    TinyClassifier.add_model_specific_args(parser, os.getcwd())
    return parser.parse_args(argv)


def data_dir(tmp_path, n_train: int) -> str:
    d = tmp_path / "data"
    d.mkdir()
    write_csv(str(d / "train.csv"), sentiment_rows(n_train, seed=1))
    write_csv(str(d / "dev.csv"), sentiment_rows(20, seed=2))
    write_csv(str(d / "test.csv"), sentiment_rows(20, seed=3))
    return str(d)


def common_args(tiny_bert: str, data: str, out: str) -> list[str]:
    return ["--model_name_or_path", tiny_bert, "--data_dir", data, "--output_dir", out, "--do_train", "--learning_rate", "1e-3",
            "--num_workers", "0", "--eval_batch_size", "8"]


def test_uneven_data_two_workers_exact_steps_best_tfmr_and_test(ray_session, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from launcher.data.sampling import optimizer_steps

    out = str(tmp_path / "run")
    # 50 rows on 2 workers, batches of 4, accumulation 3: 25 rows → 7 batches → 3 optimizer steps per
    # epoch on each worker (the original's 50 / (4 * 3) * 2 = 8.33 would leave the schedule unfinished).
    args = parse(common_args(tiny_bert, data_dir(tmp_path, 50), out) + [
        "--ray_num_workers", "2", "--train_batch_size", "4", "--gradient_accumulation_steps", "3", "--num_train_epochs", "2",
        "--warmup_steps", "1", "--do_predict"])
    torch.manual_seed(0)
    model = TinyClassifier(args)
    trainer = generic_train(model, args)

    steps = optimizer_steps(50, world=2, batch_size=4, accumulation=3, epochs=2)
    assert steps == 6
    r = trainer.results
    assert r["global_step"] == r["total_steps"] == steps
    assert r["final_lr"] == pytest.approx(0.0, abs=1e-12)  # linear schedule: 0 after the last step
    assert [e["epoch"] for e in r["epochs"]] == [1.0, 2.0]
    assert set(trainer.callback_metrics) >= {"val_loss", "val_acc"}
    best = os.path.join(out, "best_tfmr")
    assert r["best_tfmr"] == best and os.path.isfile(trainer.best_model_path)
    losses = [e["val_loss"] for e in r["epochs"]]
    assert r["best_value"] == min(losses)
    reloaded = AutoModelForSequenceClassification.from_pretrained(best)
    AutoTokenizer.from_pretrained(best)
    # best_tfmr holds the best epoch's weights, which the driver's model now has too
    for name, p in reloaded.state_dict().items():
        assert torch.allclose(p, model.model.state_dict()[name]), name
    val = dict(line.split(" = ") for line in open(os.path.join(out, "val_results.txt")).read().splitlines())
    assert float(val["val_loss"]) == pytest.approx(losses[-1], rel=1e-5)

    [metrics] = trainer.test(model)
    lines = open(os.path.join(out, "test_results.txt")).read().splitlines()
    parsed = {k: float(v) for k, v in (line.split(" = ") for line in lines)}
    assert lines == sorted(lines) and {"test_loss", "test_acc"} <= set(parsed)
    assert parsed["test_loss"] == pytest.approx(metrics["test_loss"])
    assert 0.0 <= parsed["test_acc"] <= 1.0


@pytest.mark.slow
def test_two_workers_with_accumulation_equal_one_worker_with_double_batches(ray_session, tiny_bert, tmp_path):
    data = data_dir(tmp_path, 48)
    final = {}
    for workers, batch in ((2, 4), (1, 8)):
        out = str(tmp_path / f"run{workers}")
        # best epoch = the last (epoch, max): best_tfmr and the driver's model hold the final weights
        args = parse(common_args(tiny_bert, data, out) + [
            "--ray_num_workers", str(workers), "--train_batch_size", str(batch), "--gradient_accumulation_steps", "2",
            "--num_train_epochs", "2", "--monitor", "epoch", "--monitor_mode", "max"])
        torch.manual_seed(0)
        model = TinyClassifier(args)
        trainer = generic_train(model, args)
        assert trainer.results["global_step"] == trainer.results["total_steps"] == 6
        final[workers] = {k: v.clone() for k, v in model.model.state_dict().items()}
    start = TinyClassifier(args).model.state_dict()
    moved = 0
    for name, p in final[2].items():
        assert torch.allclose(p, final[1][name], atol=1e-5), name
        moved += not torch.equal(p, start[name]) if name in start and "classifier" not in name else 0
    assert moved > 0  # training changed the encoder


#: the validation score of each epoch, by trial: "peak" is best at its middle epoch, above every other
CURVES = {"peak": [0.5, 0.9, 0.6], "rising": [0.6, 0.7, 0.85], "low": [0.2, 0.3, 0.4]}


class CurveClassifier(TinyClassifier):
    """Trains like TinyClassifier; its val_score follows CURVES[hparams.curve], epoch by epoch."""

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("val_score", CURVES[self.hparams.curve][self.current_epoch], sync_dist=True)


@pytest.mark.slow
def test_generic_tune_picks_the_mid_run_peak_of_all_trials(ray_session, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from launcher.lightning_base import generic_tune

    out = str(tmp_path / "search")
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    CurveClassifier.add_model_specific_args(parser, os.getcwd())
    parser.add_argument("--curve", default="low")
    args = parser.parse_args(common_args(tiny_bert, data_dir(tmp_path, 16), out) + [
        "--train_batch_size", "8", "--num_train_epochs", "3", "--monitor", "val_score", "--monitor_mode", "max",
        "--ray_cpus_per_worker", "0.5"])
    best = generic_tune(CurveClassifier, args, search_space={"curve": {"grid": ["peak", "rising", "low"]}}, num_samples=1,
                        scheduler="fifo", search_alg="grid", max_concurrent_trials=1)

    assert best["params"] == {"curve": "peak"} and best["epoch"] == 2.0 and best["value"] == pytest.approx(0.9)
    assert best["trials"] == 3
    with open(os.path.join(out, "best.json")) as f:
        assert json.load(f)["trial_id"] == best["trial_id"]
    rows = list(csv.DictReader(open(os.path.join(out, "trials.csv"))))
    assert sorted(r["curve"] for r in rows) == ["low", "peak", "rising"] and all(r["status"] == "finished" for r in rows)
    # best_tfmr is the peak trial's epoch-2 weights: the same files as that trial's own best_tfmr
    trial_best = os.path.join(out, "trials", best["trial_id"], "best_tfmr")
    assert open(os.path.join(out, "best_tfmr", "model.safetensors"), "rb").read() == open(os.path.join(trial_best, "model.safetensors"), "rb").read()
    AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "best_tfmr"))
