"""LoRA adapters on a task's model, built with the peft library (`peft.method: lora | qlora`).

What launcher decides and peft does not (peft 0.21.2, checked in /work/notes/peft.md):
- which modules are the task's new head, trained fully (`modules_to_save`): the weights the
  checkpoint lacked (from_pretrained's missing keys), never the output embeddings that are tied to
  the input ones, plus the usual head attributes. peft's own list per task type misses T5/BART's
  `classification_head` and catches DistilBERT's `pre_classifier` only by a suffix accident;
- which modules get adapters: peft's table per architecture, else every Linear/Conv1D except the
  head and the output embeddings, always passed as explicit names (peft's "all-linear" puts LoRA
  on token-classification and QA heads, and then fails to train them fully);
- checkpoints of the trainable tensors only (TaskModule filters them), and an export of both the
  merged model (`best/`, plain transformers) and the adapter (`best/adapter/`).

peft is imported only when an adapter is in play: `launcher --help` and full fine-tuning never pay for it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from typing import Optional

from launcher.errors import ConfigError

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
#: transformers Auto class → peft task type (picks the PeftModel subclass; None: plain PeftModel)
TASK_TYPES = {
    "AutoModelForSequenceClassification": "SEQ_CLS",
    "AutoModelForTokenClassification": "TOKEN_CLS",
    "AutoModelForQuestionAnswering": "QUESTION_ANS",
    "AutoModelForCausalLM": "CAUSAL_LM",
    "AutoModelForSeq2SeqLM": "SEQ_2_SEQ_LM",
    "AutoModel": "FEATURE_EXTRACTION",
}
#: attributes that hold a task head in transformers' task classes
HEAD_ATTRS = ("classifier", "pre_classifier", "score", "qa_outputs", "classification_head")


def import_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("peft.method", "the peft library is not installed", "pip install peft accelerate") from None
    return peft


def is_adapted(model) -> bool:
    """The model is, or holds, a PeftModel (without importing peft when nothing imported it)."""
    peft = sys.modules.get("peft")
    return peft is not None and any(isinstance(m, peft.PeftModel) for m in model.modules())


def parameter_counts(model) -> dict:
    """trainable_parameters and total_parameters (shared tensors once; sharded tensors at full size)."""
    params = list(model.parameters())
    return {"trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "total_parameters": sum(p.numel() for p in params)}


# ---------------------------------------------------------------------- which modules


def _output_embedding_params(model) -> set:
    get = getattr(model, "get_output_embeddings", None)
    out = get() if callable(get) else None
    return {id(p) for p in out.parameters()} if out is not None else set()


def new_head_modules(model, missing_keys=()) -> list[str]:
    """Dotted names of the task's freshly initialised head: modules whose weights the checkpoint
    lacked (output embeddings tied to the inputs excluded) and the usual head attributes."""
    tied = _output_embedding_params(model)
    modules = dict(model.named_modules())
    names = set()
    for key in missing_keys:
        path = key.rsplit(".", 1)[0]
        if path in modules and not any(id(p) in tied for p in modules[path].parameters(recurse=False)):
            names.add(path)
    for attr in HEAD_ATTRS:
        if attr in modules and any(True for _ in modules[attr].parameters()):
            names.add(attr)
    # Outermost only: a whole head module, not also its parts.
    return sorted(n for n in names if not any(n.startswith(o + ".") for o in names if o != n))


def all_linear(model, exclude) -> list[str]:
    """Every Linear / Conv1D (GPT-2) outside `exclude` and the output embeddings, by full name."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    tied = _output_embedding_params(model)
    return sorted(n for n, m in model.named_modules()
                  if isinstance(m, (nn.Linear, Conv1D)) and not any(id(p) in tied for p in m.parameters(recurse=False))
                  and not any(n == e or n.startswith(e + ".") for e in exclude))


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def resolve_modules(model, cfg, missing_keys=()) -> tuple[list[str], list[str]]:
    """(target_modules, modules_to_save) for `cfg` (a PeftConfig) on this model, checked by name."""
    names = [n for n, _ in model.named_modules() if n]
    if cfg.modules_to_save is not None:
        heads = list(cfg.modules_to_save)
        for h in heads:
            if not any(_matches(n, h) for n in names):
                raise ConfigError("peft.modules_to_save", f"no module named {h!r} in {type(model).__name__}",
                                  "name modules of the task model, e.g. " + ", ".join(new_head_modules(model) or names[-2:]))
    else:
        heads = new_head_modules(model, missing_keys)
    if cfg.target_modules is None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        targets = list(DEFAULTS.get(model_type) or all_linear(model, heads))
    elif list(cfg.target_modules) == ["all"]:
        targets = all_linear(model, heads)
    else:
        targets = list(cfg.target_modules)
        linear = sorted({n.rsplit(".", 1)[-1] for n in all_linear(model, heads)})
        for t in targets:
            if not any(_matches(n, t) for n in names):
                raise ConfigError("peft.target_modules", f"no module named {t!r} in {type(model).__name__}",
                                  "linear layers of this model: " + ", ".join(linear[:12]) + " (or [all])")
    if not targets:
        raise ConfigError("peft.target_modules", f"no linear layer of {type(model).__name__} is left for adapters",
                          "name the modules: --peft.target_modules '[q_proj, v_proj]'")
    return targets, heads


# ---------------------------------------------------------------------- building


