"""Merge adjacent loops of a scheduled kernel that every access walks as one loop.

A target's pass over the kernels the scheduler made (the C target runs it before writing
each kernel). A pointwise kernel over contiguous [N, C, H, W] tensors addresses its H and
W loop variables only as `W*x2 + x3`, in every load and store: the two loops are one loop
of H*W elements, whose longer innermost run vectorizes better (a 7x7 or 28x28 feature map
gives 49 or 784 elements instead of 7 or 28) and costs fewer loop levels. Size-1 loops are
dropped (their variable is 0).

Two loops u, v (v inner, of size S) merge only when every index expression of the kernel
(loads, including data-dependent offsets, stores and index values) uses them exactly as
c*(S*u + v) for some c free of both: a division, a comparison with one of them alone or a
product of the two keeps them apart. Outer (parallel) loops merge with outer loops, inner
(reduced) loops with inner ones; each group keeps at least one loop.
"""
from __future__ import annotations

import dataclasses

import sympy

from ..ir.expr import Expr, Index, Load, rewrite_indices, walk
from ..ir.nodes import index_vars
from .kernels import Kernel

_MERGED = sympy.Symbol("_merged", integer=True, nonnegative=True)


def coalesce(k: Kernel) -> Kernel:
    """`k` with mergeable adjacent loops merged and size-1 loops dropped (k itself when
    nothing changes)."""
    outer, inner = list(k.outer), list(k.inner)
    nodes = [(n.body, sympy.sympify(n.store_index)) for n in k.nodes]
    changed = False
    for prefix, sizes in (("x", outer), ("r", inner)):
        d = len(sizes) - 1
        while d >= 0:
            if len(sizes) > 1 and sizes[d] == 1:
                nodes = _drop(nodes, sizes, d, prefix)
                changed = True
            elif d + 1 < len(sizes):
                merged = _merge(nodes, sizes, d, prefix)
                if merged is not None:
                    nodes, changed = merged, True
            d -= 1
    if not changed:
        return k
    new_nodes = [dataclasses.replace(n, body=body, store_index=store)
                 for n, (body, store) in zip(k.nodes, nodes)]
    return Kernel(k.name, tuple(outer), tuple(inner), new_nodes)


def _indices(body: Expr) -> list[sympy.Expr]:
    out = []
    for e in walk(body):
        if isinstance(e, Load):
            out.append(e.index)
        elif isinstance(e, Index):
            out.append(e.expr)
    return out


def _renumber(sizes: list[sympy.Expr], d: int, prefix: str) -> dict[sympy.Symbol, sympy.Expr]:
    """The substitution for removing loop d+1's variable: later variables move down one."""
    old = index_vars(len(sizes), prefix)
    return {old[j]: old[j - 1] for j in range(d + 2, len(sizes))}


def _apply(nodes: list[tuple[Expr, sympy.Expr]], fn) -> list[tuple[Expr, sympy.Expr]]:
    return [(rewrite_indices(body, fn), fn(store)) for body, store in nodes]


def _drop(nodes: list[tuple[Expr, sympy.Expr]], sizes: list[sympy.Expr], d: int,
          prefix: str) -> list[tuple[Expr, sympy.Expr]]:
    """Remove size-1 loop d: its variable is 0, later ones move down."""
    old = index_vars(len(sizes), prefix)
    mapping: dict[sympy.Symbol, sympy.Expr] = {old[d]: sympy.Integer(0)}
    mapping.update({old[j]: old[j - 1] for j in range(d + 1, len(sizes))})
    del sizes[d]
    return _apply(nodes, lambda e: sympy.sympify(e).xreplace(mapping))


def _merge(nodes: list[tuple[Expr, sympy.Expr]], sizes: list[sympy.Expr], d: int,
           prefix: str) -> list[tuple[Expr, sympy.Expr]] | None:
    """Merge loops d and d+1 into one (variable d) when every index allows it, else None."""
    old = index_vars(len(sizes), prefix)
    u, v, inner_size = old[d], old[d + 1], sizes[d + 1]
    rewritten: dict[sympy.Expr, sympy.Expr] = {}
    for body, store in nodes:
        for e in [*_indices(body), store]:
            if e in rewritten:
                continue
            new = _fold(sympy.sympify(e), u, v, inner_size)
            if new is None:
                return None
            rewritten[e] = new
    rename = _renumber(sizes, d, prefix)
    rename[_MERGED] = u
    sizes[d:d + 2] = [sizes[d] * inner_size]

    def fn(e: sympy.Expr) -> sympy.Expr:
        e = sympy.sympify(e)
        return rewritten.get(e, e).xreplace(rename)

    return _apply(nodes, fn)


def _fold(e: sympy.Expr, u: sympy.Symbol, v: sympy.Symbol, inner_size: sympy.Expr) -> sympy.Expr | None:
    """e with a*u + b*v written as b*_MERGED, when a = b*inner_size; None when e uses u or
    v any other way."""
    if not (e.has(u) or e.has(v)):
        return e
    e = sympy.expand(e)
    a, b = e.coeff(u), e.coeff(v)
    rest = sympy.expand(e - a * u - b * v)
    if any(x.has(u) or x.has(v) for x in (a, b, rest)):
        return None
    if sympy.expand(a - b * inner_size) != 0:
        return None
    return rest + b * _MERGED

