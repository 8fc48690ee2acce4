"""language-modeling: causal (next-token) or masked (BERT-style) language modeling on plain text.

Input is a .txt file (read line by line with its line breaks, so the concatenated lines are the file)
or a text column (one document per row). With `packing: true` (the default) all tokens of a split are
concatenated and cut into `data.block_size` blocks; causal documents from a column are separated by
the EOS token. With `packing: false` every document is one example, truncated to `block_size` and
padded per batch.

Metrics: `loss`, the token-weighted mean loss over every scored token of the split (gathered across
workers), and `perplexity = exp(loss)`. Masked validation masks each example with a generator seeded
by its index, so every validation (on any number of workers) scores the same positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F

from launcher.data import files as data_lib
from launcher.errors import ConfigError
from launcher.errors import first_line
from launcher.model_files import read_export_info
from launcher.tasks import _prompts as prompts
from launcher.tasks.core import Task, TaskModule, max_positions
from launcher.tasks.precheck import PromptColumns

OBJECTIVES = ("causal", "masked")
#: `launcher predict --option` keys passed to `generate` (causal) besides batch_size/device
GENERATE_OPTIONS = ("max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "num_beams", "repetition_penalty", "seed")


@dataclass
class Options(PromptColumns):
    # prompt_column, response_column: launcher.tasks.precheck
    objective: Optional[str] = None
    """causal (next-token) or masked; default: causal for decoder models, masked for encoders."""
    mlm_probability: float = 0.15
    """masked: fraction of tokens selected for prediction (80% [MASK], 10% random, 10% kept)."""
    packing: bool = True
    """Concatenate texts and cut them into data.block_size blocks; false: one padded example per document."""

    def __post_init__(self):
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be causal or masked, got {self.objective!r}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if (self.prompt_column is None) != (self.response_column is None):
            raise ValueError("prompt_column and response_column go together: set both, or neither")
        if self.prompt_column is not None and self.objective == "masked":
            raise ValueError("prompt_column/response_column train a causal model: leave objective causal")


# ---------------------------------------------------------------------- model choice


def default_objective(model_config) -> str:
    """causal for decoder models (GPT-2, Llama, ...), masked for encoders (BERT, RoBERTa, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    for arch in getattr(model_config, "architectures", None) or []:
        if arch.endswith(("CausalLM", "LMHeadModel")):
            return "causal"
        if arch.endswith(("MaskedLM", "ForPreTraining")):
            return "masked"
    if getattr(model_config, "is_decoder", False):
        return "causal"
    model_type = getattr(model_config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    return "causal"


def check_head(model_config, objective: str) -> None:
    """ConfigError unless transformers has a causal/masked LM head for this model type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = getattr(model_config, "model_type", "?")
    heads = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES if objective == "causal" else MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if model_type in heads:
        return
    if getattr(model_config, "is_encoder_decoder", False):
        raise ConfigError("model.name_or_path", f"{model_type} is an encoder-decoder model with no {objective} LM head",
                          "use --task summarization or --task translation for seq2seq models")
    other = "masked" if objective == "causal" else "causal"
    raise ConfigError("task_options.objective", f"{model_type} has no {objective} LM head in transformers",
                      f"use --task_options.objective {other} or another model")


def block_size_for(cfg, model_config) -> int:
    """data.block_size (checked against the model's positions), default min(max_length, positions)."""
    limit = max_positions(model_config)
    size = cfg.data.block_size
    if size is None:
        return min(cfg.data.max_length, limit) if limit else cfg.data.max_length
    if size < 2:
        raise ConfigError("data.block_size", f"must be >= 2, got {size}")
    if limit and size > limit:
        raise ConfigError("data.block_size", f"{size} is above the model's {limit} positions", f"use --data.block_size {limit} or less")
    return size


# ---------------------------------------------------------------------- data


def read_text(key: str, path: str, **text_options):
    """Like data.read_file; .txt files keep their line breaks so concatenated lines are the file."""
    return data_lib.read_file(key, path, **({"keep_linebreaks": True} | text_options))


def is_text_file(cfg, split: str) -> bool:
    return data_lib.builder_for(data_lib.file_of(cfg, split)) == "text"


def encode_lm(ds, tokenizer, column: str, objective: str, block_size: int, packing: bool, documents: bool,
              num_proc: Optional[int] = None, desc: str = "tokenizing"):
    """Texts → input_ids blocks (+ special_tokens_mask for masked).

    `documents`: rows are whole documents (a text column), so causal streams separate them with EOS;
    lines of a .txt file are joined as they are. Partial last blocks are kept (every token is scored)
    when they hold at least 2 tokens.
    """
    eos = tokenizer.eos_token_id if objective == "causal" and documents else None

    def tokenize(batch):
        texts = [t for t in batch[column] if t is not None and (packing or t.strip())]
        if objective == "causal":
            # Special tokens are placed per document by us: a tokenizer that adds BOS would add it to
            # every line of a text file.
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            ids = [x + [eos] if eos is not None else x for x in ids]
            rows = {"input_ids": ids}
        else:
            enc = tokenizer(texts, return_special_tokens_mask=True, truncation=not packing, max_length=block_size)
            rows = {"input_ids": enc["input_ids"], "special_tokens_mask": enc["special_tokens_mask"]}
        if not packing:
            rows = {k: [x[:block_size] for x, ids in zip(v, rows["input_ids"]) if ids] for k, v in rows.items()}
            return rows
        return pack(rows, block_size)

    return ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc, desc=desc)


def pack(rows: dict, block_size: int) -> dict:
    """Concatenate each column's lists and cut them into blocks (a last block of >= 2 tokens is kept)."""
    joined = {k: [t for x in v for t in x] for k, v in rows.items()}
    total = len(joined["input_ids"])
    starts = [s for s in range(0, total, block_size) if total - s >= 2]
    return {k: [v[s : s + block_size] for s in starts] for k, v in joined.items()}


# ---------------------------------------------------------------------- collation


class LMCollator:
    """Pads blocks and makes labels: causal labels are the inputs; masked labels come from BERT masking.

    Masking uses transformers' DataCollatorForLanguageModeling. Training rows draw from the global
    RNG (seeded per run); evaluation rows (they carry `_index`) use a generator seeded by the row's
    index, so the masked positions of an example never change between epochs or world sizes.
    """

    def __init__(self, tokenizer, objective: str, mlm_probability: float = 0.15, seed: int = 0):
        self.objective = objective
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.seed = seed
        self.masker = None
        if objective == "masked":
            from transformers import DataCollatorForLanguageModeling

            self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)

    def __call__(self, rows: list[dict]) -> dict:
        side = {k: torch.tensor([r.pop(k) for r in rows]) for k in ("_pad", "_index") if k in rows[0]}
        for i, r in enumerate(rows):
            ids = torch.tensor(r["input_ids"], dtype=torch.long)
            special = r.pop("special_tokens_mask", None)
            if self.masker is None:
                r.setdefault("labels", ids.tolist())  # prompt → response rows bring their own (-100 on the prompt)
                continue
            index = int(side["_index"][i]) if "_index" in side else None
            self.masker.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index) if index is not None else None
            special = torch.tensor(special, dtype=torch.bool)[None] if special is not None else None
            masked, labels = self.masker.torch_mask_tokens(ids[None].clone(), special_tokens_mask=special)
            r["input_ids"], r["labels"] = masked[0].tolist(), labels[0].tolist()
        batch = pad_rows(rows, {"input_ids": self.pad_id, "labels": -100, "token_type_ids": 0})
        batch.update(side)
        return batch


