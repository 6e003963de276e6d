# OCTSeg: `make train` and `make test` set everything up on a fresh machine (venv + pinned deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.octseg-installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv train test test-all test-slow eval sweep multirun benchmark format lint clean

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the pinned requirements and the package

train: venv ## Train the default (U-Net on synthetic B-scans, CPU); extra overrides via ARGS="..."
	$(PY) train.py $(ARGS)

test: venv ## Run the test suite (without slow and GPU tests)
	$(PY) -m pytest -m "not slow and not gpu" $(ARGS)

test-slow: venv ## Run only the slow tests
	$(PY) -m pytest -m "slow and not gpu" $(ARGS)

test-all: venv ## Run every test that this machine can run
	$(PY) -m pytest $(ARGS)

eval: venv ## Evaluate a checkpoint: make eval CKPT=logs/train/runs/.../checkpoints/best.ckpt
	$(PY) eval.py ckpt_path=$(CKPT) $(ARGS)

sweep: venv ## Small Optuna sweep on synthetic data
	$(PY) train.py hparams_search=unet_optuna $(ARGS)

multirun: venv ## Compare the first-wave models for one epoch on synthetic data
	$(PY) train.py -m model=unet,relaynet,ynet dataset=synthetic trainer.max_epochs=1 $(ARGS)

benchmark: venv ## Print the speed figures (see docs/benchmarks.md)
	$(PY) scripts/benchmark.py $(ARGS)

format: venv ## Format and fix the code with ruff
	$(PY) -m ruff format src tests scripts train.py eval.py
	$(PY) -m ruff check --fix src tests scripts train.py eval.py

lint: venv ## Lint without changing files
	$(PY) -m ruff check src tests scripts train.py eval.py

clean: ## Remove run outputs and caches (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
