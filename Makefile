# The README's two commands: `make train` and `make test`. Both set up .venv first; set-up is
# idempotent and takes ~1 s when nothing changed (a stamp file tracks pyproject + constraints).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
EXTRAS ?= dev,hf,deepspeed,kernels
STAMP := $(VENV)/.tokensmith-installed
# GPU=1: every pin but torch/triton (your CUDA torch, installed first, or PyPI's default CUDA build, stays).
# Set automatically when .venv already holds a CUDA torch, so a later `make test` never swaps it for the CPU wheel.
GPU ?= $(shell [ -x $(BIN)/python ] && $(BIN)/python -c "import torch; print(1 if torch.version.cuda else '')" 2>/dev/null)
GPU_CONSTRAINTS := $(VENV)/constraints-gpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(if $(GPU),$(GPU_CONSTRAINTS),$(CONSTRAINTS)),)
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install train test test-all test-slow test-heavy lint format bench mutate clean-venv

# scripts/install.sh: venv, then torch alone (pinned by the constraints file, it resolves to the local CPU wheel
# instead of the newest CUDA build, +3 GB of nvidia-* wheels), then the project. pip's output goes to
# .venv/install.log; a failing step prints one line naming it (and an unreachable package index) and stops.
# The settings this venv was set up with: a change of EXTRAS, GPU or CONSTRAINTS re-runs set-up (the file is
# rewritten only when they differ, so an unchanged call stays a no-op).
SETTINGS := $(VENV)/.tokensmith-settings
SETTINGS_NOW := extras=$(EXTRAS) gpu=$(GPU) constraints=$(CONSTRAINTS)
$(shell mkdir -p $(VENV) && [ "$$(cat $(SETTINGS) 2>/dev/null)" = "$(SETTINGS_NOW)" ] || echo "$(SETTINGS_NOW)" > $(SETTINGS))

$(STAMP): pyproject.toml $(CONSTRAINTS) $(SETTINGS)
	$(if $(and $(GPU),$(CONSTRAINTS)),grep -vE '^(torch|triton)==' $(CONSTRAINTS) > $(GPU_CONSTRAINTS))
	@PYTHON=$(PYTHON) scripts/install.sh $(VENV) $(EXTRAS) $(PIP_C)
	@touch $(STAMP)

install: $(STAMP)

# Each prints how long it took (set-up excluded; set-up prints its own time when it runs).
train: install
	@start=$$(date +%s); $(BIN)/python train.py $(ARGS); status=$$?; \
	echo "make train: $$(( $$(date +%s) - start )) s"; exit $$status

test: install
	@start=$$(date +%s); $(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS); status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s"; exit $$status

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# The multi-process checks kept out of `make test` (marker `heavy`, ~5 min on 2 cores); CI runs them.
test-heavy: install
	$(BIN)/python -m pytest -n 2 -q -m heavy $(PYTEST_ARGS)

# Everything that runs without a GPU or a SLURM cluster.
test-all: install
	$(BIN)/python -m pytest -n 2 -q -m "not gpu and not slurm" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/train_throughput.py

# Mutation testing of the result-critical modules (scripts/mutation_score.py; hours on 2 cores, resumable):
# `make mutate ARGS="src/losses/rloo.py"` for one module, `make mutate ARGS=--report` for the table so far.
mutate: install
	@$(BIN)/python -c "import cosmic_ray" 2>/dev/null || $(BIN)/pip install -q $(PIP_C) "cosmic-ray>=8.7"
	$(BIN)/python scripts/mutation_score.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
