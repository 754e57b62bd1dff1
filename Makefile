# recforge: the two commands of the README, and a few helpers.
#   make run    set up, run the whole pipeline as Airflow DAG runs on embedded defaults, serve the API
#   make test   set up and run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test ui up-scaled lint clean

$(STAMP): pyproject.toml setup.py serving/_fastpath.c models/_topk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[pipeline,serving,scaled,dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/recforge run

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

ui: setup
	$(BIN)/recforge ui

# The scaled-out configuration without Docker: needs PostgreSQL and Redis on localhost (docs/scaling.md).
up-scaled: setup
	$(BIN)/recforge scaled-up

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf var .pytest_cache dbt_project/target dbt_project/logs
