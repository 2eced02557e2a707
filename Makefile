# The two set-up commands of the README: `make demo` and `make test`. Both create the virtual
# environment on first use; torch==2.13.0 is installed before the package so that the CPU build
# is taken and no unpinned torch (with its CUDA packages) is ever pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metapose-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-slow lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/metapose experiment --config configs/demo.yaml --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/synth.py
	$(PY) benchmarks/infer.py

clean:
	rm -rf $(VENV) runs build dist src/*.egg-info
