"""launcher.lightning_base without Ray: the original's flags and dests, the Config they become, exact
total_steps, the schedules, LoggingCallback's files."""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace

import pytest
import torch

from launcher.data.sampling import optimizer_steps
from launcher.errors import ConfigError
from launcher.lightning_base import (
    MODEL_MODES,
    BaseTransformer,
    LoggingCallback,
    add_generic_args,
    arg_to_scheduler,
    arg_to_scheduler_choices,
    arg_to_scheduler_metavar,
    to_config,
)


def parse(argv, model="m"):
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    BaseTransformer.add_model_specific_args(parser, os.getcwd())
    return parser.parse_args(["--model_name_or_path", model, "--output_dir", "out", "--data_dir", "d", *argv])


def test_original_flags_and_dests():
    a = parse(["--num_train_epochs", "5", "--max_grad_norm", "0.5", "--gradient_accumulation_steps", "4", "--n_tpu_cores", "8",
               "--adafactor", "--dropout", "0.2", "--do_train"])
    assert (a.max_epochs, a.gradient_clip_val, a.accumulate_grad_batches, a.tpu_cores) == (5, 0.5, 4, 8)
    assert a.adafactor and a.dropout == 0.2 and a.do_train and not a.do_predict
    assert (a.learning_rate, a.lr_scheduler, a.train_batch_size, a.eval_batch_size, a.num_workers, a.seed) == (5e-5, "linear", 32, 32, 4, 42)
    assert (a.monitor, a.monitor_mode, a.ray_num_workers, a.ray_strategy) == ("val_loss", "min", None, "ddp")
    assert arg_to_scheduler_choices == ["constant", "cosine", "cosine_w_restarts", "linear", "polynomial"]
    assert arg_to_scheduler_metavar == "{constant, cosine, cosine_w_restarts, linear, polynomial}"
    assert set(MODEL_MODES) == {"base", "sequence-classification", "question-answering", "pretraining", "token-classification",
                                "language-modeling", "summarization", "translation"}


def test_args_become_the_config_of_a_launcher_run():
    cfg = to_config(parse(["--ray_num_workers", "3", "--train_batch_size", "8", "--gradient_accumulation_steps", "2", "--fp16",
                           "--monitor", "val_acc", "--monitor_mode", "max", "--ray_cpus_per_worker", "0.5", "--max_grad_norm", "0"]))
    assert cfg.output_dir == os.path.abspath("out")
    assert (cfg.ray.num_workers, cfg.ray.cpus_per_worker, cfg.train.batch_size, cfg.train.accumulate_grad_batches) == (3, 0.5, 8, 2)
    assert cfg.train.precision == "16-mixed" and cfg.train.gradient_clip_val is None
    assert (cfg.checkpoint.monitor, cfg.checkpoint.mode) == ("val_acc", "max")
    assert to_config(parse(["--gpus", "2"])).ray.num_workers == 2 and to_config(parse(["--gpus", "2"])).ray.use_gpu


@pytest.mark.parametrize("argv, needle", [
    (["--n_tpu_cores", "8"], "--n_tpu_cores: is not supported by generic_train"),
    (["--train_batch_size", "0"], "--train_batch_size: must be at least 1"),
    (["--ray_num_workers", "-1"], "--ray_num_workers: must be >= 1"),
    (["--precision", "fp8"], "--precision: invalid value 'fp8'"),
])
def test_bad_values_name_the_flag(argv, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        to_config(parse(argv))


class Tiny(BaseTransformer):
    def __init__(self, hparams, n=50):
        super().__init__(hparams, num_labels=2, mode="sequence-classification")
        self.n = n

    def get_dataloader(self, type_path, batch_size, shuffle=False):
        from torch.utils.data import DataLoader, TensorDataset

        return DataLoader(TensorDataset(torch.zeros(self.n, 4, dtype=torch.long)), batch_size=batch_size, shuffle=shuffle)


@pytest.mark.parametrize("n, workers, batch, accumulation, epochs", [(50, 2, 4, 3, 2), (37, 3, 5, 2, 3), (8, 1, 8, 4, 1), (101, 4, 7, 5, 2)])
def test_total_steps_is_exact(tiny_bert, n, workers, batch, accumulation, epochs):
    args = parse(["--ray_num_workers", str(workers), "--train_batch_size", str(batch), "--gradient_accumulation_steps", str(accumulation),
                  "--num_train_epochs", str(epochs)], model=tiny_bert)
    model = Tiny(args, n)
    model.setup("fit")
    assert model.dataset_size == n
    assert model.total_steps() == optimizer_steps(n, workers, batch, accumulation, epochs)
    assert isinstance(model.total_steps(), int)


def test_dropout_flags_go_into_the_config_and_bad_ones_are_named(tiny_bert):
    with pytest.raises(ValueError, match="--encoder_layerdrop: the model config"):
        Tiny(parse(["--encoder_layerdrop", "0.1"], model=tiny_bert))
    model = Tiny(parse([], model=tiny_bert))
    assert model.model.training  # from_pretrained returns eval mode: put back in train mode
    assert MODEL_MODES["language-modeling"].choose(model.config).__name__ == "AutoModelForMaskedLM"


@pytest.mark.parametrize("name", arg_to_scheduler_choices)
def test_schedules_reach_their_end_value_at_total_steps(name):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = arg_to_scheduler[name](opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(10):
        opt.step()
        sched.step()
    expected = {"constant": 1.0, "polynomial": 1e-7}.get(name, 0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-9)


def test_logging_callback_writes_sorted_plain_numbers(tmp_path, capsys):
    trainer = SimpleNamespace(global_rank=0, sanity_checking=False,
                              callback_metrics={"val_loss": torch.tensor(0.25), "val_acc": torch.tensor(0.5), "epoch": 1})
    module = SimpleNamespace(hparams=SimpleNamespace(output_dir=str(tmp_path)))
    LoggingCallback().on_validation_end(trainer, module)
    LoggingCallback().on_test_end(trainer, module)
    for name in ("val_results.txt", "test_results.txt"):
        assert open(tmp_path / name).read() == "epoch = 1.0\nval_acc = 0.5\nval_loss = 0.25\n"
    assert "***** Validation results *****" in capsys.readouterr().err
    trainer.global_rank = 1
    os.remove(tmp_path / "val_results.txt")
    LoggingCallback().on_validation_end(trainer, module)
    assert not os.path.exists(tmp_path / "val_results.txt")  # rank 0 only
