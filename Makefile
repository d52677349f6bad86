# cifar-lightning — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra arguments for `make train`, e.g.  make train ARGS="model=depthwise trainer.max_epochs=5"
ARGS   ?=

.PHONY: help install test train lint format tensorboard gpu-kit clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(BIN)/.installed ## Create .venv and install the package (editable) with dev extras; re-running is a no-op

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: install ## Run the test suite (real-data tests need CIFAR_LIGHTNING_REAL_DATA=path)
	$(BIN)/python -m pytest -n 2 --dist loadfile

train: install ## Train the default recipe on CIFAR-10 (downloads it into data/); ARGS="..." for overrides
	$(BIN)/python -m cifar_lightning.train $(ARGS)

lint: install ## ruff: lint and check formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff: fix lint findings that are safe to fix, and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

tensorboard: install ## TensorBoard over every run in outputs/ (open it on CUSTOM SCALARS)
	@echo "The training curves first: http://localhost:6006/#custom_scalars"
	@echo "or TIME SERIES with them pinned on top: 'http://localhost:6006/?pinnedCards=%5B%7B%22plugin%22%3A%22scalars%22%2C%22tag%22%3A%22train%2Floss%22%7D%2C%7B%22plugin%22%3A%22scalars%22%2C%22tag%22%3A%22train%2Facc%22%7D%2C%7B%22plugin%22%3A%22scalars%22%2C%22tag%22%3A%22train%2Flr%22%7D%2C%7B%22plugin%22%3A%22scalars%22%2C%22tag%22%3A%22val%2Floss%22%7D%2C%7B%22plugin%22%3A%22scalars%22%2C%22tag%22%3A%22val%2Facc%22%7D%5D#timeseries'"
	$(BIN)/tensorboard --logdir outputs

# The shared folder beside the checkout: the GPU wheel fetcher and the CIFAR-10 JPEG tarball.
SHARED ?= ../shared

# What the GPU image lacks beyond fetch-wheels' list: matplotlib (figures) and joblib (sweeps).
GPU_EXTRA := matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six \
	joblib cloudpickle
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64

gpu-kit: ## Fill .whl/ and .data/ (git-ignored) for a GPU machine: the wheels it lacks, the data
	$(SHARED)/gpu/fetch-wheels .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_EXTRA)
	mkdir -p .data && cp -u $(SHARED)/data/cifar10-jpeg.tar.gz .data/

clean: ## Remove caches and build files (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
