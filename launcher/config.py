"""Every knob of `launcher`, as typed dataclasses.

The attribute docstrings below become `launcher train --help`. Validation that needs no data, model
or Ray (ranges, choices, combinations) lives in `validate()` so mistakes fail in well under a second,
before any cluster work. This module must stay cheap to import: no torch, no ray.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional


class ConfigError(ValueError):
    """A user mistake in the config or the data: reported as one line, exit code 2."""

    def __init__(self, key: str, message: str, fix: str = ""):
        self.key = key
        self.fix = fix
        text = f"{key}: {message}" if key else message
        if fix:
            text += f" — {fix}"
        super().__init__(text)


@dataclass
class ModelConfig:
    name_or_path: str = ""
    """Model folder (a `save_pretrained` folder) or hub id. Required."""
    tokenizer: Optional[str] = None
    """Tokenizer folder when it differs from `name_or_path`."""
    from_config: bool = False
    """Build the model from its config with random weights (pretraining from scratch)."""
    gguf_file: Optional[str] = None
    """GGUF file name inside `name_or_path`; the model is de-quantized to float32 on load."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Off unless you trust the source."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) when loading from a hub id."""


@dataclass
class DataConfig:
    train_file: Optional[str] = None
    """Training data: .csv, .tsv, .json, .jsonl, .parquet, .txt, a CoNLL file, or a `save_to_disk` folder."""
    validation_file: Optional[str] = None
    """Validation data (same formats). When absent, `validation_split` of the training data is held out."""
    test_file: Optional[str] = None
    """Test data, scored once with the best checkpoint after training."""
    validation_split: float = 0.1
    """Fraction of the training data held out for validation when no `validation_file` is given."""
    text_column: str = "text"
    """Column with the input text."""
    text_pair_column: Optional[str] = None
    """Column with the second text of a pair (sentence-pair classification)."""
    label_column: str = "label"
    """Column with the label (strings or ints: classes; floats: regression)."""
    max_length: int = 128
    """Maximum tokens per example; longer inputs are truncated (QA: split into windows)."""
    max_train_samples: Optional[int] = None
    """Use at most this many training examples (quick experiments)."""
    max_eval_samples: Optional[int] = None
    """Use at most this many validation/test examples."""
    num_workers: int = 0
    """DataLoader worker processes per Ray worker (0: load in the training process)."""
    preprocessing_num_workers: Optional[int] = None
    """Processes for tokenisation on the driver (default: 1)."""
    source_column: Optional[str] = None
    """Seq2seq input column (summarization, translation)."""
    target_column: Optional[str] = None
    """Seq2seq output column (summarization, translation)."""
    block_size: Optional[int] = None
    """Language modeling: tokens per training block (default: min(max_length, model positions))."""


@dataclass
class OptimConfig:
    name: Literal["adamw", "adafactor"] = "adamw"
    """Optimizer."""
    lr: float = 5e-5
    """Peak learning rate (reached after warmup)."""
    weight_decay: float = 0.01
    """Decoupled weight decay; never applied to biases and normalisation weights."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    fused: Optional[bool] = None
    """Use the fused AdamW kernel (default: where torch supports it for the device)."""


SCHEDULERS = ("linear", "cosine", "cosine_w_restarts", "polynomial", "constant")


@dataclass
class SchedulerConfig:
    name: Literal["linear", "cosine", "cosine_w_restarts", "polynomial", "constant"] = "linear"
    """Learning-rate schedule after warmup, stepped once per optimizer step."""
    warmup_steps: int = 0
    """Linear warmup length in optimizer steps (wins over `warmup_ratio` when > 0)."""
    warmup_ratio: float = 0.0
    """Linear warmup length as a fraction of all optimizer steps, in [0, 1)."""
    num_cycles: Optional[float] = None
    """cosine: number of waves (default 0.5, a half cosine to 0); cosine_w_restarts: hard restarts (default 1)."""
    power: float = 1.0
    """polynomial: power of the decay."""
    lr_end: float = 1e-7
    """polynomial: final learning rate."""


PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


