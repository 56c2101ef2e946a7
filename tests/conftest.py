"""Shared pytest setup: the --full switch, a per-session cache dir, state resets.

The default run is fast (sample caps, few hypothesis examples); ``--full`` runs
everything. Each pytest process (each xdist worker) gets its own empty
TREBUCHET_CACHE_DIR, set here before any test module imports trebuchet.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Set before collection: test modules import trebuchet at import time, and the
# settings module may read the environment once.
_CACHE_DIR = tempfile.mkdtemp(prefix="trebuchet-test-cache-")
os.environ["TREBUCHET_CACHE_DIR"] = _CACHE_DIR
# The triton target runs on CPU tensors under Triton's interpreter (no GPU in CI); set
# before any test module imports triton (tests of the compiled path unset it themselves).
os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run every OpInfo sample, more hypothesis examples and slow tests",
    )


def pytest_configure(config: pytest.Config) -> None:
    import torch._dynamo

    # Tests compile many small functions; never let Dynamo silently give up on one.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 4096


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --full")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def full(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with --full."""
    return bool(request.config.getoption("--full"))


def reset_compiler_state() -> None:
    """Forget every compiled graph and every trebuchet statistic."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        import trebuchet
    except ImportError:
        return
    trebuchet.reset()


@pytest.fixture(autouse=True)
def _fresh_compiler_state():
    reset_compiler_state()
    yield
    reset_compiler_state()
