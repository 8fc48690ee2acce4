"""The original's argparse flags, the `--ray_*` ones, and the launcher Config they become.

The flags keep transformers' lightning_base.py names and dests (--num_train_epochs → max_epochs,
--max_grad_norm → gradient_clip_val, --gradient_accumulation_steps → accumulate_grad_batches);
`to_config` maps them onto launcher's Config, so the Ray machinery of `launcher train` (scaling,
checkpoints, restarts, loggers) runs a user's module unchanged.
"""

from __future__ import annotations

import argparse
import os

from launcher.config import Config
from launcher.errors import ConfigError
from launcher.lightning_base.module import arg_to_scheduler_choices, arg_to_scheduler_metavar

RAY_STRATEGIES = ("ddp", "fsdp", "deepspeed")


def add_model_specific_args(parser: argparse.ArgumentParser, root_dir: str) -> None:
    add = parser.add_argument
    add("--model_name_or_path", default=None, type=str, required=True,
        help="Path to pretrained model or model identifier from huggingface.co/models")
    add("--config_name", default="", type=str, help="Pretrained config name or path if not the same as model_name")
    add("--tokenizer_name", default=None, type=str, help="Pretrained tokenizer name or path if not the same as model_name")
    add("--cache_dir", default="", type=str, help="Where to store the pre-trained models downloaded from huggingface.co")
    for p in ("encoder_layerdrop", "decoder_layerdrop"):
        add(f"--{p}", type=float, help=f"{p.split('_')[0].capitalize()} layer dropout probability (Optional). Goes into model.config")
    add("--dropout", type=float, help="Dropout probability (Optional). Goes into model.config")
    add("--attention_dropout", type=float, help="Attention dropout probability (Optional). Goes into model.config")
    add("--learning_rate", default=5e-5, type=float, help="The initial learning rate for Adam.")
    add("--lr_scheduler", default="linear", choices=arg_to_scheduler_choices, metavar=arg_to_scheduler_metavar, type=str,
        help="Learning rate scheduler")
    add("--weight_decay", default=0.0, type=float, help="Weight decay if we apply some.")
    add("--adam_epsilon", default=1e-8, type=float, help="Epsilon for Adam optimizer.")
    add("--warmup_steps", default=0, type=int, help="Linear warmup over warmup_steps.")
    add("--num_workers", default=4, type=int, help="kwarg passed to DataLoader (data-loading processes of each Ray worker)")
    add("--num_train_epochs", dest="max_epochs", default=3, type=int)
    add("--train_batch_size", default=32, type=int, help="Batch size of each Ray worker")
    add("--eval_batch_size", default=32, type=int)
    add("--adafactor", action="store_true")