@dataclass
class TrainConfig:
    max_epochs: int = 3
    """Number of passes over the training data."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run `max_epochs`)."""
    batch_size: int = 16
    """Examples per batch per Ray worker (global batch = batch_size x workers x accumulation)."""
    eval_batch_size: Optional[int] = None
    """Examples per validation/test batch per worker (default: 2 x batch_size)."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed before each optimizer step."""
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true."""
    seed: int = 42
    """Seed for weights of new heads, shuffling and dropout."""
    gradient_clip_val: Optional[float] = 1.0
    """Clip the gradient norm to this value (null: no clipping)."""
    val_check_interval: float = 1.0
    """Validate every this fraction of an epoch (float <= 1) or every N training batches (int > 1)."""
    group_by_length: bool = True
    """Batch training examples of similar length together (less padding, faster); order stays random."""
    log_every_n_steps: int = 1
    """Log loss and learning rate every N optimizer steps."""
    deterministic: bool = False
    """Ask torch for deterministic algorithms (slower)."""
    skip_nonfinite_batches: bool = False
    """Skip optimizer steps whose loss or gradients are NaN/inf (counted in results.json) instead of stopping with an error."""


@dataclass
class CheckpointConfig:
    monitor: Optional[str] = None
    """Metric that picks the best checkpoint, e.g. val_accuracy (default: the task's main metric)."""
    mode: Optional[Literal["min", "max"]] = None
    """Whether a higher or lower `monitor` is better (default: min for losses/perplexity, else max)."""
    num_to_keep: int = 2
    """Keep the best k checkpoints by `monitor` (older, worse ones are deleted)."""
    every_n_steps: Optional[int] = None
    """Also checkpoint every N optimizer steps (for resuming long epochs after a failure)."""


@dataclass
class RayConfig:
    address: Optional[str] = None
    """Ray cluster to join (e.g. auto or ray://head:10001). Default: start a local Ray."""
    num_workers: int = 2
    """Ray Train workers (one process each; one per GPU when use_gpu)."""
    use_gpu: bool = False
    """Give each worker GPUs (`gpus_per_worker`)."""
    accelerator: Literal["auto", "cpu", "gpu", "tpu"] = "auto"
    """Device kind: auto picks gpu when use_gpu, else cpu; tpu runs torch-xla inside the workers."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (fractions allowed: several small trials share a machine)."""
    gpus_per_worker: float = 1.0
    """GPUs per worker when use_gpu."""
    tpus_per_worker: int = 4
    """accelerator tpu: TPU chips each worker reserves, all chips of one TPU host (v4/v5p hosts: 4; 8-chip v5e/v6e hosts: 8)."""
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """Data-parallel strategy: ddp everywhere; fsdp and deepspeed on GPUs only."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How workers are placed on nodes."""
    storage_path: Optional[str] = None
    """Where Ray keeps checkpoints and run state: local path, NFS path, s3:// or gs:// URI (default: $LAUNCHER_STORAGE, else <output_dir>/ray)."""
    max_failures: int = 2
    """Restart the worker group from the latest checkpoint this many times after a worker dies."""
    num_cpus: Optional[int] = None
    """CPUs of a local Ray started by launcher (default: all cores)."""


@dataclass
class TuneConfig:
    num_samples: int = 8
    """Trials to run (grid: repetitions of the whole grid)."""
    scheduler: Literal["fifo", "asha", "pbt"] = "asha"
    """fifo: run every trial to the end; asha: stop poor trials early; pbt: poor trials copy good ones and perturb lr/warmup."""
    search_alg: Literal["random", "grid", "optuna"] = "random"
    """How trials are sampled: random, grid (every combination of `grid` values), optuna (pip extra `optuna`)."""
    metric: Optional[str] = None
    """Metric that ranks trials and picks the best checkpoint (default: checkpoint.monitor, else the task's main metric)."""
    mode: Optional[Literal["min", "max"]] = None
    """Whether a higher or lower `metric` is better (default: min for losses/perplexity, else max)."""
    max_concurrent_trials: Optional[int] = 2
    """Trials that run at the same time (null: as many as the cluster holds)."""
    time_budget_s: Optional[float] = None
    """Stop starting and running trials after this many seconds (null: no limit)."""
    search_space: dict[str, Any] = field(default_factory=dict)
    """Dotted config key → {loguniform|uniform|quniform|randint|choice|grid: [...]}; empty: optim.lr, scheduler.warmup_ratio, scheduler.name."""
    grace_period: float = 1
    """asha: epochs every trial runs before it can be stopped."""
    reduction_factor: float = 2
    """asha: keep the best 1/reduction_factor of trials at each rung."""
    perturbation_interval: float = 1
    """pbt: epochs between exploit/explore steps."""
    quantile_fraction: float = 0.25
    """pbt: the worst fraction of trials copies the best fraction at each step."""
    seed: Optional[int] = None
    """Seed of the search's sampling (default: train.seed)."""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    """Write TensorBoard logs under <output_dir>/logs."""
    csv: bool = True
    """Write metrics.csv under <output_dir>/logs."""
    wandb: bool = False
    """Log to Weights & Biases (pip extra `wandb`; key from WANDB_API_KEY)."""
    wandb_project: Optional[str] = None
    """W&B project name (default: launcher)."""
    mlflow: bool = False
    """Log to MLflow (pip extra `mlflow`)."""
    mlflow_tracking_uri: Optional[str] = None
    """MLflow tracking URI (default: MLFLOW_TRACKING_URI or <output_dir>/mlruns)."""
    progress_every_s: float = 10.0
    """Seconds between progress lines (epoch, step, loss, lr, ETA) from rank 0."""


@dataclass
class Config:
    task: str = "sequence-classification"
    """Task: sequence-classification, token-classification, question-answering, base, language-modeling, pretraining, summarization, translation."""
    output_dir: str = "runs/run"
    """Folder of this run: logs, Ray storage, results.json and the exported best/ model."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data files and columns."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Learning-rate schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints and best-model selection."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray Train workers and storage."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Loggers and progress output."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Hyperparameter search: used by `launcher tune` (ignored by `launcher train`)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Task-specific options (see README: each task lists its options)."""


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Rebuild a Config from `to_dict` output (used inside Ray workers and by `evaluate`)."""
    kwargs = {}
    for f in dataclasses.fields(Config):
        if f.name not in d:
            continue
        value = d[f.name]
        sub = _SECTIONS.get(f.name)
        if sub is not None and isinstance(value, dict):
            names = {g.name for g in dataclasses.fields(sub)}
            value = sub(**{k: v for k, v in value.items() if k in names})
        kwargs[f.name] = value
    return Config(**kwargs)


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)}


def storage_path(cfg: Config) -> str:
    """ray.storage_path, else $LAUNCHER_STORAGE (set on cluster heads), else <output_dir>/ray."""
    return cfg.ray.storage_path or os.environ.get("LAUNCHER_STORAGE") or os.path.join(os.path.abspath(cfg.output_dir), "ray")


def default_mode(metric: str) -> str:
    lowered = metric.lower()
    return "min" if any(w in lowered for w in ("loss", "perplexity", "error", "mse", "mae")) else "max"


def validate(cfg: Config) -> None:
    """Range and combination checks that need neither data nor Ray. Raises ConfigError."""
    from launcher import secrets
    from launcher.tasks import TASKS  # registry only: cheap

    secrets.check_config(to_dict(cfg))  # secrets come from the environment only
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}", "choose one of: " + ", ".join(sorted(TASKS)))
    if not cfg.model.name_or_path:
        raise ConfigError("model.name_or_path", "is required", "set it to a model folder, e.g. --model.name_or_path path/to/model")
    if cfg.data.train_file is None:
        raise ConfigError("data.train_file", "is required", "set it to a .csv/.json/.jsonl/.parquet/.txt file or a save_to_disk folder")
    o, s, t, r = cfg.optim, cfg.scheduler, cfg.train, cfg.ray
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}", "typical fine-tuning values are 1e-5 to 1e-4")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(0 <= o.adam_beta1 < 1, "optim.adam_beta1", f"must be in [0, 1), got {o.adam_beta1}")
    _check(0 <= o.adam_beta2 < 1, "optim.adam_beta2", f"must be in [0, 1), got {o.adam_beta2}")
    _check(o.adam_epsilon > 0, "optim.adam_epsilon", f"must be > 0, got {o.adam_epsilon}")
    _check(s.warmup_steps >= 0, "scheduler.warmup_steps", f"must be >= 0, got {s.warmup_steps}")
    _check(0 <= s.warmup_ratio < 1, "scheduler.warmup_ratio", f"must be in [0, 1), got {s.warmup_ratio}")
    _check(s.num_cycles is None or s.num_cycles > 0, "scheduler.num_cycles", f"must be > 0, got {s.num_cycles}")
    _check(s.power > 0, "scheduler.power", f"must be > 0, got {s.power}")
    _check(s.lr_end >= 0 and (s.name != "polynomial" or s.lr_end < o.lr), "scheduler.lr_end",
           f"must be >= 0 and below optim.lr ({o.lr}), got {s.lr_end}")
    _check(t.max_epochs >= 1 or t.max_steps > 0, "train.max_epochs", f"must be >= 1, got {t.max_epochs}")
    _check(t.max_steps == -1 or t.max_steps > 0, "train.max_steps", f"must be -1 (off) or > 0, got {t.max_steps}")
    _check(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(t.eval_batch_size is None or t.eval_batch_size >= 1, "train.eval_batch_size", f"must be >= 1, got {t.eval_batch_size}")
    _check(t.accumulate_grad_batches >= 1, "train.accumulate_grad_batches", f"must be >= 1, got {t.accumulate_grad_batches}")
    _check(t.precision in PRECISIONS, "train.precision", f"invalid value {t.precision!r}", "choose one of: " + ", ".join(PRECISIONS))
    _check(t.gradient_clip_val is None or t.gradient_clip_val > 0, "train.gradient_clip_val", f"must be > 0 or null, got {t.gradient_clip_val}")
    _check(t.val_check_interval > 0, "train.val_check_interval", f"must be > 0, got {t.val_check_interval}")
    _check(t.log_every_n_steps >= 1, "train.log_every_n_steps", f"must be >= 1, got {t.log_every_n_steps}")
    d = cfg.data
    _check(d.max_length >= 8, "data.max_length", f"must be >= 8, got {d.max_length}")
    _check(0 < d.validation_split < 1, "data.validation_split", f"must be in (0, 1), got {d.validation_split}")
    _check(d.max_train_samples is None or d.max_train_samples >= 1, "data.max_train_samples", "must be >= 1")
    _check(d.max_eval_samples is None or d.max_eval_samples >= 1, "data.max_eval_samples", "must be >= 1")
    _check(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    c = cfg.checkpoint
    _check(c.num_to_keep >= 1, "checkpoint.num_to_keep", f"must be >= 1, got {c.num_to_keep}")
    _check(c.every_n_steps is None or c.every_n_steps >= 1, "checkpoint.every_n_steps", f"must be >= 1, got {c.every_n_steps}")
    _check(r.num_workers >= 1, "ray.num_workers", f"must be >= 1, got {r.num_workers}")
    _check(r.cpus_per_worker > 0, "ray.cpus_per_worker", f"must be > 0, got {r.cpus_per_worker}")
    _check(r.gpus_per_worker > 0, "ray.gpus_per_worker", f"must be > 0, got {r.gpus_per_worker}")
    _check(r.max_failures >= -1, "ray.max_failures", f"must be >= -1 (-1: retry forever), got {r.max_failures}")
    if r.strategy in ("fsdp", "deepspeed") and not (r.use_gpu or r.accelerator == "gpu"):
        raise ConfigError("ray.strategy", f"{r.strategy} needs GPUs", "set --ray.use_gpu true on a GPU cluster, or use --ray.strategy ddp on CPU")
    if r.accelerator == "gpu" and not r.use_gpu:
        raise ConfigError("ray.accelerator", "gpu needs ray.use_gpu true", "add --ray.use_gpu true")
    if r.accelerator == "tpu" and (r.use_gpu or r.strategy != "ddp"):
        raise ConfigError("ray.accelerator", "tpu runs its own XLA data parallelism", "leave ray.use_gpu false and ray.strategy ddp")
    _check(r.tpus_per_worker >= 1, "ray.tpus_per_worker", f"must be >= 1, got {r.tpus_per_worker}")
    if r.accelerator == "tpu" and t.precision not in ("32-true", "32", "bf16-mixed", "bf16-true"):
        raise ConfigError("train.precision", f"{t.precision} is not available on TPUs (XLA)", "use bf16-mixed, bf16-true or 32-true")


def _check(ok: bool, key: str, message: str, fix: str = "") -> None:
    if not ok:
        raise ConfigError(key, message, fix or f"set --{key} within that range (`launcher train --help` explains it)")
