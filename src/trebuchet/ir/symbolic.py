"""Cheap exact checks on size and index expressions.

Sizes are polynomials (or ratios of polynomials) in integer size symbols, possibly
with FloorDiv/Min/Max terms treated as opaque. For those, `sympy.cancel` decides
equality exactly and fast; `sympy.simplify` is general, slow, and its first call
imports sympy.physics (about 0.2 s of every cold compile). Lowering and scheduling
use these instead.
"""
from __future__ import annotations

import functools
from typing import Any

import sympy


def simplify(expr: Any) -> sympy.Expr:
    """A canonical form of a size expression (numbers and symbols unchanged)."""
    expr = sympy.sympify(expr)
    if expr.is_number or expr.is_Symbol:
        return expr
    return sympy.cancel(expr)


def equal(a: Any, b: Any) -> bool:
    """a == b for every value of the size symbols (False when that cannot be shown)."""
    diff = sympy.sympify(a - b)
    if diff.is_number:
        return bool(diff == 0)
    return sympy.cancel(diff) == 0


@functools.lru_cache(maxsize=65536)
def clamp(index: sympy.Expr, high: sympy.Expr) -> sympy.Expr:
    """max(0, min(index, high)): an index kept inside [0, high]. Cached: sympy decides
    the comparisons through its assumptions, slowly, and lowering asks for the same
    clamps again each time a consumer's expression is built (a `cat` feeding a chain
    of pointwise ops)."""
    return sympy.Max(0, sympy.Min(index, high))
