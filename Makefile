# Developer entry points. CI runs `make test` (see .ci/run).
PYTHON ?= python

.PHONY: test test-full lint demo bench coverage

test:
	$(PYTHON) -m pytest -q -n 2 tests

test-full:
	$(PYTHON) -m pytest -q -n 2 tests --full

lint:
	ruff check src tests benchmarks scripts

demo:
	$(PYTHON) -m trebuchet

bench:
	$(PYTHON) benchmarks/bench.py

coverage:
	$(PYTHON) scripts/coverage.py
