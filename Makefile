# OCTSeg: `make train` and `make test` set everything up on a fresh machine (venv + pinned deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.octseg-installed
DEV_STAMP := $(VENV)/.octseg-dev-installed
ARGS ?=
# A PyTorch wheel index (e.g. the CPU-only one) to take torch/torchvision from; empty = PyPI.
TORCH_INDEX ?=
TORCH_PINS := $(shell grep -E '^(torch|torchvision)==' requirements.txt)
LINT_PATHS := src tests scripts train.py eval.py predict.py

.DEFAULT_GOAL := help
.PHONY: help venv dev train test test-all test-slow eval predict sweep multirun benchmark format lint clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(strip $(TORCH_INDEX)),)
	$(PY) -m pip install -q --index-url $(TORCH_INDEX) $(TORCH_PINS)
endif
	$(PY) -m pip install -q -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt requirements-export.txt requirements-cluster.txt
	$(PY) -m pip install -q -r requirements-dev.txt -r requirements-export.txt \
		-r requirements-cluster.txt -c requirements-lock.txt
	@touch $(DEV_STAMP)

venv: $(STAMP) ## Create .venv with the pinned requirements and the package (TORCH_INDEX=<url>)

dev: $(DEV_STAMP) ## venv + the test and lint tools (requirements-dev.txt)

train: venv ## Train the default (U-Net on synthetic B-scans, CPU); extra overrides via ARGS="..."
	$(PY) train.py $(ARGS)

test: dev ## Run the test suite (without slow and GPU tests)
	$(PY) -m pytest -m "not slow and not gpu" $(ARGS)

test-slow: dev ## Run only the slow tests
	$(PY) -m pytest -m "slow and not gpu" $(ARGS)

test-all: dev ## Run every test that this machine can run
	$(PY) -m pytest $(ARGS)

eval: venv ## Evaluate a checkpoint: make eval CKPT=logs/train/runs/.../checkpoints/best.ckpt
	$(PY) eval.py ckpt_path=$(CKPT) $(ARGS)

predict: venv ## Segment new scans: make predict CKPT=.../best.ckpt INPUT=<file or folder>
	$(PY) predict.py ckpt_path=$(CKPT) input=$(INPUT) $(ARGS)

sweep: venv ## Small Optuna sweep on synthetic data
	$(PY) train.py hparams_search=unet_optuna $(ARGS)

multirun: venv ## Compare the first-wave models for one epoch on synthetic data
	$(PY) train.py -m model=unet,relaynet,ynet dataset=synthetic trainer.max_epochs=1 $(ARGS)

benchmark: venv ## Print the speed figures (see docs/benchmarks.md)
	$(PY) scripts/benchmark.py $(ARGS)

format: dev ## Format and fix the code with ruff
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

lint: dev ## Lint without changing files (rules in pyproject.toml; run by CI before the tests)
	$(PY) -m ruff check $(LINT_PATHS)

clean: ## Remove run outputs and caches (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
