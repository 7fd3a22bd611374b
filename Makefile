# provtel: `make demo` runs the instrumented demo, `make test` the whole suite, `make bench` the
# benchmarks. Each sets up .venv first (Python >= 3.10, torch 2.13.0 CPU build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.provtel-installed
PIP := $(BIN)/python -m pip

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml semconv/pyproject.toml instrumentation/pyproject.toml exporter/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0" -e semconv -e instrumentation -e exporter -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/opentelemetry-instrument $(BIN)/python examples/train.py --epochs 2
	$(BIN)/provtel validate --latest prov

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) prov .pytest_cache .mypy_cache .ruff_cache
