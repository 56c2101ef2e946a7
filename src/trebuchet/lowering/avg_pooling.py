"""Lowering rules for average pooling: avg pool 2d/3d (1d arrives as 2d) and adaptive avg
pool 2d/3d (1d arrives as 2d, a 1x1 output as a mean), forward and backward.

Each is a pointwise value over small windows (pooling.py's `Window` and `Adaptive`), so it
fuses with its producer and consumers. The forward reads the output's window; the backward
gathers, for each input element, the outputs whose windows cover it (statically at most
`MAX_WINDOW`), in increasing output order. Both compute as eager's CPU kernels
(`cpu_avg_pool*`, `cpu_adaptive_avg_pool*`), bit for bit:

- avg pool: the window clipped to the input, summed in row-major order in the op-math type
  and divided once by eager's divisor (count_include_pad, divisor_override);
- its backward: grad_out / divisor (the divisor converted to the tensor's dtype, as
  c10's BFloat16 / int64 does) rounded to the dtype, added into the input in output order,
  rounding after every addition (eager adds into a tensor of that dtype);
- adaptive avg pool 2d: summed in op-math, divided by the window's height, then its width;
  3d: summed and divided by depth, height, width in the tensor's dtype (rounded each step);
- its backward: grad_out divided by each window size in turn (rounded each time), then
  added in output order as above.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import sympy
import torch

from ..ir.expr import Const, Expr, Index, cast, op
from .pointwise import opmath
from .pooling import MAX_WINDOW, Adaptive, Window, adaptive_windows, check_input, output_shape, round_to

from .registry import LoweringContext, LoweringError, TensorValue, merge_origins, register_lowering
from .storage import store_in_output_layout

aten = torch.ops.aten


def _divisor(win: Window, out_idx: Sequence[sympy.Expr], count_include_pad: bool,
             divisor_override: int | None) -> sympy.Expr:
    """Eager's divisor of output `out_idx` (spatial part): the window clipped to the
    padded input, then (without count_include_pad) to the input itself."""
    if divisor_override:
        return sympy.Integer(divisor_override)
    count = sympy.Integer(1)
    for d in range(win.n):
        start = out_idx[d] * win.stride[d] - win.padding[d]
        end = sympy.Min(start + win.kernel[d], win.sizes[d] + win.padding[d])
        if not count_include_pad:
            start, end = sympy.Max(start, 0), sympy.Min(end, win.sizes[d])
        count = count * (end - start)
    return count


def _add_in_order(total: Expr, value: Expr, valid: Expr | None, dtype: torch.dtype) -> Expr:
    """total + value, rounded to `dtype` as eager's += into a tensor of that dtype, where
    `valid` holds."""
    new = round_to(op("add", total, value), dtype)
    return new if valid is None else op("where", valid, new, total)


def _stored(ctx: LoweringContext, grad: TensorValue, reads: int) -> TensorValue:
    """A computed gradient read at several outputs per element is stored once (in the
    result's memory format) rather than recomputed at each read."""
    if grad.ref is not None or reads <= 1:
        return grad
    return store_in_output_layout(ctx, grad)


def _avg_pool(ctx: LoweringContext, x: TensorValue, n: int, kernel: Any, stride: Any, padding: Any,
              count_include_pad: bool, divisor_override: int | None) -> TensorValue:
    check_input(x, n)
    out_shape = output_shape(ctx)
    win = Window(x.shape, out_shape, n, kernel, stride, padding)
    acc = opmath(x.dtype)
    lead = x.ndim - n

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        total: Expr = Const(0.0, acc)
        for sub, valid in win.positions(idx[lead:]):
            v = cast(x.load(list(idx[:lead]) + sub), acc)
            total = op("add", total, v) if valid is None else op("where", valid, op("add", total, v), total)
        div = _divisor(win, idx[lead:], count_include_pad, divisor_override)
        return cast(op("truediv", total, cast(Index(div), acc)), x.dtype)

    return TensorValue(out_shape, x.dtype, loader, None, merge_origins(x.origins, (ctx.current_origin,)))


@register_lowering(aten.avg_pool2d.default)
def avg_pool2d(ctx: LoweringContext, x: TensorValue, kernel_size: Any, stride: Any = (),
               padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> TensorValue:
    return _avg_pool(ctx, x, 2, kernel_size, stride, padding, count_include_pad, divisor_override)


@register_lowering(aten.avg_pool3d.default)
def avg_pool3d(ctx: LoweringContext, x: TensorValue, kernel_size: Any, stride: Any = (),
               padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> TensorValue:
    return _avg_pool(ctx, x, 3, kernel_size, stride, padding, count_include_pad, divisor_override)


def _avg_pool_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, n: int, kernel: Any,
                       stride: Any, padding: Any, count_include_pad: bool,
                       divisor_override: int | None) -> TensorValue:
    check_input(x, n)
    if grad.dtype != x.dtype:
        raise LoweringError("avg pool backward with mixed dtypes")
    win = Window(x.shape, grad.shape, n, kernel, stride, padding, backward=True)
    grad = _stored(ctx, grad, win.overlap())
    acc = opmath(x.dtype)
    lead = x.ndim - n

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        total: Expr = Const(0.0, acc)
        for sub, valid in win.covering(idx[lead:]):
            div = cast(cast(Index(_divisor(win, sub, count_include_pad, divisor_override)), x.dtype), acc)
            delta = round_to(op("truediv", cast(grad.load(list(idx[:lead]) + sub), acc), div), x.dtype)
            total = _add_in_order(total, delta, valid, x.dtype)
        return cast(total, x.dtype)

    origins = merge_origins(grad.origins, (ctx.current_origin,))
    return TensorValue(tuple(x.shape), x.dtype, loader, None, origins)


@register_lowering(aten.avg_pool2d_backward.default)
def avg_pool2d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, kernel_size: Any,
                        stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool,
                        divisor_override: int | None) -> TensorValue:
    return _avg_pool_backward(ctx, grad, x, 2, kernel_size, stride, padding, count_include_pad,
                              divisor_override)


@register_lowering(aten.avg_pool3d_backward.default)
def avg_pool3d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, kernel_size: Any,
                        stride: Any, padding: Any, ceil_mode: bool, count_include_pad: bool,
                        divisor_override: int | None) -> TensorValue:
    return _avg_pool_backward(ctx, grad, x, 3, kernel_size, stride, padding, count_include_pad,
                              divisor_override)


