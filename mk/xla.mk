# The TPU path's test lane: torch-xla on CPU PJRT (no TPU needed). Included by the Makefile
# (`include mk/xla.mk`); uses its PYTHON and its `venv` target (the main venv loads the exported model).
#
# torch-xla 2.9 needs torch 2.9, the main venv has torch 2.13: a separate venv (about 8 GB: PyPI's
# torch 2.9 wheel is the CUDA build), created from scratch by `make test-xla` on a fresh machine.
XLA_VENV  ?= .venv-xla
XLA_BIN   := $(XLA_VENV)/bin
XLA_STAMP := $(XLA_VENV)/.installed
XLA_TORCH ?= torch==2.9.0 torch-xla==2.9.0
# Verified with torch 2.9.0 (the same versions as the main venv when this lane was written).
XLA_PINS  ?= lightning==2.6.6 transformers==5.24.0 datasets==5.2.0 "ray[default,train,tune]==2.60.0"

.PHONY: venv-xla test-xla

$(XLA_STAMP): pyproject.toml mk/xla.mk
	test -x $(XLA_BIN)/python || $(PYTHON) -m venv $(XLA_VENV)
	$(XLA_BIN)/python -m pip install -q --upgrade pip
	$(XLA_BIN)/python -m pip install -q $(XLA_TORCH)
	$(XLA_BIN)/python -m pip install -q -e ".[dev]" $(XLA_TORCH) $(XLA_PINS)
	$(XLA_BIN)/python -c "import torch, torch_xla; print('torch', torch.__version__, '/ torch_xla', torch_xla.__version__)"
	touch $(XLA_STAMP)

venv-xla: $(XLA_STAMP)

# PJRT_DEVICE=CPU: torch-xla's real compiler and runtime, on the CPU. About 25-40 minutes on 2 cores.
test-xla: venv venv-xla
	PJRT_DEVICE=CPU $(XLA_BIN)/python -m pytest -m xla -q tests/xla/test_xla.py
