# DuPLUS: two-command set-up.  `make demo` runs the embedded default, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.duplus-runtime
DEV_STAMP := $(VENV)/.duplus-dev

.PHONY: demo demo-quick test lint typecheck pytest bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The CPU torch build is installed first, so that the open `torch>=2.3` requirement is already met
# and pip never pulls a multi-GB CUDA build. The demo needs only the runtime dependencies; the
# checks add the dev tools (pytest, ruff, mypy: ~20 s more to install).
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(DEV_STAMP)

venv: $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/duplus demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/duplus demo --quick --out runs/demo-quick

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

pytest: $(DEV_STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
