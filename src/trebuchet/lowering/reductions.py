"""Lowering rules for reductions: sum, mean, prod, amax/amin, max/min with
indices, argmax/argmin, any/all, var/std/var_mean, logsumexp.

Each reduction becomes one `Reduction` buffer whose body loads its (possibly
fused) input; keepdim is a view on top. Mean and variance are built from sums
so the scheduler can put mean, variance and their epilogue in one kernel.
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from ..ir.expr import Const, Expr, cast, op
from ..ir.nodes import BufferRef, Reduction, contiguous_strides, index_vars, product
from .pointwise import pointwise
from .registry import (LoweringContext, LoweringError, TensorValue, register_lowering,
                       value_from_ref)

aten = torch.ops.aten


def norm_dims(dims: Any, ndim: int) -> list[int]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    out = sorted({d % ndim if ndim else 0 for d in dims})
    return [d for d in out if d < max(ndim, 1)] if ndim else []


def reduce(ctx: LoweringContext, x: TensorValue, dims: Sequence[int], reduce_type: str,
           out_dtype: torch.dtype, keepdim: bool = False,
           acc_dtype: torch.dtype | None = None) -> TensorValue:
    """A Reduction buffer over `dims` of x; returns the (keepdim-viewed) result."""
    if x.ndim == 0:
        dims = []
    kept = [d for d in range(x.ndim) if d not in dims]
    out_shape = tuple(x.shape[d] for d in kept)
    rranges = tuple(x.shape[d] for d in dims)
    ivars, rvars = index_vars(len(kept)), index_vars(len(dims), "r")
    full: list[sympy.Expr] = [sympy.Integer(0)] * x.ndim
    for d, v in zip(kept, ivars):
        full[d] = v
    for d, v in zip(dims, rvars):
        full[d] = v
    body = x.load(full)
    if acc_dtype is not None:
        body = cast(body, acc_dtype)
    name = ctx.new_name()
    strides = contiguous_strides(out_shape)
    origins = x.origins + (ctx.current_origin,)
    ctx.add(Reduction(name, out_shape, out_dtype, strides, body=body, reduce_ranges=rranges,
                      reduce_type=reduce_type, origins=origins))
    value = value_from_ref(BufferRef(name, out_shape, strides, sympy.Integer(0)), out_dtype)
    return keep_dims(value, x.ndim, dims) if keepdim else value


def keep_dims(value: TensorValue, ndim: int, dims: Sequence[int]) -> TensorValue:
    """Re-insert reduced dims as size 1 (a view)."""
    kept = [d for d in range(ndim) if d not in dims]
    shape = tuple(sympy.Integer(1) if d in dims else value.shape[kept.index(d)]
                  for d in range(ndim))

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        return value.load([idx[d] for d in kept])

    ref = None
    if value.ref is not None:
        stride = tuple(sympy.Integer(0) if d in dims else value.ref.stride[kept.index(d)]
                       for d in range(ndim))
        ref = BufferRef(value.ref.buf, shape, stride, value.ref.offset)
    return TensorValue(shape, value.dtype, loader, ref, value.origins)


def acc_type(ctx: LoweringContext, dtype: torch.dtype) -> torch.dtype:
    """The accumulator of a sum whose values are `dtype`: float64 sums in float64, other
    float sums in the target's `float_sum_dtype` (ctx.float_acc: float64 on CPUs, where it
    matches eager's cascaded sums within tolerance at little cost; float32 on GPUs, as
    eager's CUDA sums, where float64 conversions would cost more than the memory traffic),
    integer sums in int64."""
    if dtype == torch.float64:
        return torch.float64
    if dtype.is_floating_point:
        return ctx.float_acc
    return torch.int64


@register_lowering(aten.sum.dim_IntList, aten.sum.default)
def sum_(ctx: LoweringContext, x: TensorValue, dims: Any = None, keepdim: bool = False, *,
         dtype: torch.dtype | None = None) -> TensorValue:
    out = dtype or (x.dtype if (x.dtype.is_floating_point or x.dtype.is_complex)
                    else torch.int64)
    dims_ = norm_dims(dims, x.ndim)
    if dtype is not None:
        x = pointwise(ctx, [x], lambda a: a, x.dtype, dtype)
    return reduce(ctx, x, dims_, "sum", out, keepdim, acc_type(ctx, out))


@register_lowering(aten.prod.dim_int, aten.prod.default)
def prod(ctx: LoweringContext, x: TensorValue, dim: Any = None, keepdim: bool = False, *,
         dtype: torch.dtype | None = None) -> TensorValue:
    out = dtype or (x.dtype if x.dtype.is_floating_point else torch.int64)
    if dtype is not None:
        x = pointwise(ctx, [x], lambda a: a, x.dtype, dtype)
    return reduce(ctx, x, norm_dims(dim, x.ndim), "prod", out, keepdim, acc_type(ctx, out))


@register_lowering(aten.mean.dim, aten.mean.default)
def mean(ctx: LoweringContext, x: TensorValue, dims: Any = None, keepdim: bool = False, *,
         dtype: torch.dtype | None = None) -> TensorValue:
    out = dtype or x.dtype
    if not out.is_floating_point:
        raise LoweringError("mean of integers")
    dims_ = norm_dims(dims, x.ndim)
    total = reduce(ctx, x, dims_, "sum", torch.float64 if out == torch.float64 else torch.float32,
                   keepdim, acc_type(ctx, out))
    count = product([x.shape[d] for d in dims_]) if x.ndim else sympy.Integer(1)
    return pointwise(ctx, [total, count], lambda s, n: op("truediv", s, n),
                     total.dtype, out)


@register_lowering(aten.amax.default, aten.amin.default)
def amax_amin(ctx: LoweringContext, x: TensorValue, dims: Any = (), keepdim: bool = False) -> TensorValue:
    kind = "max" if ctx.current_target == aten.amax.default else "min"
    if x.dtype == torch.bool:
        kind = "any" if kind == "max" else "all"
    return reduce(ctx, x, norm_dims(dims, x.ndim), kind, x.dtype, keepdim)


@register_lowering(aten.max.dim, aten.min.dim)
def max_min_dim(ctx: LoweringContext, x: TensorValue, dim: int, keepdim: bool = False) -> tuple:
    is_max = ctx.current_target == aten.max.dim
    dims = norm_dims(dim, x.ndim)
    if x.dtype == torch.bool:
        raise LoweringError("bool max.dim")
    values = reduce(ctx, x, dims, "max" if is_max else "min", x.dtype, keepdim)
    indices = reduce(ctx, x, dims, "argmax" if is_max else "argmin", torch.int64, keepdim)
    return values, indices


@register_lowering(aten.argmax.default, aten.argmin.default)
def argmax_argmin(ctx: LoweringContext, x: TensorValue, dim: int | None = None,
                  keepdim: bool = False) -> TensorValue:
    kind = "argmax" if ctx.current_target == aten.argmax.default else "argmin"
    if x.dtype == torch.bool:
        raise LoweringError("bool argmax")
    if dim is None:
        if keepdim:
            raise LoweringError("argmax keepdim without dim")
        from .views import reshape_value
        x = reshape_value(x, (product(x.shape),))
        dim = 0
    return reduce(ctx, x, norm_dims(dim, x.ndim), kind, torch.int64, keepdim)


@register_lowering(aten.any.dim, aten.any.dims, aten.any.default, aten.all.dim, aten.all.dims,
                   aten.all.default)
def any_all(ctx: LoweringContext, x: TensorValue, dim: Any = None, keepdim: bool = False) -> TensorValue:
    kind = "any" if ctx.current_target in (aten.any.dim, aten.any.dims, aten.any.default) else "all"
    xb = pointwise(ctx, [x], lambda a: cast(a, torch.bool), x.dtype, torch.bool)
    out_dtype = torch.uint8 if x.dtype == torch.uint8 else torch.bool
    r = reduce(ctx, xb, norm_dims(dim, x.ndim), kind, torch.bool, keepdim)
    if out_dtype != torch.bool:
        r = pointwise(ctx, [r], lambda a: a, torch.bool, out_dtype)
    return r


def _variance(ctx: LoweringContext, x: TensorValue, dims: Any, correction: Any,
              keepdim: bool) -> tuple[TensorValue, TensorValue]:
    """(variance, mean): two passes over each row, which the scheduler fuses into one kernel."""
    if not x.dtype.is_floating_point:
        raise LoweringError("variance of integers")
    dims_ = norm_dims(dims, x.ndim)
    n = product([x.shape[d] for d in dims_]) if x.ndim else sympy.Integer(1)
    acc = acc_type(ctx, x.dtype)
    total = reduce(ctx, x, dims_, "sum", acc, True, acc)
    mean_k = pointwise(ctx, [total, n], lambda s, c: op("truediv", s, c), acc, acc)
    from .pointwise import broadcast_to
    centered = pointwise(ctx, [x, broadcast_to(mean_k, x.shape)],
                         lambda a, m: op("sub", cast(a, acc), m), acc, acc)
    sq = reduce(ctx, pointwise(ctx, [centered], lambda c: op("mul", c, c), acc, acc),
                dims_, "sum", acc, keepdim, acc)
    corr = 1 if correction is None else correction
    denom = n - corr

    def var_fn(s: Expr, d: Expr) -> Expr:
        # eager gives inf/nan when n <= correction; max(0, d) keeps the same signs.
        return op("truediv", s, op("maximum", d, Const(0, d.dtype)))

    var = pointwise(ctx, [sq, denom], var_fn, acc, x.dtype)
    mean_out = mean_k if keepdim else pointwise(
        ctx, [reduce_view(total, x.ndim, dims_), n],
        lambda s, c: op("truediv", s, c), acc, acc)
    mean_out = pointwise(ctx, [mean_out], lambda m: m, acc, x.dtype)
    return var, mean_out


def reduce_view(keepdim_value: TensorValue, ndim: int, dims: Sequence[int]) -> TensorValue:
    """Drop the size-1 reduced dims of a keepdim result (a view)."""
    kept = [d for d in range(ndim) if d not in dims]
    shape = tuple(keepdim_value.shape[d] for d in kept)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        full = [sympy.Integer(0)] * ndim
        for d, i in zip(kept, idx):
            full[d] = i
        return keepdim_value.load(full)

    return TensorValue(shape, keepdim_value.dtype, loader, None, keepdim_value.origins)


@register_lowering(aten.var.correction, aten.var.dim, aten.var.default)
def var(ctx: LoweringContext, x: TensorValue, dims: Any = None, unbiased: Any = None,
        keepdim: bool = False, *, correction: Any = None) -> TensorValue:
    if ctx.current_target == aten.var.dim or isinstance(unbiased, bool):
        correction = 1 if unbiased in (None, True) else 0
    elif ctx.current_target == aten.var.default:
        correction = 1 if unbiased in (None, True) else 0
    return _variance(ctx, x, dims, correction, keepdim)[0]


@register_lowering(aten.var_mean.correction)
def var_mean(ctx: LoweringContext, x: TensorValue, dims: Any = None, *, correction: Any = None,
             keepdim: bool = False) -> tuple:
    return _variance(ctx, x, dims, correction, keepdim)


@register_lowering(aten.std.correction)
def std(ctx: LoweringContext, x: TensorValue, dims: Any = None, *, correction: Any = None,
        keepdim: bool = False) -> TensorValue:
    v = _variance(ctx, x, dims, correction, keepdim)[0]
    return pointwise(ctx, [v], lambda a: op("sqrt", a), torch.float32 if v.dtype != torch.float64
                     else v.dtype, v.dtype)


@register_lowering(aten.logsumexp.default)
def logsumexp(ctx: LoweringContext, x: TensorValue, dims: Any, keepdim: bool = False) -> TensorValue:
    if not x.dtype.is_floating_point:
        raise LoweringError("logsumexp of integers")
    from .pointwise import broadcast_to
    dims_ = norm_dims(dims, x.ndim)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    m = reduce(ctx, x, dims_, "max", x.dtype, True)
    # A row of -inf (or inf) keeps the max out of the subtraction, as eager does.
    m_safe = pointwise(ctx, [m], lambda a: op("where", op("isinf", a), Const(0, a.dtype), a),
                       compute, compute)
    e = pointwise(ctx, [x, broadcast_to(m_safe, x.shape)],
                  lambda a, b: op("exp", op("sub", a, b)), compute, compute)
    s = reduce(ctx, e, dims_, "sum", compute, True, acc_type(ctx, compute))
    out = pointwise(ctx, [s, m_safe], lambda a, b: op("add", op("log", a), b), compute, x.dtype)
    return out if keepdim else reduce_view(out, x.ndim, dims_)


@register_lowering(aten.linalg_vector_norm.default)
def vector_norm(ctx: LoweringContext, x: TensorValue, ord: Any = 2, dim: Any = None,
                keepdim: bool = False, *, dtype: torch.dtype | None = None) -> TensorValue:
    if not x.dtype.is_floating_point:
        raise LoweringError("norm of integers")
    out = dtype or x.dtype
    compute = torch.float64 if out == torch.float64 else torch.float32
    dims = norm_dims(dim, x.ndim)
    a = pointwise(ctx, [x], lambda v: op("abs", v), compute, compute)
    inf = float("inf")
    if ord in (inf, -inf):
        r = reduce(ctx, a, dims, "max" if ord == inf else "min", compute, keepdim)
        return pointwise(ctx, [r], lambda v: v, compute, out)
    if ord == 0:
        nz = pointwise(ctx, [x], lambda v: cast(op("ne", v, Const(0, v.dtype)), compute),
                       x.dtype if x.dtype not in (torch.float16, torch.bfloat16) else compute,
                       compute)
        r = reduce(ctx, nz, dims, "sum", compute, keepdim, acc_type(ctx, compute))
        return pointwise(ctx, [r], lambda v: v, compute, out)
    if ord == 1:
        r = reduce(ctx, a, dims, "sum", compute, keepdim, acc_type(ctx, compute))
        return pointwise(ctx, [r], lambda v: v, compute, out)
    if ord == 2:
        sq = pointwise(ctx, [a], lambda v: op("mul", v, v), compute, compute)
        r = reduce(ctx, sq, dims, "sum", compute, keepdim, acc_type(ctx, compute))
        return pointwise(ctx, [r], lambda v: op("sqrt", v), compute, out)
    p = float(ord)
    powed = pointwise(ctx, [a], lambda v: op("pow", v, Const(p, compute)), compute, compute)
    r = reduce(ctx, powed, dims, "sum", compute, keepdim, acc_type(ctx, compute))
    return pointwise(ctx, [r], lambda v: op("pow", v, Const(1.0 / p, compute)), compute, out)
