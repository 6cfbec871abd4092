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

.PHONY: install train test test-all test-slow lint format bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes first and alone: pinned by the constraints file, it resolves to the local CPU wheel
# instead of the newest CUDA build (+3 GB of nvidia-* wheels).
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(if $(and $(GPU),$(CONSTRAINTS)),grep -vE '^(torch|triton)==' $(CONSTRAINTS) > $(GPU_CONSTRAINTS))
	$(BIN)/python -m pip install -q $(PIP_C) torch
	$(BIN)/python -m pip install -q $(PIP_C) -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/python train.py $(ARGS)

test: install
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/train_throughput.py

clean-venv:
	rm -rf $(VENV)
