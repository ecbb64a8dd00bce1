# Quick start: `make run` (install + serve config/example.yaml) and `make test` (install + all tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/example.yaml

.PHONY: run test bench lint install dev clean check-config

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py registrar/_lane_c.c sipcore/_digest_c.c | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml setup.py registrar/_lane_c.c sipcore/_digest_c.c | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: install
	$(BIN)/sipcore serve --config $(CONFIG)

check-config: install
	$(BIN)/sipcore check-config $(CONFIG)

test: dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: dev
	$(BIN)/python -m benchmarks.run_all

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
