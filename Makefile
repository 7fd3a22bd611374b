# provtel: `make demo` runs the instrumented demo, `make test` the whole suite, `make bench` the
# benchmarks. Each sets up .venv first (Python >= 3.10, torch 2.13.0 CPU build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.provtel-installed
PIP := $(BIN)/python -m pip

.PHONY: install system-deps demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt semconv/pyproject.toml instrumentation/pyproject.toml exporter/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0" -e semconv -e instrumentation -e exporter -e ".[dev]"
	# prov 2.0.0, which the yProv service parses uploads with, for `provtel validate`
	$(PIP) install -q --no-deps --target $(VENV)/prov2 "prov==2.0.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/opentelemetry-instrument $(BIN)/python examples/train.py --epochs 2
	$(BIN)/provtel validate --latest prov

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# A real Prometheus server and openssl for the receiver tests, headless Chromium for the HTML
# report test and Graphviz for `provtel graph` (Debian packages). Installed when missing and we
# may (root with apt-get); otherwise those tests say why they are skipped.
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v openssl >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v dot >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus openssl chromium graphviz fonts-dejavu-core >/dev/null; \
	  else echo "prometheus/openssl/chromium/graphviz missing and not root: their tests will fail or be skipped"; fi; \
	fi

test: lint system-deps
	# two workers: most tests wait on subprocesses (instrumented scripts, servers); pyproject's
	# --dist loadgroup keeps a module's shared runs on one worker (tests/conftest.py). pytest:
	# 456-542 s (739-883 s user CPU) on this 2-core machine; 627 s at load 3-4
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) prov .pytest_cache .mypy_cache .ruff_cache
