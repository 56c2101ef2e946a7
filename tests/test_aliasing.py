"""Outputs that alias: views returned from a compiled graph share memory as in eager.

AOTAutograd tells the compiler which outputs view what; an output that views a value
another output also views (or is) must be a view of the same stored memory, so that a
later in-place write through one alias shows through the other, as in eager. Each case
runs the same function eagerly and compiled (graph breaks included) and compares
every returned value after the writes.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import trebuchet


def _break() -> None:
    torch._dynamo.graph_break()


def tensor_constant_across_break() -> torch.Tensor:
    """The reported case: a view of a constant made in the graph, mutated after a break."""
    a = torch.tensor([1])
    a = a[0:1]
    b = a.squeeze()
    a[0] = 0
    if a[0] < 1e5:          # a data-dependent branch: a graph break
        pass
    a[0] = 2
    return b


def views_of_intermediate_across_break(x: torch.Tensor) -> tuple:
    y = x * 2
    row, flat = y[1], y.view(-1)
    _break()
    row.add_(100)            # shows in flat and y
    return y, row, flat


def two_views_of_intermediate(x: torch.Tensor) -> tuple:
    y = x + 1
    t, s = y.t(), y[:, 1:]
    _break()
    t.mul_(-1)
    return t, s


def view_of_output(x: torch.Tensor) -> tuple:
    y = torch.sigmoid(x)
    v = y.unsqueeze(0)
    _break()
    y.zero_()
    return y, v


def view_of_input(x: torch.Tensor) -> tuple:
    v = x[1:]
    w = x.view(-1)
    _break()
    v.fill_(7)
    return x.clone(), w


def constant_views(x: torch.Tensor) -> tuple:
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a, b = c[0], c.t()
    _break()
    a.mul_(x.sum())
    return a, b


CASES: dict[str, tuple[Callable, Callable[[], tuple]]] = {
    "tensor_constant_across_break": (tensor_constant_across_break, lambda: ()),
    "views_of_intermediate_across_break": (views_of_intermediate_across_break,
                                           lambda: (torch.arange(6.0).view(2, 3),)),
    "two_views_of_intermediate": (two_views_of_intermediate, lambda: (torch.arange(9.0).view(3, 3),)),
    "view_of_output": (view_of_output, lambda: (torch.randn(4),)),
    "view_of_input": (view_of_input, lambda: (torch.arange(4.0),)),
    "constant_views": (constant_views, lambda: (torch.ones(2),)),
}


def _flat(x: object) -> list:
    return list(x) if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("target", ["c", "reference"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_aliases_survive_like_eager(name: str, target: str) -> None:
    fn, make = CASES[name]
    expected = _flat(fn(*make()))
    actual = _flat(trebuchet.compile(fn, target=target)(*make()))
    for e, a in zip(expected, actual, strict=True):
        torch.testing.assert_close(a, e)
    assert trebuchet.stats()["graph_fallbacks"] == 0


@pytest.mark.parametrize("name", ["views_of_intermediate_across_break", "two_views_of_intermediate"])
def test_aliases_under_autograd(name: str) -> None:
    fn, make = CASES[name]

    def run(f: Callable) -> list:
        (x,) = make()
        x.requires_grad_()
        outs = _flat(f(x))
        sum(o.sum() for o in outs).backward()
        return [o.detach() for o in outs] + [x.grad]

    for e, a in zip(run(fn), run(trebuchet.compile(fn)), strict=True):
        torch.testing.assert_close(a, e)
    assert trebuchet.stats()["graph_fallbacks"] == 0