def _adaptive_avg_pool(ctx: LoweringContext, x: TensorValue, n: int) -> TensorValue:
    """Windows of varying size, read at their largest with the slots beyond masked."""
    out_shape, win = adaptive_windows(ctx, x, n)
    acc = opmath(x.dtype)
    lead = x.ndim - n
    # eager's 3d kernel sums and divides in the tensor's dtype, its 2d kernel in op-math
    step = x.dtype if n == 3 else acc

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        total: Expr = Const(0.0, acc)
        for sub, valid in win.positions(idx[lead:]):
            total = _add_in_order(total, cast(x.load(list(idx[:lead]) + sub), acc), valid, step)
        for count in win.counts(idx[lead:]):
            total = round_to(op("truediv", total, cast(Index(count), acc)), step)
        return cast(total, x.dtype)

    return TensorValue(out_shape, x.dtype, loader, None, merge_origins(x.origins, (ctx.current_origin,)))


@register_lowering(aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(ctx: LoweringContext, x: TensorValue, output_size: Any) -> TensorValue:
    return _adaptive_avg_pool(ctx, x, 2)


@register_lowering(aten._adaptive_avg_pool3d.default)
def adaptive_avg_pool3d(ctx: LoweringContext, x: TensorValue, output_size: Any) -> TensorValue:
    return _adaptive_avg_pool(ctx, x, 3)


def _adaptive_avg_pool_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue,
                                n: int) -> TensorValue:
    check_input(x, n)
    if grad.dtype != x.dtype:
        raise LoweringError("adaptive avg pool backward with mixed dtypes")
    win = Adaptive(x.shape, grad.shape, n)
    if math.prod(win.covers) > MAX_WINDOW:
        raise LoweringError("adaptive avg pool backward with too many overlapping windows")
    grad = _stored(ctx, grad, math.prod(win.covers))
    acc = opmath(x.dtype)
    lead = x.ndim - n

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        total: Expr = Const(0.0, acc)
        for sub, valid in win.covering(idx[lead:]):
            delta = cast(grad.load(list(idx[:lead]) + sub), acc)
            for count in win.counts(sub):
                delta = round_to(op("truediv", delta, cast(cast(Index(count), x.dtype), acc)), x.dtype)
            total = _add_in_order(total, delta, valid, x.dtype)
        return cast(total, x.dtype)

    origins = merge_origins(grad.origins, (ctx.current_origin,))
    return TensorValue(tuple(x.shape), x.dtype, loader, None, origins)


@register_lowering(aten._adaptive_avg_pool2d_backward.default)
def adaptive_avg_pool2d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue) -> TensorValue:
    return _adaptive_avg_pool_backward(ctx, grad, x, 2)


@register_lowering(aten._adaptive_avg_pool3d_backward.default)
def adaptive_avg_pool3d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue) -> TensorValue:
    return _adaptive_avg_pool_backward(ctx, grad, x, 3)
