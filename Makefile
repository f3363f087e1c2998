# DuPLUS: two-command set-up.  `make demo` runs the embedded default, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.duplus-installed

.PHONY: demo demo-quick test lint typecheck pytest bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The CPU torch build is installed first, so that the open `torch>=2.3` requirement is already met
# and pip never pulls a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/duplus demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/duplus demo --quick --out runs/demo-quick

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
