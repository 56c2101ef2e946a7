"""Targets are found by name and state their capabilities as data; the runtime modules
that every target shares (pipeline, wrapper, profiler, graph cache) name none of them."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch

import trebuchet
from trebuchet.codegen.target import DEFAULT, NAMES, GeneratedCode, Target, get_target
from trebuchet.ir.expr import OPS


@pytest.mark.parametrize("name", NAMES)
def test_target_found_by_name_with_its_capabilities(name: str) -> None:
    target = get_target(name)
    assert isinstance(target, Target) and target.name == name
    assert isinstance(target.device, str) and target.device
    assert isinstance(target.float_sum_dtype, torch.dtype) and target.float_sum_dtype.is_floating_point
    assert set(target.ops) == set(OPS)
    assert all(isinstance(v, int) and v > 0 for v in target.limits.values())
    if not target.executes_ir:
        assert target.source_file


def test_auto_is_the_default_and_unknown_names_are_refused() -> None:
    assert get_target("auto") is get_target(DEFAULT)
    with pytest.raises(ValueError, match="unknown target"):
        get_target("nonexistent")


def test_generated_code_is_plain_data() -> None:
    """What a generating target returns is stored by the graph cache as it is."""
    import pickle

    from trebuchet.scheduler.describe import ErrorFlag, Pointer, SizeSymbol

    code = GeneratedCode("src", {"kernel0": "kernel0"},
                         {"kernel0": [Pointer("in0", torch.float16, "in"), SizeSymbol("s0"), ErrorFlag()]})
    assert pickle.loads(pickle.dumps(code)) == code


RUNTIME = pathlib.Path(trebuchet.__file__).parent / "runtime"
# an import of a target's module, its build, ctypes, or a comparison with a target's name
NAMES_A_TARGET = re.compile(r"codegen(\.| import )(c|reference)\b|\bcbuild\b|\bctypes\b|"
                            r"==\s*[\"'](c|reference)[\"']")


@pytest.mark.parametrize("module", ["pipeline.py", "wrapper.py", "profiler.py", "graph_cache.py"])
def test_shared_runtime_names_no_target(module: str) -> None:
    text = (RUNTIME / module).read_text()
    assert not NAMES_A_TARGET.search(text), NAMES_A_TARGET.search(text)
