"""Every knob of `launcher`, as typed dataclasses.

The attribute docstrings below become `launcher train --help` (jsonargparse) and the README's config
reference. Each section checks its own fields in `check()`, right below them; derived values are
methods (`TrainConfig.eval_batch_size_or_default`, `Config.storage_path`). Checks that combine
sections live in launcher.config.validate. Cheap to import: no torch, no ray.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from launcher.errors import ConfigError


def require(ok: bool, key: str, message: str, fix: Optional[str] = None) -> None:
    """Raise ConfigError(key, message, fix) unless `ok`; the default fix points at --help."""
    if not ok:
        raise ConfigError(key, message, f"set --{key} within that range (`launcher train --help` explains it)" if fix is None else fix)


def default_mode(metric: str) -> str:
    """min for losses, perplexity and errors; max for every other metric."""
    lowered = metric.lower()
    return "min" if any(w in lowered for w in ("loss", "perplexity", "error", "mse", "mae")) else "max"


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

    def check(self) -> None:
        require(bool(self.name_or_path), "model.name_or_path", "is required",
                "set it to a model folder, e.g. --model.name_or_path path/to/model")


@dataclass
class DataConfig:
    train_file: Optional[str] = None
    """Training data: .csv, .tsv, .json, .jsonl, .parquet, .txt, a CoNLL file, or a `save_to_disk` folder; when streaming also a folder, a glob or an s3:// / gs:// URI of such files."""
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
    streaming: Union[Literal["auto"], bool] = "auto"
    """Stream the training data through Ray Data (read and tokenised on the cluster's CPUs, never held by the driver): true, false, or auto (streams when data.train_file is a remote URI, a folder, a glob, or larger than data.streaming_min_mb, and data.validation_file is given)."""
    streaming_min_mb: float = 1024
    """data.streaming auto: stream a training file (or files) larger than this many MiB."""
    streaming_cpus: Optional[float] = None
    """Streaming: CPUs kept free of Train workers for Ray Data's reading and tokenising (default: 1); ray.cpus_per_worker auto leaves them out, a number that does not is refused."""
    on_bad_rows: Literal["error", "skip"] = "error"
    """Streaming: a row with an empty/missing text or label column stops the run naming file and row (error), or is dropped and counted in results.json (skip)."""


    def check(self) -> None:
        if self.train_file is None:
            raise ConfigError("data.train_file", "is required", "set it to a .csv/.json/.jsonl/.parquet/.txt file or a save_to_disk folder")
        require(self.max_length >= 8, "data.max_length", f"must be >= 8, got {self.max_length}")
        require(0 < self.validation_split < 1, "data.validation_split", f"must be in (0, 1), got {self.validation_split}")
        require(self.max_train_samples is None or self.max_train_samples >= 1, "data.max_train_samples", "must be >= 1")
        require(self.max_eval_samples is None or self.max_eval_samples >= 1, "data.max_eval_samples", "must be >= 1")
        require(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.streaming_min_mb >= 0, "data.streaming_min_mb", f"must be >= 0, got {self.streaming_min_mb}")
        require(self.streaming_cpus is None or self.streaming_cpus > 0, "data.streaming_cpus",
                f"must be > 0 (Ray Data needs a CPU to read and tokenise), got {self.streaming_cpus}",
                "set --data.streaming_cpus 1, or --data.streaming false to tokenise on the driver")


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

    def check(self) -> None:
        require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}", "typical fine-tuning values are 1e-5 to 1e-4")
        require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(0 <= self.adam_beta1 < 1, "optim.adam_beta1", f"must be in [0, 1), got {self.adam_beta1}")
        require(0 <= self.adam_beta2 < 1, "optim.adam_beta2", f"must be in [0, 1), got {self.adam_beta2}")
        require(self.adam_epsilon > 0, "optim.adam_epsilon", f"must be > 0, got {self.adam_epsilon}")


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

    def check(self, lr: float) -> None:
        require(self.warmup_steps >= 0, "scheduler.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        require(0 <= self.warmup_ratio < 1, "scheduler.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        require(self.num_cycles is None or self.num_cycles > 0, "scheduler.num_cycles", f"must be > 0, got {self.num_cycles}")
        require(self.power > 0, "scheduler.power", f"must be > 0, got {self.power}")
        require(self.lr_end >= 0 and (self.name != "polynomial" or self.lr_end < lr), "scheduler.lr_end",
                f"must be >= 0 and below optim.lr ({lr}), got {self.lr_end}")


PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


@dataclass
class TrainConfig:
    max_epochs: int = 3
    """Number of passes over the training data."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run `max_epochs`); a stop mid-epoch validates at that step (results.json: final_validation)."""
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

    def check(self) -> None:
        require(self.max_epochs >= 1 or self.max_steps > 0, "train.max_epochs", f"must be >= 1, got {self.max_epochs}")
        require(self.max_steps == -1 or self.max_steps > 0, "train.max_steps", f"must be -1 (off) or > 0, got {self.max_steps}")
        require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.eval_batch_size is None or self.eval_batch_size >= 1, "train.eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        require(self.accumulate_grad_batches >= 1, "train.accumulate_grad_batches", f"must be >= 1, got {self.accumulate_grad_batches}")
        require(self.precision in PRECISIONS, "train.precision", f"invalid value {self.precision!r}", "choose one of: " + ", ".join(PRECISIONS))
        require(self.gradient_clip_val is None or self.gradient_clip_val > 0, "train.gradient_clip_val",
                f"must be > 0 or null, got {self.gradient_clip_val}")
        require(self.val_check_interval > 0, "train.val_check_interval", f"must be > 0, got {self.val_check_interval}")
        require(self.log_every_n_steps >= 1, "train.log_every_n_steps", f"must be >= 1, got {self.log_every_n_steps}")

    def eval_batch_size_or_default(self) -> int:
        """Examples per validation/test batch per worker: `eval_batch_size`, else 2 x `batch_size`."""
        return self.eval_batch_size or self.batch_size * 2


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

    def check(self) -> None:
        require(self.num_to_keep >= 1, "checkpoint.num_to_keep", f"must be >= 1, got {self.num_to_keep}")
        require(self.every_n_steps is None or self.every_n_steps >= 1, "checkpoint.every_n_steps", f"must be >= 1, got {self.every_n_steps}")

    def mode_for(self, metric: str) -> str:
        """`mode`, else min for losses/perplexity and max for everything else."""
        return self.mode or default_mode(metric)


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
    cpus_per_worker: Union[float, Literal["auto"]] = "auto"
    """CPUs reserved per worker, also its torch threads: auto divides the CPUs among the workers (and, under launcher tune, the trials at once): a local Ray's CPUs, else the cluster nodes'; a number (fractions allowed) reserves exactly that."""
    gpus_per_worker: float = 1.0
    """GPUs per worker when use_gpu."""
    tpus_per_worker: int = 4
    """accelerator tpu: TPU chips each worker reserves, all chips of one TPU host (v4/v5p hosts: 4; 8-chip v5e/v6e hosts: 8)."""
    strategy: Literal["ddp", "fsdp", "deepspeed", "fsdp2"] = "ddp"
    """Data-parallel strategy: ddp everywhere; fsdp2 (torch fully_shard per layer, Lightning's ModelParallelStrategy) on CPUs and GPUs; fsdp and deepspeed on GPUs only."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How workers are placed on nodes."""
    storage_path: Optional[str] = None
    """Where Ray keeps checkpoints and run state: local path, NFS path, s3:// or gs:// URI (default: $LAUNCHER_STORAGE, else <output_dir>/ray)."""
    max_failures: int = 2
    """Restart the worker group from the latest checkpoint this many times after a worker dies."""
    num_cpus: Optional[int] = None
    """CPUs of a local Ray started by launcher (default: all cores)."""

    def check(self) -> None:
        require(self.num_workers >= 1, "ray.num_workers", f"must be >= 1, got {self.num_workers}")
        require(self.cpus_per_worker == "auto" or self.cpus_per_worker > 0, "ray.cpus_per_worker",
                f"must be > 0 (or auto), got {self.cpus_per_worker}")
        require(self.gpus_per_worker > 0, "ray.gpus_per_worker", f"must be > 0, got {self.gpus_per_worker}")
        require(self.max_failures >= -1, "ray.max_failures", f"must be >= -1 (-1: retry forever), got {self.max_failures}")
        require(self.tpus_per_worker >= 1, "ray.tpus_per_worker", f"must be >= 1, got {self.tpus_per_worker}")
        if self.strategy in ("fsdp", "deepspeed") and not (self.use_gpu or self.accelerator == "gpu"):
            raise ConfigError("ray.strategy", f"{self.strategy} needs GPUs",
                              "set --ray.use_gpu true on a GPU cluster, or use --ray.strategy ddp (or fsdp2, which shards on CPUs too) on CPU")
        if self.accelerator == "gpu" and not self.use_gpu:
            raise ConfigError("ray.accelerator", "gpu needs ray.use_gpu true", "add --ray.use_gpu true")
        if self.accelerator == "tpu" and (self.use_gpu or self.strategy != "ddp"):
            raise ConfigError("ray.accelerator", "tpu runs its own XLA data parallelism", "leave ray.use_gpu false and ray.strategy ddp")


PEFT_METHODS = ("none", "lora", "qlora")


@dataclass
class PeftConfig:
    method: Literal["none", "lora", "qlora"] = "none"
    """Parameter-efficient fine-tuning: none (train every weight), lora (low-rank adapters on a frozen base, peft library), qlora (lora on a 4-bit base: CUDA GPUs + bitsandbytes)."""
    r: int = 8
    """LoRA rank: size of each adapter's low-rank update."""
    alpha: float = 16
    """LoRA scaling: the update is multiplied by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapters' input, in [0, 1)."""
    target_modules: Optional[list[str]] = None
    """Module names that get adapters (e.g. [q_proj, v_proj]); null: peft's default for the architecture, else every attention/MLP linear; [all]: every linear except the task head and the output embeddings."""
    modules_to_save: Optional[list[str]] = None
    """Modules trained fully besides the adapters (dotted names); null: the task's new head (classifier, qa_outputs, score, ...)."""
    merge_on_export: bool = True
    """best/ holds the adapters merged into the base (a plain transformers folder); best/adapter/ holds the adapter alone either way."""

    def check(self) -> None:
        require(self.r >= 1, "peft.r", f"must be >= 1, got {self.r}", "typical ranks are 4 to 64")
        require(self.alpha > 0, "peft.alpha", f"must be > 0, got {self.alpha}", "typical values are r to 2 x r")
        require(0 <= self.dropout < 1, "peft.dropout", f"must be in [0, 1), got {self.dropout}")
        for key in ("target_modules", "modules_to_save"):
            names = getattr(self, key)
            ok = names is None or (isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names))
            require(ok, f"peft.{key}", f"must be null or a non-empty list of module names, got {names!r}",
                    f"e.g. --peft.{key} '[q_proj, v_proj]', or leave it null")

    @property
    def enabled(self) -> bool:
        """An adapter method is on (lora or qlora)."""
        return self.method != "none"


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

    def check(self) -> None:
        """Checked by `launcher tune` (and plan for a search); `launcher train` ignores this section."""
        require(self.num_samples >= 1, "tune.num_samples", f"must be >= 1, got {self.num_samples}", "")
        require(self.max_concurrent_trials is None or self.max_concurrent_trials >= 1, "tune.max_concurrent_trials",
                f"must be >= 1 or null, got {self.max_concurrent_trials}", "")
        require(self.time_budget_s is None or self.time_budget_s > 0, "tune.time_budget_s", f"must be > 0 or null, got {self.time_budget_s}", "")
        require(self.grace_period > 0, "tune.grace_period", f"must be > 0 epochs, got {self.grace_period}", "")
        require(self.reduction_factor > 1, "tune.reduction_factor", f"must be > 1, got {self.reduction_factor}", "")
        require(self.perturbation_interval > 0, "tune.perturbation_interval", f"must be > 0 epochs, got {self.perturbation_interval}", "")
        require(0 < self.quantile_fraction <= 0.5, "tune.quantile_fraction", f"must be in (0, 0.5], got {self.quantile_fraction}", "")
        if self.scheduler == "pbt":
            require(self.num_samples >= 2, "tune.num_samples", "pbt needs at least 2 trials to copy from", "set --tune.num_samples 4 or more")


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
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Parameter-efficient fine-tuning (LoRA adapters on a frozen base model)."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Hyperparameter search: used by `launcher tune` (ignored by `launcher train`)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Task-specific options (see README: each task lists its options)."""

    def storage_path(self) -> str:
        """Run storage: ray.storage_path, else $LAUNCHER_STORAGE (set on cluster heads), else <output_dir>/ray."""
        return self.ray.storage_path or os.environ.get("LAUNCHER_STORAGE") or self.default_storage_path()

    def default_storage_path(self) -> str:
        """<output_dir>/ray: where a run keeps its Ray state when nothing else is configured."""
        return os.path.join(os.path.abspath(self.output_dir), "ray")


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)}
