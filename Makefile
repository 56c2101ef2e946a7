# Developer entry points. `make demo` and `make test` work on a fresh machine: they
# install what they need first (torch pinned to the CPU wheel, then this package).
# CI runs `make test` (see .ci/run).
PYTHON ?= python3
STAMP := .make-installed

.PHONY: install test test-full lint demo bench bench-all coverage

# torch first, pinned: 2.13.0 is the CPU wheel. A bare `torch` would pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e ".[test,triton]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 tests

test-full: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 tests --full

lint:
	ruff check src tests benchmarks scripts

demo: $(STAMP)
	$(PYTHON) -m trebuchet

bench: $(STAMP)
	$(PYTHON) benchmarks/bench.py

# micro cases, whole models and compile time; writes docs/benchmarks.md
bench-all: $(STAMP)
	$(PYTHON) benchmarks/run_all.py

coverage: $(STAMP)
	$(PYTHON) scripts/coverage.py