def add_generic_args(parser: argparse.ArgumentParser, root_dir: str) -> None:
    """The original's generic flags, plus where and how the module runs on Ray."""
    add = parser.add_argument
    add("--output_dir", default=None, type=str, required=True,
        help="The output directory where the model predictions and checkpoints will be written.")
    add("--fp16", action="store_true", help="16-bit mixed precision (Lightning's native AMP: precision 16-mixed)")
    add("--fp16_opt_level", type=str, default="O2", help="Kept for old scripts; native AMP has no Apex levels (ignored)")
    add("--n_tpu_cores", dest="tpu_cores", type=int, help="Not supported by generic_train (use `launcher train` with ray.accelerator tpu)")
    add("--max_grad_norm", dest="gradient_clip_val", default=1.0, type=float, help="Max gradient norm")
    add("--do_train", action="store_true", help="Whether to run training.")
    add("--do_predict", action="store_true", help="Whether to run predictions on the test set.")
    add("--gradient_accumulation_steps", dest="accumulate_grad_batches", type=int, default=1,
        help="Number of updates steps to accumulate before performing a backward/update pass.")
    add("--seed", type=int, default=42, help="random seed for initialization")
    add("--data_dir", default=None, type=str, required=True, help="The input data dir.")
    add("--gpus", type=int, default=0, help="GPUs: with N > 0, every Ray worker gets one GPU, and --ray_num_workers defaults to N")
    # Ray
    add("--ray_address", type=str, default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    add("--ray_num_workers", type=int, default=None, help="Ray Train workers (data-parallel processes; default 1, or --gpus)")
    add("--ray_use_gpu", action="store_true", help="One GPU per Ray worker")
    add("--ray_cpus_per_worker", type=float, default=1.0, help="CPUs each Ray worker reserves (also its torch threads)")
    add("--ray_strategy", choices=RAY_STRATEGIES, default="ddp", help="Distributed strategy of the workers")
    add("--ray_storage_path", type=str, default=None, help="Where Ray keeps checkpoints (default <output_dir>/ray; shared storage for multi-node)")
    add("--ray_max_failures", type=int, default=2, help="Worker-group restarts (from the last checkpoint) before the run fails")
    add("--precision", type=str, default=None, help="Lightning precision (32-true, bf16-mixed, 16-mixed); overrides --fp16")
    add("--monitor", type=str, default="val_loss", help="Logged metric that picks the best epoch (best_tfmr, checkpoints kept)")
    add("--monitor_mode", choices=("min", "max"), default="min", help="Whether a lower or a higher --monitor is better")


def num_workers(args: argparse.Namespace) -> int:
    n = getattr(args, "ray_num_workers", None)
    return int(n) if n else max(1, int(getattr(args, "gpus", 0) or 0))


def to_config(args: argparse.Namespace) -> Config:
    """The launcher Config that runs this argparse Namespace; ConfigError (naming the flag) when a value cannot run."""
    a = vars(args)
    if a.get("tpu_cores"):
        raise ConfigError("--n_tpu_cores", "is not supported by generic_train", "run on CPUs/GPUs, or use `launcher train` with ray.accelerator tpu")
    for flag, value in (("--train_batch_size", a.get("train_batch_size")), ("--gradient_accumulation_steps", a.get("accumulate_grad_batches")),
                        ("--num_train_epochs", a.get("max_epochs"))):
        if value is not None and int(value) < 1:
            raise ConfigError(flag, f"must be at least 1, got {value}")
    if not a.get("output_dir"):
        raise ConfigError("--output_dir", "is required")
    cfg = Config()
    cfg.task = "lightning_base"
    cfg.output_dir = os.path.abspath(a["output_dir"])
    t = cfg.train
    t.max_epochs = int(a.get("max_epochs") or 3)
    t.max_steps = int(a.get("max_steps") or -1)
    t.batch_size = int(a.get("train_batch_size") or 32)
    t.eval_batch_size = int(a.get("eval_batch_size") or t.batch_size)
    t.accumulate_grad_batches = int(a.get("accumulate_grad_batches") or 1)
    t.precision = a.get("precision") or ("16-mixed" if a.get("fp16") else "32-true")
    t.seed = int(a.get("seed", 42))
    t.gradient_clip_val = a.get("gradient_clip_val") or None  # 0: no clipping, as in Lightning
    t.log_every_n_steps = int(a.get("log_every_n_steps") or 50)
    cfg.optim.name = "adafactor" if a.get("adafactor") else "adamw"
    cfg.checkpoint.monitor = a.get("monitor") or "val_loss"
    cfg.checkpoint.mode = a.get("monitor_mode") or "min"
    r = cfg.ray
    r.address = a.get("ray_address")
    r.num_workers = num_workers(args)
    r.use_gpu = bool(a.get("ray_use_gpu") or (a.get("gpus") or 0) > 0)
    r.accelerator = "gpu" if r.use_gpu else "cpu"
    r.cpus_per_worker = float(a.get("ray_cpus_per_worker") or 1.0)
    strategy = a.get("ray_strategy") or "ddp"
    if strategy not in RAY_STRATEGIES:
        raise ConfigError("--ray_strategy", f"unknown strategy {strategy!r}", "choose one of: " + ", ".join(RAY_STRATEGIES))
    r.strategy = strategy
    r.storage_path = a.get("ray_storage_path")
    r.max_failures = int(a.get("ray_max_failures", 2))
    cfg.data.num_workers = int(a.get("num_workers") or 0)
    try:
        for section in (cfg.train, cfg.checkpoint, cfg.ray):
            section.check()
    except ConfigError as e:
        raise ConfigError(FLAGS.get(e.key, e.key), e.message, e.fix) from None
    return cfg


#: config key → the flag that sets it (errors name the flag)
FLAGS = {"train.max_epochs": "--num_train_epochs", "train.batch_size": "--train_batch_size", "train.eval_batch_size": "--eval_batch_size",
         "train.accumulate_grad_batches": "--gradient_accumulation_steps", "train.precision": "--precision",
         "train.gradient_clip_val": "--max_grad_norm", "ray.num_workers": "--ray_num_workers", "ray.cpus_per_worker": "--ray_cpus_per_worker",
         "ray.max_failures": "--ray_max_failures", "ray.strategy": "--ray_strategy", "train.max_steps": "--max_steps"}