def wrap(model, cfg, auto_name: str, missing_keys=()):
    """`model` with LoRA adapters (frozen base; adapters and the head train), as peft's PeftModel."""
    peft = import_peft()
    targets, heads = resolve_modules(model, cfg, missing_keys)
    lora = peft.LoraConfig(task_type=TASK_TYPES.get(auto_name), r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=targets, modules_to_save=heads or None)
    if cfg.method == "qlora":
        # Freezes the 4-bit base, upcasts norms to fp32, turns on gradient checkpointing.
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return peft.get_peft_model(model, lora)


def quantization_kwargs(cfg) -> dict:
    """from_pretrained arguments of a QLoRA base: 4-bit NF4 weights on this worker's GPU (unverified on a GPU here)."""
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("peft.method", "qlora needs the bitsandbytes library on every worker", "pip install bitsandbytes")
    if not torch.cuda.is_available():
        raise ConfigError("peft.method", "qlora needs a CUDA GPU on every worker", "use --peft.method lora")
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True, bnb_4bit_quant_storage=torch.bfloat16)
    return {"quantization_config": quant, "device_map": {"": torch.cuda.current_device()}, "dtype": torch.bfloat16}


def unquantized(cfg):
    """The config that rebuilds a QLoRA run's model in full precision (to merge into and export)."""
    if cfg.peft.method != "qlora":
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.peft.method = "lora"
    return cfg


# ---------------------------------------------------------------------- adapter folders


def adapter_folder(path: str) -> Optional[str]:
    """The adapter folder `path` points at: itself (adapter_config.json), or its adapter/ when `path`
    is an exported best/ without merged weights; else None."""
    if not path or not os.path.isdir(path):
        return None
    if os.path.exists(os.path.join(path, ADAPTER_CONFIG)):
        return path
    inner = os.path.join(path, ADAPTER_DIR)
    if not os.path.exists(os.path.join(path, "config.json")) and os.path.exists(os.path.join(inner, ADAPTER_CONFIG)):
        return inner
    return None


def base_model(adapter_dir: str) -> dict:
    """{name_or_path, gguf_file, revision, trust_remote_code} of the model an adapter folder was trained on."""
    info_path = os.path.join(adapter_dir, "launcher.json")
    base = None
    if os.path.exists(info_path):
        with open(info_path) as f:
            base = (json.load(f).get("peft") or {}).get("base_model")
    if base is None:
        with open(os.path.join(adapter_dir, ADAPTER_CONFIG)) as f:
            base = {"name_or_path": json.load(f).get("base_model_name_or_path")}
    path = base.get("name_or_path")
    if not path or (os.path.isabs(path) and not os.path.exists(path)):
        raise ConfigError("model.name_or_path", f"the base model of the adapter {adapter_dir} is not on this machine "
                          f"({base.get('name_or_path')})", "use the merged model (best/) or put the base model at that path")
    return base


def base_config(cfg, adapter_dir: str):
    """A copy of `cfg` whose model is the adapter's base model, with no adapters of its own."""
    base = base_model(adapter_dir)
    out = copy.deepcopy(cfg)
    out.model.name_or_path = base["name_or_path"]
    out.model.gguf_file = base.get("gguf_file")
    out.model.revision = base.get("revision")
    out.model.trust_remote_code = bool(base.get("trust_remote_code", cfg.model.trust_remote_code))
    out.model.from_config = False
    out.peft.method = "none"
    return out


def load_adapter(base, adapter_dir: str, trainable: bool, pretrained: bool = True):
    """`base` with the adapter of `adapter_dir` (its weights when `pretrained`, else only its shapes)."""
    peft = import_peft()
    if not pretrained:
        return peft.get_peft_model(base, peft.PeftConfig.from_pretrained(adapter_dir))
    return peft.PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)


def export_info(cfg) -> dict:
    """What launcher.json records of the adapters (and the base they need)."""
    p, m = cfg.peft, cfg.model
    return {"method": p.method, "r": p.r, "alpha": p.alpha, "dropout": p.dropout, "merged": p.merge_on_export,
            "adapter": ADAPTER_DIR,
            "base_model": {"name_or_path": m.name_or_path, "gguf_file": m.gguf_file, "revision": m.revision,
                           "trust_remote_code": m.trust_remote_code}}


def merged(model):
    """A copy of `model` with every PeftModel in it (the root, or the backbone of the base task)
    merged into its base: plain transformers modules (merge_and_unload works in place, hence the copy)."""
    peft = import_peft()
    model = copy.deepcopy(model)
    if isinstance(model, peft.PeftModel):
        return model.merge_and_unload()
    for name, child in list(model.named_children()):
        if isinstance(child, peft.PeftModel):
            setattr(model, name, child.merge_and_unload())
    return model


def describe(model) -> str:
    """One line for the progress header: parameters, trainable share, and the adapters when there are any."""
    counts = parameter_counts(model)
    total, trainable = counts["total_parameters"], counts["trainable_parameters"]
    text = f"{total:,} parameters, {trainable:,} trainable ({100 * trainable / max(total, 1):.2f}%)"
    peft = sys.modules.get("peft")
    if peft is not None:
        for m in model.modules():
            if isinstance(m, peft.PeftModel):
                c = m.peft_config["default"]
                targets = sorted({t.rsplit(".", 1)[-1] for t in c.target_modules or []})
                text += f"; LoRA r {c.r} alpha {c.lora_alpha:g} on {', '.join(targets)}"
                full = sorted(n.removeprefix("base_model.model.") for n, w in m.named_modules()
                              if isinstance(w, peft.utils.ModulesToSaveWrapper))
                if full:
                    text += f"; trained fully: {', '.join(full)}"
                break
    return text