def pad_rows(rows: list[dict], pad_values: dict) -> dict:
    """Right-pads list-valued keys (with `pad_values[key]`, default 0) and adds attention_mask; scalars become a tensor."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], (list, tuple)):
            pad = pad_values.get(key, 0)
            out[key] = torch.tensor([list(v) + [pad] * (width - len(v)) for v in values], dtype=torch.long)
        else:
            out[key] = torch.tensor(values)
    out["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long)
    return out


def token_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, shift: bool) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies, number of scored tokens) over the kept rows; -100 labels are not scored."""
    labels = labels.masked_fill(~keep.to(labels.device)[:, None], -100)
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum")
    return total, int((labels != -100).sum())


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


# ---------------------------------------------------------------------- Lightning


class LanguageModelingModule(TaskModule):
    side_keys = ("_pad", "_index", *prompts.PROMPT_KEYS)

    def eval_forward(self, batch, stage):
        inputs = self.model_inputs(batch)
        labels = inputs.pop("labels")
        keep = batch["_pad"] == 0 if "_pad" in batch else torch.ones(labels.shape[0], dtype=torch.bool)
        logits = self.model(**inputs).logits
        total, tokens = token_loss(logits, labels, keep, shift=self.meta["objective"] == "causal")
        return SimpleNamespace(loss=total / tokens if tokens else None, tokens=tokens)

    def eval_loss_weight(self, batch, outputs, keep) -> int:
        return outputs.tokens

    def compute_metrics(self, metrics, loss):
        return {"perplexity": perplexity(loss)}


