"""The reference target: executes the IR with torch operations.

This is the definition of what the IR means, and the oracle for code
generator bugs: every buffer is computed over its whole iteration space at
once, with loop variables as broadcast `arange` tensors. Slow; never fused.
"""
from __future__ import annotations

import math

from typing import Any, Callable

import sympy
import torch
from torch.utils._sympy import functions as F

from ..ir.expr import (INDEX_ERROR, INDEX_ERRORS, ZERO_DIVISION_ERROR, Const, Expr, Index, Load, Op,
                       may_divide_by_zero, walk)
from ..ir.nodes import (Buffer, BufferRef, Extern, ExternOutput, GraphIR, OpaqueInput, Pointwise, Reduction,
                        Scatter, index_vars)
from .target import Target

HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


def eval_index(e: sympy.Expr, env: dict[sympy.Symbol, Any]) -> Any:
    """Evaluate an index expression; env maps symbols to ints or int64 tensors."""
    if e.is_Integer:
        return int(e)
    if isinstance(e, sympy.Symbol):
        return env[e]
    if isinstance(e, sympy.Add):
        out: Any = 0
        for a in e.args:
            out = out + eval_index(a, env)
        return out
    if isinstance(e, sympy.Mul):
        out = 1
        for a in e.args:
            out = out * eval_index(a, env)
        return out
    if isinstance(e, sympy.Pow) and e.exp.is_Integer:
        base = eval_index(e.base, env)
        return base ** int(e.exp) if int(e.exp) >= 0 else 1.0 / _as_float(base) ** -int(e.exp)
    if isinstance(e, F.FloorDiv):
        return eval_index(e.args[0], env) // eval_index(e.args[1], env)
    if isinstance(e, F.ModularIndexing):
        a, b, m = (eval_index(x, env) for x in e.args)
        return (a // b) % m
    if isinstance(e, (F.Mod, F.PythonMod, sympy.Mod)):
        return eval_index(e.args[0], env) % eval_index(e.args[1], env)
    if isinstance(e, (sympy.Max, sympy.Min, F.Max, F.Min)):
        is_max = isinstance(e, (sympy.Max, F.Max))
        vals = [eval_index(a, env) for a in e.args]
        fn = torch.maximum if is_max else torch.minimum
        out = vals[0]
        for v in vals[1:]:
            if isinstance(out, torch.Tensor) or isinstance(v, torch.Tensor):
                out = fn(torch.as_tensor(out), torch.as_tensor(v))
            else:
                out = max(out, v) if is_max else min(out, v)
        return out
    if isinstance(e, (F.IntTrueDiv, F.FloatTrueDiv)):     # float size arithmetic (a SymFloat)
        return _as_float(eval_index(e.args[0], env)) / _as_float(eval_index(e.args[1], env))
    if isinstance(e, F.ToFloat):
        return _as_float(eval_index(e.args[0], env))
    if isinstance(e, sympy.Float):
        return float(e)
    raise NotImplementedError(f"reference: index {e}")


def _as_float(v: Any) -> Any:
    return v.double() if isinstance(v, torch.Tensor) else float(v)


def _pyfloordiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b == 0, torch.zeros_like(a), torch.div(a, torch.where(b == 0, 1, b),
                                                               rounding_mode="floor"))


_UNARY: dict[str, Callable] = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "expm1": torch.expm1,
    "log": torch.log, "log2": torch.log2, "log10": torch.log10, "log1p": torch.log1p,
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "sin": torch.sin, "cos": torch.cos,
    "tan": torch.tan, "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
    "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh, "asinh": torch.asinh,
    "acosh": torch.acosh, "atanh": torch.atanh, "erf": torch.erf, "erfc": torch.erfc,
    "lgamma": torch.lgamma, "sigmoid": torch.sigmoid, "floor": torch.floor, "ceil": torch.ceil,
    "trunc": torch.trunc, "round": torch.round, "isnan": torch.isnan, "isinf": torch.isinf,
    "bitwise_not": torch.bitwise_not,
}
_BINARY: dict[str, Callable] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "truediv": torch.div,
    "pow": torch.pow, "atan2": torch.atan2, "fmod": torch.fmod,
    "maximum": torch.maximum, "minimum": torch.minimum, "eq": torch.eq, "ne": torch.ne,
    "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or,
    "bitwise_and": torch.bitwise_and, "bitwise_or": torch.bitwise_or,
    "bitwise_xor": torch.bitwise_xor, "lshift": torch.bitwise_left_shift,
    "rshift": torch.bitwise_right_shift,
}




def _unary(fn: Callable) -> Callable:
    return lambda node, args: fn(args[0])


