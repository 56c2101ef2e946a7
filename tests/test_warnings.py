"""Trebuchet's warnings name the user's line, not a frame inside torch."""
from __future__ import annotations

import sys
import warnings
from typing import Any

import pytest
import torch

import trebuchet
from trebuchet.lowering import registry
from trebuchet.runtime import pipeline


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2 + 1


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected failure")


def _ours(record: list) -> list:
    return [w for w in record if issubclass(w.category, trebuchet.TrebuchetWarning)]


def test_graph_fallback_warning_points_at_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "compile_artifact", _boom)
    x = torch.randn(5, requires_grad=True)
    compiled = trebuchet.compile(_fn, graph_cache=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call_line = _line() + 1
        out = compiled(x)
        backward_line = _line() + 1
        out.sum().backward()
    torch.testing.assert_close(out, _fn(x))
    found = [(w.filename, w.lineno, str(w.message)) for w in _ours(record)]
    assert len(found) == 2, found
    assert found[0][:2] == (__file__, call_line) and "forward graph failed" in found[0][2], found
    assert found[1][:2] == (__file__, backward_line) and "backward graph failed" in found[1][2]


def test_lowering_rule_warning_points_at_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    sin = torch.ops.aten.sin.default
    monkeypatch.setitem(registry.LOWERINGS, sin, _boom)
    x = torch.randn(5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = _line() + 1
        out = trebuchet.compile(_fn, graph_cache=False)(x)
    torch.testing.assert_close(out, _fn(x))
    found = [(w.filename, w.lineno) for w in _ours(record)
             if "lowering rule for" in str(w.message)]
    assert found == [(__file__, line)], [(w.filename, w.lineno, str(w.message)) for w in record]


def _line() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno
