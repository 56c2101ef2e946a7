"""The target-neutral description of scheduled kernels, which every code generator and
the wrapper read: which buffers stay in registers, each kernel's typed parameters (in
call order) and its loop shape.

Input: the GraphIR and its Schedule (scheduler/kernels.py). Output: plain data
(`Pointer`, `SizeSymbol`, `ErrorFlag`; shape names), stored with a compiled graph.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import sympy
import torch

from ..ir.expr import Index, Load, Op, loads, may_divide_by_zero, walk
from ..ir.nodes import GraphIR, Reduction, Scatter, index_vars
from .kernels import Kernel, Schedule, is_scatter, kernel_reads, node_exprs, reads_columns


@dataclasses.dataclass(frozen=True)
class Pointer:
    """A buffer the kernel reads ("in") or writes ("out"), with its element dtype."""

    name: str
    dtype: torch.dtype
    role: str                      # "in" | "out"


@dataclasses.dataclass(frozen=True)
class SizeSymbol:
    """A size symbol (int64) the kernel's loops or indices use."""

    name: str


@dataclasses.dataclass(frozen=True)
class ErrorFlag:
    """The error bits a kernel that checks data ORs into (see `reports_errors`)."""

    name: str = "tb_error"


Param = Union[Pointer, SizeSymbol, ErrorFlag]


def internal_buffers(graph: GraphIR, sched: Schedule) -> set[str]:
    """Buffers that live only in registers: read nowhere but their own kernel, as locals."""
    outside: set[str] = {o.ref.buf for o in graph.outputs if o.kind == "ref"}
    for step in sched.steps:
        if isinstance(step, Kernel):
            outside |= kernel_reads(step)
        else:
            outside |= step.reads()
    internal = set()
    for step in sched.steps:
        if not isinstance(step, Kernel):
            continue
        for node in step.nodes:
            name = node.buf.name
            if name in outside or isinstance(node.buf, Scatter):
                continue
            ok = True
            for other in step.nodes:
                for ld in loads(other.body):
                    if ld.buf != name:
                        continue
                    if ld.dynamic is not None:
                        ok = False
                    elif (node.level == "full" and not isinstance(node.buf, Reduction)
                          and (other.stage != node.stage or other.level != "full")):
                        ok = False
            if ok:
                internal.add(name)
    return internal


def reports_errors(k: Kernel) -> bool:
    """Whether the kernel checks data eager raises on (out-of-range data-dependent
    indices, integer division by zero), so it takes an `ErrorFlag`."""
    return any(isinstance(e, Op) and (e.op == "check_index" or may_divide_by_zero(e))
               for n in k.nodes for root in node_exprs(n) for e in walk(root))


def kernel_params(k: Kernel, internal: set[str]) -> list[Param]:
    """The kernel's parameters in call order: buffers read (by name), buffers written
    (in node order, registers excluded), size symbols (by name), then the error flag."""
    produced = {n.buf.name: n.buf for n in k.nodes}
    reads: dict[str, torch.dtype] = {}
    syms: set[sympy.Symbol] = set()
    own_vars: set[str] = set()     # a Scatter's init runs over the output's vars i0..
    for n in k.nodes:
        if isinstance(n.buf, Scatter):
            own_vars |= {str(v) for v in index_vars(len(n.buf.shape))}
            for s in (*n.buf.shape, *n.buf.stride):
                syms |= sympy.sympify(s).free_symbols
        for e in (x for root in node_exprs(n) for x in walk(root)):
            if isinstance(e, Load):
                if e.buf not in produced:
                    reads[e.buf] = e.dtype
                syms |= e.index.free_symbols
            elif isinstance(e, Index):
                syms |= e.expr.free_symbols
        syms |= n.store_index.free_symbols
    for s in list(k.outer) + list(k.inner):
        syms |= sympy.sympify(s).free_symbols
    out: list[Param] = [Pointer(name, dt, "in") for name, dt in sorted(reads.items())]
    out += [Pointer(name, b.dtype, "out") for name, b in produced.items() if name not in internal]
    loop_vars = {str(v) for v in k.outer_vars + k.inner_vars} | own_vars
    out += [SizeSymbol(str(s)) for s in sorted(syms, key=str) if str(s) not in loop_vars]
    if reports_errors(k):
        out.append(ErrorFlag())
    return out


# Reductions a column kernel computes (the others read their rows contiguously).
COLUMN_TYPES = ("sum", "prod", "max", "min", "any", "all", "argmax", "argmin")


def is_column(k: Kernel) -> bool:
    """A reduction whose reduced axis is strided and whose outputs are contiguous
    (sum over the batch, bias gradients): better read row by row."""
    if not k.inner or not k.outer or k.num_loops != 1:
        return False
    full = [n for n in k.nodes if n.level == "full"]
    if any(not isinstance(n.buf, Reduction) or n.buf.reduce_type not in COLUMN_TYPES
           for n in full):
        return False
    if any(n.level == "row" and n.stage == 0 for n in k.nodes):
        return False
    return reads_columns(k, [n.body for n in full])


def kernel_shape(k: Kernel) -> str:
    """The kernel's loop shape: pointwise, row, column or scalar (reduction), or scatter."""
    if is_scatter(k):
        return "scatter"
    if not k.inner:
        return "pointwise"
    if is_column(k):
        return "column"
    return "row" if k.outer else "scalar"


__all__ = ["Pointer", "SizeSymbol", "ErrorFlag", "Param", "internal_buffers", "reports_errors",
           "kernel_params", "is_column", "kernel_shape", "COLUMN_TYPES"]
