"""What summarization and translation share: seq2seq tokenisation, generation during evaluation, and
gathering generated texts across Ray workers. Not a task itself (not in the registry).

Generation is the expensive part of evaluating a seq2seq model, so the loss is computed at every
validation while texts are generated only every `generate_every_n_epochs` epochs, at the last epoch,
and always for the test split. On the epochs without generation the text metrics are logged as NaN,
which never counts as a best epoch.

Distributed evaluation: every worker generates for its EvalShard, including the `_pad` rows that
keep batch counts equal; those rows are never recorded. At the end of the evaluation the
(index, prediction, reference) rows of all workers are gathered (`gather_generations`, which checks
that every example was generated exactly once) and the text metrics are computed from that one list
on every rank. torchmetrics' own cross-rank sync is not used for them: ROUGEScore keeps one tensor
per sentence with no reduction, which syncs with one all_gather per sentence and so deadlocks when
ranks hold different numbers of examples (21 examples on 2 workers: 11 and 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Optional

import torch
from torch import nn

from launcher.console import say
from launcher.errors import ConfigError
from launcher.model_files import read_export_info
from launcher.tasks import _prompts as prompts
from launcher.tasks.core import Task, TaskModule, max_positions

#: `launcher predict --option` keys for seq2seq generation, besides batch_size/device
GENERATE_OPTIONS = ("num_beams", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "length_penalty",
                    "no_repeat_ngram_size", "seed")


@dataclass
class GenerationOptions:
    num_beams: int = 1
    """Beams for generation during validation/test and in the exported generation config (1: greedy)."""
    max_target_length: int = 128
    """Maximum target tokens: targets are truncated to it, and generation stops after it."""
    generate_every_n_epochs: int = 1
    """Generate (and compute text metrics) every N epochs and at the last; 0: only for the test split."""
    source_prefix: str = ""
    """Text put before every source (T5 style, e.g. 'summarize: ' or 'translate English to German: ')."""
    decoder_only: Optional[bool] = None
    """Train a decoder-only (causal LM) model: source then target in one sequence (the tokenizer's chat template when it has one), loss on the target only, generation from the source alone. Default: true for a model with a causal LM head (GPT-2, Llama, SmolLM2, ...), false for encoder-decoders (T5, BART)."""

    def __post_init__(self):
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.max_target_length < 1:
            raise ValueError(f"max_target_length must be >= 1, got {self.max_target_length}")
        if self.generate_every_n_epochs < 0:
            raise ValueError(f"generate_every_n_epochs must be >= 0, got {self.generate_every_n_epochs}")


# ---------------------------------------------------------------------- driver


def check_seq2seq_model(task, model_config, tokenizer) -> None:
    """ConfigError for decoder-only models, targets longer than the decoder, or no pad token."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(model_config, "model_type", "?")
    if task.options.decoder_only is None:
        task.use_decoder_only(is_decoder_only(model_config))
    if task.options.decoder_only:
        check_decoder_only_model(task, model_config, tokenizer)
        return
    if not getattr(model_config, "is_encoder_decoder", False) or model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError("model.name_or_path", f"{task.name} needs an encoder-decoder (seq2seq) model; {model_type} is decoder-only"
                          if not getattr(model_config, "is_encoder_decoder", False) else
                          f"{task.name} needs a seq2seq LM; transformers has none for {model_type}",
                          "use a T5/BART-style model, --task_options.decoder_only true to train a decoder-only model on "
                          "source → target, or --task language-modeling")
    decoder = getattr(model_config, "decoder", None) or model_config
    limit = max_positions(decoder)
    length = task.options.max_target_length
    if limit and length > limit:
        raise ConfigError("task_options.max_target_length", f"{length} is above the model's {limit} positions",
                          f"use --task_options.max_target_length {limit} or less")
    if tokenizer.pad_token is None:
        raise ConfigError("model.tokenizer", "the tokenizer has no pad token", "use a tokenizer with a pad token (seq2seq batches are padded)")


def is_decoder_only(model_config) -> bool:
    """A decoder-only model with a causal LM head (what prompt → target training needs)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return not getattr(model_config, "is_encoder_decoder", False) and getattr(model_config, "model_type", "") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def check_decoder_only_model(task, model_config, tokenizer) -> None:
    """task_options.decoder_only: a causal LM head, prompt + target within the model's positions, a pad token."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(model_config, "model_type", "?")
    if getattr(model_config, "is_encoder_decoder", False) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError("task_options.decoder_only", f"{model_type} is not a decoder-only model with a causal LM head",
                          "leave task_options.decoder_only false for encoder-decoder models (T5, BART)")
    limit = max_positions(model_config)
    total = task.cfg.data.max_length + task.options.max_target_length
    if limit and total > limit:
        raise ConfigError("task_options.max_target_length", f"data.max_length + max_target_length = {total} is above the "
                          f"model's {limit} positions (source and target share one sequence)", "lower either")
    prompts.check_tokenizer(tokenizer, prompts.prompt_format(tokenizer))


def encode_seq2seq(task, splits: dict, tokenizer, sources: Callable, targets: Callable) -> dict:
    """Tokenise sources (with the prefix) and targets (as labels, ending in EOS); eval splits keep the raw target text."""
    d, o = task.cfg.data, task.options
    eos = tokenizer.eos_token_id

    def encode(batch, split):
        src = [o.source_prefix + s for s in sources(batch)]
        out = tokenizer(src, truncation=True, max_length=d.max_length)
        tgt = targets(batch)
        if tgt is not None:
            labels = tokenizer(text_target=tgt, truncation=True, max_length=o.max_target_length)["input_ids"]
            if eos is not None:
                # Without a final EOS the model never learns to stop; tokenizers without a post-processor add none.
                labels = [x if x and x[-1] == eos else x[: o.max_target_length - 1] + [eos] for x in labels]
            out["labels"] = labels
            if split != "train":
                out["_target"] = list(tgt)
        return out

    out = {}
    for split, ds in splits.items():
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names, fn_kwargs={"split": split},
                            num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
    return out


def seq2seq_collator(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    from launcher.tasks.core import PadCollator

    return PadCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), keep_columns=("_target",))


def seq2seq_meta(model_config, tokenizer) -> dict:
    """Token ids the model config lacks (e.g. an encoder-decoder built from two BERTs) → model kwargs."""
    meta = {}
    if getattr(model_config, "decoder_start_token_id", None) is None:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        if start is not None:
            meta["decoder_start_token_id"] = start
    if getattr(model_config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        meta["pad_token_id"] = tokenizer.pad_token_id
    return meta


def build_seq2seq_model(task, meta: dict, pretrained: bool = True):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from launcher.tasks.core import load_model

    if meta.get("decoder_only"):
        model = load_model(AutoModelForCausalLM, task.cfg, {}, pretrained=pretrained)
        configure_generation(model, task.options)
        model.generation_config.pad_token_id = meta.get("pad_id")
        return model
    kwargs = {k: meta[k] for k in ("decoder_start_token_id", "pad_token_id") if k in meta}
    model = load_model(AutoModelForSeq2SeqLM, task.cfg, kwargs, pretrained=pretrained)
    configure_generation(model, task.options)
    return model


def configure_generation(model, options: GenerationOptions) -> None:
    """Beams and length into the model's generation config (saved with the exported model)."""
    gen = model.generation_config
    gen.num_beams = options.num_beams
    gen.max_new_tokens = options.max_target_length
    if gen.decoder_start_token_id is None and getattr(model.config, "decoder_start_token_id", None) is not None:
        gen.decoder_start_token_id = model.config.decoder_start_token_id


def generate_batches(model_dir: str, sources: list[str], options: dict, defaults: GenerationOptions) -> list[str]:
    """Generated texts for `sources` with an exported seq2seq model (what `launcher predict` runs)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, set_seed

    unknown = sorted(set(options) - set(GENERATE_OPTIONS) - {"batch_size", "device"})
    if unknown:
        raise ConfigError("--option", f"unknown option {unknown[0]!r}", "valid: " + ", ".join(GENERATE_OPTIONS))

    meta = read_export_info(model_dir)[0].get("meta") or {}
    if meta.get("decoder_only"):
        # Only the continuation comes back: the source is the prompt.
        return prompts.predict_texts(model_dir, [defaults.source_prefix + s for s in sources], meta["prompt_format"],
                                     meta.get("max_length", 10**6), options,
                                     {"num_beams": defaults.num_beams, "max_new_tokens": defaults.max_target_length})
    if "seed" in options:
        set_seed(int(options["seed"]))
    device = torch.device("cpu") if options.get("device", -1) < 0 else torch.device("cuda", options["device"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    kwargs = {k: options[k] for k in GENERATE_OPTIONS if k in options and k != "seed"}
    kwargs.setdefault("num_beams", defaults.num_beams)
    kwargs.setdefault("max_new_tokens", defaults.max_target_length)
    out = []
    bs = int(options.get("batch_size", 16))
    for i in range(0, len(sources), bs):
        enc = tokenizer([defaults.source_prefix + s for s in sources[i : i + bs]], truncation=True, padding=True,
                        return_tensors="pt").to(device)
        enc.pop("token_type_ids", None)
        with torch.no_grad():
            ids = model.generate(**enc, **kwargs)
        out.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


# ---------------------------------------------------------------------- gathering


def merge_generations(parts: list[list[tuple]], expected: Optional[int] = None) -> list[tuple]:
    """Per-rank `(index, ...)` rows → one row per example, in dataset order.

    Pad rows (index -1, from EvalShard) are dropped. An index seen twice, or a count different from
    `expected`, means the sharding lost or duplicated examples: that is a bug, so it raises.
    """
    seen: dict[int, tuple] = {}
    for part in parts:
        for row in part:
            index = int(row[0])
            if index < 0:
                continue
            if index in seen:
                raise RuntimeError(f"example {index} was generated twice across workers")
            seen[index] = row
    if expected is not None and len(seen) != expected:
        missing = sorted(set(range(expected)) - set(seen))[:5]
        raise RuntimeError(f"generated {len(seen)} outputs for {expected} examples (missing e.g. {missing})")
    return [seen[i] for i in sorted(seen)]


def gather_generations(local: list[tuple], expected: Optional[int] = None) -> list[tuple]:
    """All ranks' rows, merged (every rank gets the full list); a plain merge outside torch.distributed."""
    import torch.distributed as dist

    parts = [local]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
    return merge_generations(parts, expected)


# ---------------------------------------------------------------------- Lightning


class Seq2SeqModule(TaskModule):
    """Loss at every evaluation; generation + text metrics when `generate_now`. Metrics come from the task:
    `task.text_metrics()` (torchmetrics built with sync_on_compute=False), `task.update_text_metrics(metrics,
    predictions, references)` and `task.text_metric_values(metrics)` (name → value)."""

    side_keys = ("_pad", "_index", "_target", *prompts.PROMPT_KEYS)

    def __init__(self, task, meta, tokenizer=None, model=None):
        super().__init__(task, meta, tokenizer, model)
        #: this rank's (index, prediction, reference, generated length) rows of the running evaluation
        self.generations: dict[str, list] = {"val": [], "test": []}
        self.generated: dict[str, bool] = {"val": False, "test": False}
        #: the last evaluation's rows of all ranks, one per example, in dataset order
        self.last_generations: dict[str, list] = {}

    def build_metrics(self) -> nn.ModuleDict:
        return self.task.text_metrics()

    def generate_now(self, stage: str) -> bool:
        if stage == "test":
            return True
        every = self.task.options.generate_every_n_epochs
        trainer = self._trainer
        if trainer is None:
            return every > 0
        epoch = self.current_epoch + 1
        last = (trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch) or (0 < trainer.max_steps <= trainer.global_step)
        return last or (every > 0 and epoch % every == 0)

    def eval_forward(self, batch, stage):
        inputs = self.model_inputs(batch)
        keep = batch["_pad"] == 0 if "_pad" in batch else torch.ones(inputs["input_ids"].shape[0], dtype=torch.bool)
        # Pad rows are generated for (batch shapes stay equal) but add nothing to the loss.
        labels = inputs.pop("labels").masked_fill(~keep.to(inputs["input_ids"].device)[:, None], -100)
        tokens = int((labels != -100).sum())
        loss = self.model(**inputs, labels=labels).loss if tokens else None
        generated = None
        if self.generate_now(stage):
            self.generated[stage] = True
            o = self.task.options
            if self.meta.get("decoder_only"):  # from the prompt alone; the continuation only
                generated = prompts.generate_continuations(self.model, self.tokenizer, batch["_prompt_ids"], batch["_prompt_mask"],
                                                           num_beams=o.num_beams, max_new_tokens=o.max_target_length)
            else:
                generated = self.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                                num_beams=o.num_beams, max_new_tokens=o.max_target_length)
        return SimpleNamespace(loss=loss, tokens=tokens, generated=generated, stage=stage)

    def eval_loss_weight(self, batch, outputs, keep) -> int:
        return outputs.tokens

    def update_metrics(self, metrics, batch, outputs, keep) -> None:
        if outputs.generated is None:
            return
        ids = outputs.generated
        texts = [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        # Generated length without the decoder start token and padding (as HF's gen_len).
        lengths = ((ids if self.meta.get("decoder_only") else ids[:, 1:]) != self.tokenizer.pad_token_id).sum(-1).tolist()
        indices = batch["_index"].tolist() if "_index" in batch else list(range(len(texts)))
        rows = zip(indices, texts, batch["_target"], lengths, keep.tolist())
        self.generations[outputs.stage].extend((i, t, r, n) for i, t, r, n, k in rows if k)

    def compute_metrics(self, metrics, loss):
        stage = next(s for s, m in self.metrics.items() if m is metrics)
        if not self.generated[stage]:
            return {n: float("nan") for n in (*self.task.text_metric_names, "gen_len", "generated")}
        self.generated[stage] = False
        trainer = self._trainer
        loader = (trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders) if trainer is not None else None
        rows = gather_generations(self.generations[stage], expected=getattr(getattr(loader, "dataset", None), "n", None))
        self.generations[stage] = []
        self.last_generations[stage] = rows
        values = score_rows(self.task, metrics, rows)
        if stage == "val" and self.global_rank == 0:
            for i, pred, ref, _ in rows[:2]:
                say(f"[launcher] val example {i}: {pred[:120]!r} (reference {ref[:120]!r})")
        return values


def score_rows(task, metrics, rows: list[tuple]) -> dict[str, float]:
    """Text metrics, mean generated length and count of gathered (index, prediction, reference, length) rows."""
    if not rows:
        return {n: float("nan") for n in task.text_metric_names} | {"gen_len": float("nan"), "generated": 0.0}
    task.update_text_metrics(metrics, [r[1] for r in rows], [r[2] for r in rows])
    values = task.text_metric_values(metrics)
    values["gen_len"] = sum(r[3] for r in rows) / len(rows)
    values["generated"] = float(len(rows))
    return values


class Seq2SeqTask(Task):
    """What summarization and translation share: a source → target pair per row, an encoder-decoder
    model, generation at validation. A subclass says where the texts are (`sources`, `targets`) and
    which text metrics it computes."""

    Module = Seq2SeqModule
    auto_model = "AutoModelForSeq2SeqLM"

    def sources(self, batch) -> list[str]:
        raise NotImplementedError

    def targets(self, batch) -> Optional[list[str]]:
        raise NotImplementedError

    def check_model(self, model_config, tokenizer) -> None:
        check_seq2seq_model(self, model_config, tokenizer)

    def use_decoder_only(self, value: bool) -> None:
        """Decide decoder-only training for this run; kept in the config's task_options, so the workers,
        the export and `launcher evaluate`/`predict` of the exported folder make the same choice."""
        self.options.decoder_only = bool(value)
        self.cfg.task_options = {**(self.cfg.task_options or {}), "decoder_only": bool(value)}

    def prepare(self, splits, tokenizer, meta=None):
        if meta is not None and self.options.decoder_only is None:
            self.use_decoder_only(bool(meta.get("decoder_only")))  # an exported model's choice (launcher evaluate)
        if self.options.decoder_only:
            return self.prepare_decoder_only(splits, tokenizer, meta)
        out = encode_seq2seq(self, splits, tokenizer, self.sources, self.targets)
        return out, meta if meta is not None else seq2seq_meta(self.model_config(), tokenizer)

    def prepare_decoder_only(self, splits, tokenizer, meta=None):
        d, o = self.cfg.data, self.options
        fmt = meta["prompt_format"] if meta else prompts.prompt_format(tokenizer)
        prompts.check_tokenizer(tokenizer, fmt)
        out = {split: prompts.encode_rows(ds, tokenizer, lambda b: [o.source_prefix + s for s in self.sources(b)], self.targets, fmt,
                                          d.max_length, o.max_target_length, keep_target=split != "train",
                                          num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
               for split, ds in splits.items()}
        # "pad_id", not "pad_token_id": launcher.json redacts keys that look like credentials ("token").
        return out, {"decoder_only": True, "prompt_format": fmt, "pad_id": tokenizer.pad_token_id, "max_length": d.max_length}

    def collator(self, tokenizer):
        return prompts.PromptCollator(tokenizer) if self.options.decoder_only else seq2seq_collator(tokenizer)

    def build_model(self, meta, pretrained=True):
        return build_seq2seq_model(self, meta, pretrained)