def _binary(fn: Callable) -> Callable:
    def rule(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
        out = fn(args[0], args[1])
        if out.dtype != _compute_dtype(node.dtype) and node.dtype != torch.bool:
            out = out.to(_compute_dtype(node.dtype))
        return out
    return rule


def _cast(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    return args[0].to(node.dtype).to(_compute_dtype(node.dtype))


def _where(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    return torch.where(args[0], args[1], args[2])


def _check_index(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    bad = (args[0] < 0) | (args[0] >= args[1])
    if bool(bad.any()):
        raise INDEX_ERRORS[int(args[2].reshape(-1)[0])](INDEX_ERROR)
    return args[0]


def _floordiv(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    if node.dtype.is_floating_point:
        return torch.div(args[0], args[1], rounding_mode="floor")
    return _pyfloordiv(args[0], args[1])


def _remainder(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    if not node.dtype.is_floating_point:
        return torch.where(args[1] == 0, torch.zeros_like(args[0]),
                           torch.remainder(args[0], torch.where(args[1] == 0, 1, args[1])))
    return torch.remainder(args[0], args[1])


# primitive -> (the Op, its argument tensors) -> its value (every name of ir/expr.py OPS)
REFERENCE_OPS: dict[str, Callable[[Op, list[torch.Tensor]], torch.Tensor]] = {
    **{name: _unary(fn) for name, fn in _UNARY.items()},
    **{name: _binary(fn) for name, fn in _BINARY.items()},
    "cast": _cast, "where": _where, "check_index": _check_index, "floordiv": _floordiv,
    "remainder": _remainder,
}


def eval_op(node: Op, args: list[torch.Tensor]) -> torch.Tensor:
    rule = REFERENCE_OPS.get(node.op)
    if rule is None:
        raise NotImplementedError(f"reference: op {node.op}")
    if may_divide_by_zero(node) and bool((args[1] == 0).any()):
        raise RuntimeError(ZERO_DIVISION_ERROR)
    return rule(node, args)


class Executor:
    """Runs a GraphIR eagerly with torch ops (see module doc)."""

    def __init__(self, graph: GraphIR):
        self.g = graph

    def __call__(self, args: list[Any]) -> tuple:
        g = self.g
        env: dict[sympy.Symbol, Any] = {}
        for sym, source in g.symbol_sources.items():
            env[sym] = source.value(args)
        bufs: dict[str, Any] = {b.name: args[b.position] for b in [*g.inputs, *g.opaque_inputs]}
        bufs.update({c.name: c.value for c in g.constants})
        for b in g.buffers:
            bufs[b.name] = self.compute(b, bufs, env)
        out = []
        for o in g.outputs:
            if o.kind == "none":
                out.append(None)
            elif o.kind == "value":
                v = o.value
                out.append(eval_index(v, env) if isinstance(v, sympy.Basic) else self.arg(v, bufs, env))
            else:
                out.append(self.view(o.ref, bufs, env))
        return tuple(out)

    def view(self, ref: BufferRef, bufs: dict, env: dict) -> torch.Tensor:
        t = bufs[ref.buf]
        if t is None:          # an effect token an extern returned as None
            return None
        shape = [int(eval_index(s, env)) for s in ref.shape]
        stride = [int(eval_index(s, env)) for s in ref.stride]
        return torch.as_strided(t, shape, stride, t.storage_offset() + int(eval_index(ref.offset, env)))

    def arg(self, x: Any, bufs: dict, env: dict) -> Any:
        if isinstance(x, BufferRef):
            return self.view(x, bufs, env)
        if isinstance(x, OpaqueInput):
            return bufs[x.name]
        if isinstance(x, (list, tuple)):
            return type(x)(self.arg(v, bufs, env) for v in x)
        if isinstance(x, sympy.Basic):
            if x.is_number and not x.is_integer:
                return float(x)
            return eval_index(x, env)
        return x

    def compute(self, b: Buffer, bufs: dict, env: dict) -> torch.Tensor:
        if isinstance(b, Extern):
            return b.target(*self.arg(b.args, bufs, env),
                            **{k: self.arg(v, bufs, env) for k, v in b.kwargs.items()})
        if isinstance(b, ExternOutput):
            t = bufs[b.source]
            for i in b.item:
                t = t[i]
            return t
        shape = [int(eval_index(s, env)) for s in b.shape]
        stride = [int(eval_index(s, env)) for s in b.stride]
        out = torch.empty_strided(shape, stride, dtype=b.dtype)
        if isinstance(b, Scatter):
            return self.scatter(b, out, bufs, env)
        if isinstance(b, Pointwise):
            grid = self._grid(shape, [])
            value = self.eval(b.body, {**env, **dict(zip(index_vars(len(shape)), grid))}, bufs)
            out.copy_(torch.broadcast_to(value, shape) if value.dim() else value.expand(shape))
            return out
        assert isinstance(b, Reduction)
        rshape = [int(eval_index(s, env)) for s in b.reduce_ranges]
        grid = self._grid(shape, rshape)
        local = {**env, **dict(zip(index_vars(len(shape)), grid[:len(shape)])),
                 **dict(zip(index_vars(len(rshape), "r"), grid[len(shape):]))}
        value = torch.broadcast_to(self.eval(b.body, local, bufs), shape + rshape)
        value = value.reshape(shape + [math.prod(rshape)])    # (no -1: the shape may hold a 0)
        out.copy_(self.reduce(value, b.reduce_type, b.dtype))
        return out

    def scatter(self, b: Scatter, out: torch.Tensor, bufs: dict, env: dict) -> torch.Tensor:
        """The initial contents, then one entry after another over all points at once
        (points write distinct elements, so the order among them does not matter)."""
        shape = list(out.shape)
        value = self.eval(b.init, {**env, **dict(zip(index_vars(len(shape)), self._grid(shape, [])))},
                          bufs)
        out.copy_(torch.broadcast_to(value, shape))
        bufs[b.name] = out                      # the update reads the values so far
        points = [int(eval_index(s, env)) for s in b.ranges]
        local = {**env, **dict(zip(index_vars(len(points)), self._grid(points, [])))}
        flat = torch.as_strided(out, (out.numel(),), (1,), out.storage_offset())
        r0 = index_vars(1, "r")[0]
        for r in range(int(eval_index(b.entries, env))):
            local[r0] = r
            idx = torch.as_tensor(eval_index(b.index, local), dtype=torch.int64)
            if b.dynamic is not None:
                idx = idx + self.eval(b.dynamic, local, bufs)
            v = self.eval(b.update, local, bufs)
            idx, v = torch.broadcast_tensors(idx, v)
            idx, v = idx.broadcast_to(points), v.broadcast_to(points)
            flat[idx.reshape(-1)] = v.reshape(-1).to(b.dtype)
        return out

    @staticmethod
    def _grid(shape: list[int], rshape: list[int]) -> list[torch.Tensor]:
        full = shape + rshape
        n = len(full)
        return [torch.arange(s).view([-1 if k == d else 1 for k in range(n)])
                for d, s in enumerate(full)]

    @staticmethod
    def reduce(v: torch.Tensor, kind: str, dtype: torch.dtype) -> torch.Tensor:
        if v.shape[-1] == 0:
            init = {"sum": 0, "prod": 1, "any": False, "all": True}.get(kind)
            if init is None:
                raise RuntimeError(f"reference: {kind} of an empty set")
            return torch.full(v.shape[:-1], init, dtype=dtype)
        if kind == "sum":
            return v.sum(-1)
        if kind == "prod":
            return v.prod(-1)
        if kind in ("max", "min"):
            return v.amax(-1) if kind == "max" else v.amin(-1)
        if kind in ("argmax", "argmin"):
            return v.argmax(-1) if kind == "argmax" else v.argmin(-1)
        if kind == "any":
            return v.any(-1)
        return v.all(-1)

    def eval(self, root: Expr, env: dict, bufs: dict) -> torch.Tensor:
        memo: dict[Expr, torch.Tensor] = {}
        for node in walk(root):
            if isinstance(node, Const):
                memo[node] = torch.tensor(node.value, dtype=_compute_dtype(node.dtype))
            elif isinstance(node, Index):
                memo[node] = torch.as_tensor(eval_index(node.expr, env)).to(
                    _compute_dtype(node.dtype))
            elif isinstance(node, Load):
                t = bufs[node.buf]
                flat = torch.as_strided(t, (t.untyped_storage().nbytes() // t.element_size()
                                            - t.storage_offset(),), (1,), t.storage_offset())
                idx = torch.as_tensor(eval_index(node.index, env), dtype=torch.int64)
                if node.dynamic is not None:
                    idx = idx + memo[node.dynamic]
                memo[node] = flat[idx].to(_compute_dtype(node.dtype))
            else:
                memo[node] = eval_op(node, [memo[a] for a in node.args])
        return memo[root]


class ReferenceTarget(Target):
    """Executes the IR with torch ops (no generated code): the oracle."""

    name = "reference"
    device = "cpu"
    float_sum_dtype = torch.float64       # as the C target: the oracle computes the same IR
    ops = REFERENCE_OPS
    executes_ir = True

    def run_ir(self, graph: GraphIR) -> Callable:
        return Executor(graph)


TARGET = ReferenceTarget()