class LanguageModeling(Task):
    name = "language-modeling"
    default_monitor = "val_loss"
    Options = Options
    Module = LanguageModelingModule
    auto_model = "AutoModelForCausalLM"
    pipeline_task = "text-generation"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.objective: Optional[str] = self.options.objective
        self.block_size: Optional[int] = None

    # ---------------------------------------------------------------- driver checks
    def check_model(self, model_config, tokenizer) -> None:
        """Objective, LM head, mask token and block size, before any data is read."""
        self.objective = self.options.objective or default_objective(model_config)
        check_head(model_config, self.objective)
        if self.objective == "masked" and tokenizer.mask_token is None:
            raise ConfigError("task_options.objective", "masked language modeling needs a mask token; the tokenizer has none",
                              "use --task_options.objective causal or a tokenizer with a mask token")
        self.block_size = block_size_for(self.cfg, model_config)
        if self.objective == "causal" and tokenizer.pad_token is None and tokenizer.eos_token is not None:
            # Batched generation and padding need a pad token; EOS is the usual stand-in for GPT-style models.
            tokenizer.pad_token = tokenizer.eos_token

    def read(self, key, path):
        return read_text(key, path)

    # ---------------------------------------------------------------- data
    def prepare(self, splits, tokenizer, meta=None):
        if meta is not None:  # evaluate: the exported model's settings
            self.objective, self.block_size = meta["objective"], meta["block_size"]
        elif self.objective is None or self.block_size is None:
            self.check_model(self.model_config(), tokenizer)
        d, o = self.cfg.data, self.options
        if o.prompt_column:  # prompt → response: one example per row, loss on the response
            fmt = meta["prompt_format"] if meta and "prompt_format" in meta else prompts.prompt_format(tokenizer)
            prompts.check_tokenizer(tokenizer, fmt)
            budget = max(self.block_size - 1, 1)
            out = {split: prompts.encode_rows(ds, tokenizer, lambda b: b[o.prompt_column], lambda b: b.get(o.response_column), fmt,
                                              min(d.max_length, budget), budget, keep_target=False,
                                              num_proc=d.preprocessing_num_workers, desc=f"tokenizing {split}")
                   for split, ds in splits.items()}
            out = {k: v.map(lambda r: {k2: v2[: self.block_size] for k2, v2 in r.items() if k2 in ("input_ids", "labels")},
                            desc="cutting to block_size") for k, v in out.items()}
            return out, {"objective": "causal", "block_size": self.block_size, "prompt_format": fmt, "max_length": min(d.max_length, budget)}
        out = {}
        for split, ds in splits.items():
            out[split] = encode_lm(ds, tokenizer, d.text_column, self.objective, self.block_size, self.options.packing,
                                   documents=not is_text_file(self.cfg, split), num_proc=d.preprocessing_num_workers,
                                   desc=f"tokenizing {split}")
        return out, {"objective": self.objective, "block_size": self.block_size}

    def collator(self, tokenizer):
        if self.options.prompt_column:
            return prompts.PromptCollator(tokenizer)
        return LMCollator(tokenizer, self.objective_of(), self.options.mlm_probability, self.cfg.train.seed)

    def objective_of(self, meta: Optional[dict] = None) -> str:
        """The objective: from meta (workers, export), else as resolved by check_model, else from the config."""
        if meta is not None:
            self.objective = meta["objective"]
        if self.objective is None:
            self.objective = default_objective(self.model_config())
        return self.objective

    def build_model(self, meta, pretrained=True):
        import transformers

        from launcher.tasks.core import load_model

        auto = transformers.AutoModelForCausalLM if self.objective_of(meta) == "causal" else transformers.AutoModelForMaskedLM
        return load_model(auto, self.cfg, self.model_kwargs(meta), pretrained=pretrained)

    def export_extras(self, meta):
        return {"pipeline": "text-generation" if meta["objective"] == "causal" else "fill-mask"}

    # ---------------------------------------------------------------- predict
    def predict(self, model_dir, ds, options):
        info, _ = read_export_info(model_dir)
        meta = info["meta"]
        if meta.get("prompt_format"):  # prompt → response: the continuation of each prompt, as trained
            texts = list(ds[self.options.prompt_column])
            defaults = {"max_new_tokens": 50}
            outs = prompts.predict_texts(model_dir, texts, meta["prompt_format"], meta["max_length"], options, defaults)
            return [{"prompt": p, "generated_text": g} for p, g in zip(texts, outs)]
        # Lines of a .txt input keep their line break (see read_text); a prompt should not end with one.
        texts = [t.rstrip("\r\n") if isinstance(t, str) else t for t in ds[self.cfg.data.text_column]]
        if info["meta"]["objective"] == "causal":
            return generate_texts(model_dir, texts, options)
        return fill_mask(model_dir, texts, options)


