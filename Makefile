# recforge: the two commands of the README, and a few helpers.
#   make run    set up, run the whole pipeline as Airflow DAG runs on embedded defaults, serve the API
#   make test   set up and run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test ui up-scaled lint clean bytecode

$(STAMP): pyproject.toml setup.py serving/_fastpath.c models/_topk.c models/_capped.c pipelines/ingest/_jsonl.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet --no-compile -e '.[pipeline,serving,scaled,dev]'
	$(MAKE) --no-print-directory bytecode SITE=1
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/recforge run

test: setup bytecode
	$(BIN)/ruff check .
	$(BIN)/pytest

# Bytecode, compiled on both cores. pip compiles what it installs one file at a time (about 40 of the
# install's 60 s here); SITE=1 does the installed packages in parallel instead. The project's own
# modules are compiled before every test run: with PYTHONDONTWRITEBYTECODE set (as on our CI machines)
# Python would otherwise recompile them in each of the hundreds of processes the suite starts.
# Like pip, a file that is not Python 3.11 (torch ships py312-only test helpers) is left uncompiled.
bytecode:
	@$(BIN)/python -m compileall -q -j 0 $(if $(SITE),$(VENV)/lib,) dags pipelines models serving expectations tests benchmarks \
		> $(VENV)/compileall.log 2>&1 || grep -q "SyntaxError" $(VENV)/compileall.log || (cat $(VENV)/compileall.log; false)

ui: setup
	$(BIN)/recforge ui

# The scaled-out configuration without Docker: needs PostgreSQL and Redis on localhost (docs/scaling.md).
up-scaled: setup
	$(BIN)/recforge scaled-up

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf var .pytest_cache dbt_project/target dbt_project/logs
