# Developer entry points. `make demo` and `make test` work on a fresh machine: they
# install what they need first (torch, unless a compatible one is installed, then this
# package). CI runs `make test` (see .ci/run).
PYTHON ?= python3
STAMP := .make-installed
# How torch is installed when none compatible (2.4 <= version < 3) is: from the default
# index, which on Linux is a CUDA build; for the CPU-only wheel:
#   make install TORCH_PIP="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP ?= torch==2.13.0
# pytest workers for `make test` (default: the machine's cores)
JOBS ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)

.PHONY: install test test-full lint demo bench bench-all coverage

# torch first, only when no compatible torch is installed (a bare `torch` requirement
# could replace a working CPU or CUDA build by another)
$(STAMP): pyproject.toml
	$(PYTHON) -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(not (2, 4) <= v < (3, 0))" 2>/dev/null \
		|| $(PYTHON) -m pip install -q $(TORCH_PIP)
	$(PYTHON) -m pip install -q -e ".[test,triton]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q -n $(JOBS) tests

test-full: $(STAMP)
	$(PYTHON) -m pytest -q -n $(JOBS) tests --full

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