def generate_texts(model_dir: str, prompts: list[str], options: dict) -> list[dict]:
    """Continuations of each prompt (text-generation pipeline; greedy unless sampling options are given)."""
    from transformers import AutoTokenizer, pipeline, set_seed

    unknown = sorted(set(options) - set(GENERATE_OPTIONS) - {"batch_size", "device"})
    if unknown:
        raise ConfigError("--option", f"unknown option {unknown[0]!r} for causal generation", "valid: " + ", ".join(GENERATE_OPTIONS))
    kwargs = {k: options[k] for k in GENERATE_OPTIONS if k in options and k != "seed"}
    kwargs.setdefault("max_new_tokens", 50)
    if "do_sample" not in kwargs and any(k in kwargs for k in ("temperature", "top_p", "top_k")):
        kwargs["do_sample"] = True
    if "seed" in options:
        set_seed(int(options["seed"]))
    # Decoder-only models continue the last token: batched prompts must be padded on the left.
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = pipeline("text-generation", model=model_dir, tokenizer=tokenizer, device=options.get("device", -1))
    outputs = gen(list(prompts), batch_size=options.get("batch_size", 8), return_full_text=False, **kwargs)
    return [{"text": p, "generated_text": o[0]["generated_text"]} for p, o in zip(prompts, outputs)]


def fill_mask(model_dir: str, texts: list[str], options: dict) -> list[dict]:
    """Top-k tokens for every mask token in each text: {"text", "predictions": [[{token, score, sequence}] per mask]}."""
    from transformers import pipeline

    unknown = sorted(set(options) - {"top_k", "batch_size", "device"})
    if unknown:
        raise ConfigError("--option", f"unknown option {unknown[0]!r} for fill-mask", "valid: top_k")
    fill = pipeline("fill-mask", model=model_dir, device=options.get("device", -1))
    mask = fill.tokenizer.mask_token
    for i, t in enumerate(texts):
        if mask not in (t or ""):
            raise ConfigError("--input", f"row {i + 1} has no {mask} token to fill", f"write {mask} where a word should be predicted")
    try:
        outputs = fill(list(texts), top_k=int(options.get("top_k", 5)), batch_size=options.get("batch_size", 8))
    except Exception as e:  # a pipeline error on user input: one line
        raise ConfigError("--input", f"fill-mask failed: {first_line(e)}") from e
    if len(texts) == 1:
        outputs = [outputs]
    rows = []
    for t, out in zip(texts, outputs):
        per_mask = out if out and isinstance(out[0], list) else [out]
        rows.append({"text": t, "predictions": [[{"token": p["token_str"], "score": float(p["score"]), "sequence": p["sequence"]}
                                                 for p in preds] for preds in per_mask]})
    return rows
