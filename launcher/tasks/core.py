"""What every task shares: the Task (driver-side data and model plumbing) and TaskModule (Lightning).

A task file subclasses both once (inheritance at most one level deep) and fills in: how to read and
check its data, how to tokenise it, which AutoModel class to build, how to collate, which metrics to
compute, and how to predict with an exported model.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Optional

import lightning.pytorch as pl
import torch
from torch import nn

from launcher import optim as optim_lib
from launcher.config.schema import Config
from launcher.console import say
from launcher.data import files as data_lib
from launcher.errors import ConfigError, first_line
from launcher.model_files import check_model_path, check_tokenizer_folder, tokenizer_source
from launcher.tasks import _peft, precheck


@dataclasses.dataclass
class NoOptions:
    pass


def parse_options(cls, given: dict, task: str):
    """task_options dict → the task's Options dataclass, naming unknown keys and the closest valid one."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean task_options.{close[0]}?" if close else (
                f"valid options for {task}: " + (", ".join(names) or "none"))
            raise ConfigError(f"task_options.{key}", f"unknown option for task {task}", hint)
    try:
        return cls(**given)
    except (TypeError, ValueError) as e:
        raise ConfigError("task_options", str(e)) from None


class Task:
    """Driver-side half of a task. Subclasses set the class attributes and override the hooks."""

    name: str = ""
    default_monitor: str = "val_loss"
    Options: type = NoOptions
    auto_model: str = "AutoModel"  # transformers class name used to build the model
    pipeline_task: Optional[str] = None  # transformers pipeline name for the exported folder

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.options = parse_options(self.Options, cfg.task_options or {}, self.name or cfg.task)

    # ------------------------------------------------------------------ model and tokenizer
    @property
    def monitor(self) -> str:
        return self.cfg.checkpoint.monitor or self.default_monitor

    def model_config(self):
        from transformers import AutoConfig

        m = self.cfg.model
        adapter = _peft.adapter_folder(m.name_or_path)
        if adapter:  # an exported adapter: the architecture is its base model's
            m = _peft.base_config(self.cfg, adapter).model
        check_model_path(m.name_or_path)
        try:
            kwargs = {"gguf_file": m.gguf_file} if m.gguf_file else {}
            return AutoConfig.from_pretrained(m.name_or_path, trust_remote_code=m.trust_remote_code, revision=m.revision, **kwargs)
        except (OSError, ValueError) as e:
            raise ConfigError("model.name_or_path", f"cannot load a model config from {m.name_or_path}: {first_line(e)}",
                              "point it at a folder made by save_pretrained (with config.json)") from None

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        m = self.cfg.model
        path, key, gguf = tokenizer_source(m)
        check_model_path(path, key)
        check_tokenizer_folder(path, key, gguf)
        try:
            kwargs = {"gguf_file": m.gguf_file} if gguf else {}
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=m.trust_remote_code, revision=m.revision, **kwargs)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(key, f"no usable tokenizer in {path}: {first_line(e)}",
                              "save the tokenizer into that folder or set model.tokenizer to a tokenizer folder") from None
        if isinstance(tok, bool) or not hasattr(tok, "__call__"):
            raise ConfigError(key, f"no tokenizer in {path}", "set model.tokenizer to a tokenizer folder")
        return tok

    def check_max_length(self, model_config, length: int, key: str = "data.max_length") -> None:
        limit = max_positions(model_config)
        if limit and length > limit:
            raise ConfigError(key, f"{length} is above the model's {limit} positions", f"use --{key} {limit} or less")

    def build_model(self, meta: dict, pretrained: bool = True) -> nn.Module:
        """The Hugging Face model; `pretrained=False` builds it from its config (export reloads weights)."""
        import transformers

        auto = getattr(transformers, self.auto_model)
        return load_model(auto, self.cfg, self.model_kwargs(meta), pretrained=pretrained)

    def model_kwargs(self, meta: dict) -> dict:
        return {}

    # ------------------------------------------------------------------ data (driver)
    def read(self, key: str, path: str):
        return data_lib.read_file(key, path)

    def load(self) -> dict:
        splits = data_lib.load_splits(self.cfg, self.read)
        for split, ds in splits.items():
            self.check_split(split, data_lib.file_of(self.cfg, split), ds)
        return splits

    def needs(self, split: str) -> list[data_lib.Need]:
        """The columns this task reads from a split's file: built-in tasks declare theirs in
        launcher.tasks.precheck (which also checks the files before anything loads)."""
        return precheck.needs(self.name, self.cfg, self.options, split)

    def check_split(self, split: str, path: str, ds) -> None:
        """Raise ConfigError for missing columns / empty cells (`needs`). Extend per task."""
        data_lib.check_dataset(path, ds, self.needs(split))

    def prepare(self, splits: dict, tokenizer, meta: Optional[dict] = None) -> tuple[dict, dict]:
        """Tokenise every split once. Returns (tokenised splits, meta shipped to the workers)."""
        raise NotImplementedError

    def lengths(self, ds) -> list[int]:
        return [len(x) for x in ds["input_ids"]]

    # ------------------------------------------------------------------ streaming (data.streaming)
    def stream_columns(self) -> dict[str, str]:
        """Config key → column every streamed training row must have, non-empty; the tokeniser reads these."""
        raise NotImplementedError

    def stream_meta(self, rows) -> Optional[dict]:
        """What `prepare` would learn from the training split (label sets, ...), from the raw Ray
        Data dataset `rows` (aggregations on the cluster, never the rows on the driver); handed to
        `prepare` and `encoder` as `meta`."""
        return None

    def encoder(self, tokenizer, meta: Optional[dict]):
        """The batch tokeniser `prepare` maps over a split (dict of column lists → dict of lists);
        streaming runs the same function in Ray Data's `map_batches`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ workers
    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return PadCollator(DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None))

    def module(self, meta: dict, tokenizer, model: Optional[nn.Module] = None) -> "TaskModule":
        return self.Module(self, meta, tokenizer, model)

    Module: type = None  # set by each task file to its TaskModule subclass

    # ------------------------------------------------------------------ export / predict
    def export_extras(self, meta: dict) -> dict:
        """Extra keys saved beside the exported model (launcher.json)."""
        return {}

    def predict(self, model_dir: str, ds, options: dict) -> list[dict]:
        raise NotImplementedError(f"launcher predict is not available for {self.name}")


class PadCollator:
    """Wraps a Hugging Face collator: keeps `_pad`/`_index` (eval bookkeeping) out of its way."""

    def __init__(self, inner, keep_columns: tuple[str, ...] = ()):
        self.inner = inner
        self.keep_columns = keep_columns

    def __call__(self, rows: list[dict]) -> dict:
        side = {k: [r.pop(k) for r in rows] for k in ("_pad", "_index", *self.keep_columns) if k in rows[0]}
        batch = dict(self.inner(rows))
        for k, v in side.items():
            batch[k] = torch.tensor(v) if k in ("_pad", "_index") else v
        return batch


class TaskModule(pl.LightningModule):
    """Lightning half of a task: loss and lr every step, metrics per validation/test epoch."""

    #: batch keys that are not model inputs
    side_keys: tuple[str, ...] = ("_pad", "_index")

    def __init__(self, task: Task, meta: dict, tokenizer=None, model: Optional[nn.Module] = None):
        super().__init__()
        self.task = task
        self.cfg = task.cfg
        self.meta = meta
        self.tokenizer = tokenizer
        self.model = model if model is not None else task.build_model(meta)
        # from_pretrained returns eval mode and Lightning 2.6 keeps submodule modes: train for real.
        self.model.train()
        #: LoRA: the base weights are frozen and rebuilt from the base model, so checkpoints hold only
        #: the trainable tensors (and the strategies' own loading must not insist on the rest).
        self.adapted = _peft.is_adapted(self.model)
        self.strict_loading = not self.adapted
        import torchmetrics

        self.metrics = nn.ModuleDict({stage: self.build_metrics() for stage in ("val", "test")})
        self.losses = nn.ModuleDict({stage: torchmetrics.MeanMetric() for stage in ("val", "test")})

    # ---------------------------------------------------------------- hooks for tasks
    def build_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict()

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict, outputs, keep: torch.Tensor) -> None:
        pass

    def compute_metrics(self, metrics: nn.ModuleDict, loss: float) -> dict[str, float]:
        return {name: m.compute() for name, m in metrics.items()}

    # ---------------------------------------------------------------- Lightning
    def model_inputs(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in self.side_keys}

    def forward(self, **inputs):
        return self.model(**inputs)

    def training_step(self, batch: dict, batch_idx: int):
        loss = self.model(**self.model_inputs(batch)).loss
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=False, batch_size=batch_size_of(batch))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        pass

    def on_before_optimizer_step(self, optimizer) -> None:
        # The lr the coming step uses; logged with the step, for every step.
        self.log("lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=1)

    def validation_step(self, batch: dict, batch_idx: int):
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int):
        self._eval_step(batch, "test")

    def _eval_step(self, batch: dict, stage: str) -> None:
        keep = batch["_pad"] == 0 if "_pad" in batch else torch.ones(batch_size_of(batch), dtype=torch.bool)
        outputs = self.eval_forward(batch, stage)
        n = self.eval_loss_weight(batch, outputs, keep)
        if n and getattr(outputs, "loss", None) is not None:
            self.losses[stage].update(outputs.loss.detach().float(), weight=n)
        self.update_metrics(self.metrics[stage], batch, outputs, keep)

    def eval_forward(self, batch: dict, stage: str):
        return self.model(**self.model_inputs(batch))

    def eval_loss_weight(self, batch: dict, outputs, keep: torch.Tensor) -> int:
        """Weight of this batch's mean loss in the epoch's mean: its scored rows (token-level losses: their tokens)."""
        return int(keep.sum())

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def _log_stage(self, stage: str) -> None:
        # torchmetrics gathers states across ranks in compute(): values are global, no sync_dist needed.
        loss = self.losses[stage].compute() if self.losses[stage].update_called else torch.tensor(float("nan"))
        values = {"loss": loss}
        values.update(self.compute_metrics(self.metrics[stage], float(loss)))
        self.log_dict({f"{stage}_{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()}, sync_dist=False)
        self.losses[stage].reset()
        for m in self.metrics[stage].values():
            m.reset()

    # ---------------------------------------------------------------- adapters, sharding, checkpoints
    def trainable_keys(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning calls this last in dump_checkpoint, after every strategy has gathered the state.
        if self.adapted:
            keep = self.trainable_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.adapted:
            self._check_trainable_present(checkpoint.get("state_dict", {}))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Adapted models: frozen base weights may be absent (they come from the base model); every
        # trainable tensor must be there. Covers Lightning's restore and the best-epoch reload alike.
        if self.adapted and strict:
            self._check_trainable_present(state_dict)
            strict = False
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _check_trainable_present(self, state_dict) -> None:
        missing = sorted(self.trainable_keys() - set(state_dict))
        if missing and state_dict:  # an empty dict: a sharded strategy's rank > 0, which loads from rank 0
            raise RuntimeError(f"the checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}: "
                               "was it written with other peft settings (r, target_modules, modules_to_save)?")

    def configure_model(self) -> None:
        # ray.strategy fsdp2: Lightning's ModelParallelStrategy wants the model sharded in this hook;
        # the strategy knows how (launcher.distributed.strategy). Other strategies have no `shard`.
        shard = getattr(self.trainer.strategy, "shard", None)
        if shard is not None:
            shard(self.model)

    def on_train_start(self) -> None:
        if self.global_rank == 0:
            say(f"[launcher] model: {_peft.describe(self.model)}")

    def configure_optimizers(self):
        device_type = self.device.type if isinstance(self.device, torch.device) else "cpu"
        optimizer = optim_lib.build_optimizer(self.model, self.cfg.optim, device_type)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = optim_lib.build_scheduler(optimizer, self.cfg.scheduler, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def update_all(metrics, preds: torch.Tensor, labels: torch.Tensor) -> None:
    """Update every metric with the scored rows (none: nothing to update)."""
    if len(labels):
        for m in metrics.values():
            m.update(preds, labels)


def batch_size_of(batch: dict) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.ndim >= 1:
            return int(v.shape[0])
    return 1


# ---------------------------------------------------------------------- helpers


def max_positions(model_config) -> Optional[int]:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(auto_cls, cfg: Config, kwargs: dict, pretrained: bool = True) -> nn.Module:
    """from_pretrained / from_config with the config's options (GGUF, trust_remote_code), with LoRA
    adapters when `peft.method` asks for them. An exported adapter folder as `model.name_or_path`
    loads its base model with that adapter (trainable when peft is on: training continues it)."""
    adapter = _peft.adapter_folder(cfg.model.name_or_path)
    if adapter:
        base = load_model(auto_cls, _peft.base_config(cfg, adapter), kwargs, pretrained)
        return _peft.load_adapter(base, adapter, trainable=cfg.peft.enabled, pretrained=pretrained)
    missing: list = []
    model = _load_weights(auto_cls, cfg, kwargs, pretrained, missing)
    if cfg.peft.enabled:
        model = _peft.wrap(model, cfg.peft, auto_cls.__name__, missing)
    return model


def _load_weights(auto_cls, cfg: Config, kwargs: dict, pretrained: bool, missing: list) -> nn.Module:
    """The transformers model; the checkpoint's missing keys (a new head) are appended to `missing`."""
    m = cfg.model
    common = {"trust_remote_code": m.trust_remote_code}
    if m.gguf_file:
        common["gguf_file"] = m.gguf_file
    if m.from_config or not pretrained:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, **common)
        for k, v in kwargs.items():
            setattr(config, k, v)
        config.__dict__.pop("quantization_config", None)
        return auto_cls.from_config(config, trust_remote_code=m.trust_remote_code)
    if cfg.peft.method == "qlora":
        common.update(_peft.quantization_kwargs(cfg))
    model, info = auto_cls.from_pretrained(m.name_or_path, revision=m.revision, output_loading_info=True, **common, **kwargs)
    missing.extend(info.get("missing_keys") or [])
    if m.gguf_file:
        # A GGUF-loaded model is de-quantized float32 but still carries its quantizer, which makes
        # save_pretrained refuse it; drop both so it saves as an ordinary safetensors folder.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.__dict__.pop("is_quantized", None)
    return model
