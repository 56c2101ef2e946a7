"""The cost model: bytes of memory traffic, the quantity fusion minimizes.

A kernel reads each input buffer it loads from memory once (cache reuse
within a row is assumed) and writes each buffer it stores. The same sums over
an unfused schedule (every ATen op's inputs and outputs) give the traffic
fusion saved; the report and the kernel comments print both. For an extern
(a library call) the same measure is the bytes of its tensor arguments plus
its outputs: the least any implementation must move.
"""
from __future__ import annotations

import sympy

from ..ir import symbolic
from ..ir.expr import Load, loads
from ..ir.nodes import BufferRef, Extern, ExternOutput, GraphIR, product
from .kernels import Kernel, node_exprs


def buffer_bytes(graph: GraphIR, name: str) -> sympy.Expr:
    b = graph.buffer(name)
    return product(b.shape) * b.dtype.itemsize


def kernel_bytes(graph: GraphIR, kernel: Kernel, internal: set[str]) -> sympy.Expr:
    """Minimal bytes moved by one kernel: unique buffers read plus buffers written.

    A buffer read only through data-dependent indices (an embedding table, a gather)
    counts at most one element per distinct indexed load and loop iteration (a row
    re-read by a later pass comes from cache), never more than its whole size.
    """
    produced = {n.buf.name for n in kernel.nodes}
    read: set[str] = set()
    gathers: dict[Load, sympy.Expr] = {}     # indexed load -> how many times it runs
    for n in kernel.nodes:
        runs = product(kernel.outer) * (product(kernel.inner) if n.level == "full" else 1)
        for ld in (ld for e in node_exprs(n) for ld in loads(e)):
            if ld.buf in produced:
                continue
            if ld.dynamic is None:
                read.add(ld.buf)
            elif gathers.get(ld) != runs:
                gathers[ld] = runs if ld not in gathers else sympy.Max(gathers[ld], runs)
    gathered: dict[str, sympy.Expr] = {}
    for ld, runs in gathers.items():
        gathered[ld.buf] = gathered.get(ld.buf, sympy.Integer(0)) + runs
    total: sympy.Expr = sympy.Integer(0)
    for name in read:
        total += buffer_bytes(graph, name)
    for name, count in gathered.items():
        if name not in read:
            total += sympy.Min(buffer_bytes(graph, name), count * graph.buffer(name).dtype.itemsize)
    for name in produced - internal:
        total += buffer_bytes(graph, name)
    return symbolic.simplify(total)


def extern_bytes(graph: GraphIR, extern: Extern) -> sympy.Expr:
    """Bytes of an extern's distinct tensor arguments (as viewed) plus its outputs."""
    refs: set[BufferRef] = set()

    def collect(x: object) -> None:
        if isinstance(x, BufferRef):
            refs.add(x)
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)
        elif isinstance(x, dict):
            for v in x.values():
                collect(v)

    collect((extern.args, extern.kwargs))
    total: sympy.Expr = sympy.Integer(0)
    for ref in refs:
        total += product(ref.shape) * graph.buffer(ref.buf).dtype.itemsize
    if extern.multi:
        outs = [b for b in graph.buffers if isinstance(b, ExternOutput) and b.source == extern.name]
    else:
        outs = [extern]
    for b in outs:
        total += product(b.shape) * b.dtype.itemsize
    return symbolic.simplify(total)


def describe_bytes(n: sympy.Expr) -> str:
    if n.is_number:
        v = int(n)
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if v >= scale:
                return f"{v / scale:.1f} {unit}"
        return f"{v} B"
    return f"{n} B"
