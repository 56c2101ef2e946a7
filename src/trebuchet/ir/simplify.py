"""Index simplification with loop ranges: drop divisions that ranges make exact.

After a flattened buffer is placed in a kernel with separate loop variables,
its index reads e.g. FloorDiv(4*x0 + x1, 4) with 0 <= x1 < 4; knowing the
ranges, that is x0, and ModularIndexing(4*x0 + x1, 1, 4) is x1. Sympy cannot
see this without the ranges; this pass can.
"""
from __future__ import annotations

import sympy
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from .symbolic import nonnegative


def _split(expr: sympy.Expr, divisor: sympy.Expr,
           ranges: dict[sympy.Symbol, sympy.Expr]) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(quotient, remainder) with expr == quotient * divisor + remainder, when the
    remainder part provably lies in [0, divisor)."""
    quotient: sympy.Expr = sympy.Integer(0)
    rest: sympy.Expr = sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(expr)):
        q = term / divisor
        if _is_int_poly(q):
            quotient += q
        else:
            rest += term
    if rest == 0:
        return quotient, rest
    high = _max_value(rest, ranges)
    if high is None:
        return None
    margin = sympy.expand(divisor - 1 - high)
    if nonnegative(margin):
        return quotient, rest
    return None


def _is_int_poly(e: sympy.Expr) -> bool:
    """Whether a product (as sympy auto-cancels it) is free of division."""
    if e.is_Integer:
        return True
    if e.is_Rational:
        return False
    return sympy.fraction(e)[1] == 1 and e.as_coeff_Mul()[0].is_Integer


def _max_value(e: sympy.Expr, ranges: dict[sympy.Symbol, sympy.Expr]) -> sympy.Expr | None:
    """Largest value of a sum of nonnegative-coefficient terms over the ranges."""
    total: sympy.Expr = sympy.Integer(0)
    for term in sympy.Add.make_args(e):
        coeff, rest = term.as_coeff_Mul()
        if coeff < 0:
            return None
        syms = [s for s in rest.free_symbols if s in ranges]
        if not syms:
            if term.is_number:
                total += term
                continue
            return None
        if len(syms) != 1:
            return None
        v = syms[0]
        if rest.as_coefficient(v) is None and rest != v:
            return None
        total += term.subs(v, ranges[v] - 1)
    return sympy.expand(total)


def simplify_index(expr: sympy.Expr, ranges: dict[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
    if not expr.has(FloorDiv, ModularIndexing):
        return expr

    def floordiv(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
        split = _split(a, b, ranges)
        return split[0] if split is not None else FloorDiv(a, b)

    def modular(a: sympy.Expr, b: sympy.Expr, m: sympy.Expr) -> sympy.Expr:
        split = _split(a, b, ranges)
        if split is None:
            return ModularIndexing(a, b, m)
        q = split[0]
        # q mod m: terms that are multiples of m vanish; if the rest stays below m, done.
        kept = sum((t for t in sympy.Add.make_args(q) if not _is_int_poly(t / m)),
                   sympy.Integer(0))
        high = _max_value(kept, ranges)
        if high is not None:
            margin = sympy.expand(m - 1 - high)
            if nonnegative(margin):
                return kept
        return ModularIndexing(a, b, m)

    out = expr.replace(lambda e: isinstance(e, FloorDiv), lambda e: floordiv(*e.args))
    out = out.replace(lambda e: isinstance(e, ModularIndexing), lambda e: modular(*e.args))
    return _rejoin(sympy.expand(out))


def _rejoin(expr: sympy.Expr) -> sympy.Expr:
    """c*((e // b) % m) + c*m*(e // (b*m)) is c*(e // b): a flat index that a view split
    into two dims and a second view flattened again (a [B*S, H] matmul result read
    as [B, S, H]) becomes one term, as simple as the index the data was written with."""
    while True:
        terms = list(sympy.Add.make_args(expr))
        for t in terms:
            mod = next((f for f in sympy.Mul.make_args(t) if isinstance(f, ModularIndexing)), None)
            if mod is None:
                continue
            e, b, m = mod.args
            coeff = t / mod
            partner = sympy.expand(coeff * m * FloorDiv(e, b * m))
            if partner in terms:
                whole = e if b == 1 else FloorDiv(e, b)
                expr = sympy.expand(expr - t - partner + coeff * whole)
                break
        else:
            return expr
