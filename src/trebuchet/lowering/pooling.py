"""Lowering rules for pooling over small windows: max pool with its indices (1-3 spatial
dims) and its backward, avg pool 2d, adaptive avg pool 2d.

A small window is a fixed list of shifted loads, so pooling is a pointwise value that
fuses with its producer (the convolution block's epilogue) and its consumers: a 3x3 max
pool is a max of 9 loads. Each matches eager's CPU kernel (`cpu_max_pool`,
`cpu_avg_pool`): the window is clipped to the input (padding never read), positions are
visited in row-major order, a max takes a value greater than the current one or NaN (so
NaN propagates and the first maximum's index is kept), an average sums in that order in
the op-math type and divides once. The max pool backward sums, for each input element,
the gradients of the outputs whose index names it, in output order as eager's loop does.
Windows larger than `MAX_WINDOW` positions run the eager op.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Iterator, Sequence

import sympy
import torch
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from ..ir.expr import Const, Expr, Index, cast, op
from .pointwise import opmath
from .storage import memory_order, store_in_order
from .registry import LoweringContext, LoweringError, TensorValue, merge_origins, register_lowering

aten = torch.ops.aten

# Positions a window may have before the op stays eager: the expression is one load and
# a select per position (a 7x7 window is 49 of each).
MAX_WINDOW = 49


def _params(values: Sequence[int] | int, n: int, default: Sequence[int] | None = None) -> list[int]:
    if isinstance(values, int):
        return [values] * n
    values = list(values)
    if not values and default is not None:
        return list(default)
    if len(values) == 1:
        return values * n
    if len(values) != n or not all(isinstance(v, int) for v in values):
        raise LoweringError("pooling parameters that are not integers")
    return values


class Window:
    """A pooling window over the last `n` dims of an input of shape `in_shape`."""

    def __init__(self, in_shape: Sequence[sympy.Expr], out_shape: Sequence[sympy.Expr], n: int,
                 kernel: Any, stride: Any, padding: Any, dilation: Any = 1) -> None:
        self.n = n
        self.kernel = _params(kernel, n)
        self.stride = _params(stride, n, self.kernel)
        self.padding = _params(padding, n)
        self.dilation = _params(dilation, n)
        self.sizes = list(in_shape[-n:])
        self.out_sizes = list(out_shape[-n:])
        if math.prod(self.kernel) > MAX_WINDOW:
            raise LoweringError(f"pooling window of more than {MAX_WINDOW} positions")
        if any(not isinstance(s, sympy.Integer) for s in self.sizes + self.out_sizes):
            raise LoweringError("pooling over symbolic spatial sizes")

    def inside(self, d: int) -> bool:
        """Whether every window position along dim d is inside the input (no check needed)."""
        last = (self.out_sizes[d] - 1) * self.stride[d] - self.padding[d]
        return self.padding[d] == 0 and last + (self.kernel[d] - 1) * self.dilation[d] < self.sizes[d]

    def positions(self, out_idx: Sequence[sympy.Expr], repeat_ok: bool = False
                  ) -> Iterator[tuple[list[sympy.Expr], Expr | None]]:
        """Each window position of output element `out_idx` (spatial part), in row-major
        order: the input's spatial index (clamped into range) and whether it is valid
        (None when always). `repeat_ok`: the caller does not mind reading a valid position
        of the window again next to itself (a max): without dilation, a position clamped
        into range is the window's first or last valid one, so no mask is needed (masked
        loads keep GCC from vectorizing the loop)."""
        for ks in itertools.product(*(range(k) for k in self.kernel)):
            sub: list[sympy.Expr] = []
            valid: Expr | None = None
            for d, k in enumerate(ks):
                pos = out_idx[d] * self.stride[d] - self.padding[d] + k * self.dilation[d]
                if not self.inside(d) and repeat_ok and self.dilation[d] == 1:
                    pos = sympy.Max(0, sympy.Min(pos, self.sizes[d] - 1))
                elif not self.inside(d):
                    ok = op("logical_and", op("ge", Index(pos), Index(sympy.Integer(0))),
                            op("lt", Index(pos), Index(self.sizes[d])))
                    valid = ok if valid is None else op("logical_and", valid, ok)
                    pos = sympy.Max(0, sympy.Min(pos, self.sizes[d] - 1))
                sub.append(pos)
            yield sub, valid

    def flat(self, sub: Sequence[sympy.Expr]) -> sympy.Expr:
        """The index eager's max pool records: the position flattened over the spatial dims."""
        out = sympy.Integer(0)
        for d, s in enumerate(sub):
            out = out * self.sizes[d] + s
        return out


def _max(a: Expr, b: Expr) -> Expr:
    """NaN-propagating max written as selects: a chain of them vectorizes in GCC, where a
    chain of the C target's `maximum` (NaN tested on its first operand) does not."""
    return op("where", op("isnan", b), b, op("where", op("le", a, b), b, a))


def _out_shape(ctx: LoweringContext, k: int = 0) -> tuple[sympy.Expr, ...]:
    meta = ctx.current_meta
    meta = meta[k] if isinstance(meta, (list, tuple)) else meta
    return tuple(sympy.sympify(int(s)) for s in meta.shape)


def _check_input(x: TensorValue, n: int) -> None:
    if x.ndim not in (n + 1, n + 2) or not x.dtype.is_floating_point:
        raise LoweringError("pooling of a non-floating input or of unexpected rank")


def _max_pool(ctx: LoweringContext, x: TensorValue, n: int, kernel: Any, stride: Any,
              padding: Any, dilation: Any, ceil_mode: bool) -> tuple[TensorValue, TensorValue]:
    _check_input(x, n)
    out_shape = _out_shape(ctx)
    win = Window(x.shape, out_shape, n, kernel, stride, padding, dilation)
    acc = opmath(x.dtype)
    lead = x.ndim - n
    if x.ref is None and any(k > s for k, s in zip(win.kernel, win.stride)):
        # Overlapping windows read each input several times: store a computed input once
        # (batch norm + relu before a 3x3/2 pool: measured 1.5x faster than recomputing).
        # Written in memory order, in the output's (its input's) memory format.
        order = memory_order(tuple(ctx.out_meta().stride())) or list(range(x.ndim))
        x = ctx.remember(x, store_in_order(ctx, x, order))

    def candidates(idx: Sequence[sympy.Expr]) -> Iterator[tuple[Expr, Expr | None, sympy.Expr]]:
        for sub, valid in win.positions(idx[lead:], repeat_ok=True):
            yield cast(x.load(list(idx[:lead]) + sub), acc), valid, win.flat(sub)

    def values(idx: Sequence[sympy.Expr]) -> Expr:
        cur: Expr | None = None
        for v, valid, _ in candidates(idx):
            if valid is None:
                cur = v if cur is None else _max(cur, v)
            else:
                cur = cur if cur is not None else Const(float("-inf"), acc)
                cur = _max(cur, op("where", valid, v, cur))
        assert cur is not None
        return cast(cur, x.dtype)

    def indices(idx: Sequence[sympy.Expr]) -> Expr:
        # Eager starts from -inf at the first valid position and takes a value greater
        # than the current one, or NaN: idx < 0 marks "nothing valid seen yet".
        cur: Expr = Const(float("-inf"), acc)
        pos: Expr = Const(-1, torch.int64)
        for v, valid, flat in candidates(idx):
            take = op("logical_or", op("logical_or", op("gt", v, cur), op("isnan", v)),
                      op("lt", pos, Const(0, torch.int64)))
            if valid is not None:
                take = op("logical_and", valid, take)
            cur = op("where", take, v, cur)
            pos = op("where", take, Index(flat), pos)
        return pos

    origins = merge_origins(x.origins, (ctx.current_origin,))
    return (TensorValue(out_shape, x.dtype, values, None, origins),
            TensorValue(out_shape, torch.int64, indices, None, origins))


@register_lowering(aten.max_pool2d_with_indices.default)
def max_pool2d_with_indices(ctx: LoweringContext, x: TensorValue, kernel_size: Any,
                            stride: Any = (), padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False) -> tuple[TensorValue, TensorValue]:
    return _max_pool(ctx, x, 2, kernel_size, stride, padding, dilation, ceil_mode)


@register_lowering(aten.max_pool3d_with_indices.default)
def max_pool3d_with_indices(ctx: LoweringContext, x: TensorValue, kernel_size: Any,
                            stride: Any = (), padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False) -> tuple[TensorValue, TensorValue]:
    return _max_pool(ctx, x, 3, kernel_size, stride, padding, dilation, ceil_mode)


def _max_pool_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, n: int,
                       kernel: Any, stride: Any, padding: Any, dilation: Any,
                       indices: TensorValue) -> TensorValue:
    _check_input(x, n)
    if grad.dtype != x.dtype or indices.dtype != torch.int64:
        raise LoweringError("max pool backward with mixed dtypes")
    win = Window(x.shape, grad.shape, n, kernel, stride, padding, dilation)
    lead = x.ndim - n
    acc = opmath(x.dtype)
    # Along dim d, the outputs whose window covers input i are o = (i + p - k*dil) / s for
    # the k that divide exactly: at most `span` consecutive o, the last floor((i+p)/s).
    spans = [-(-((k - 1) * dl + 1) // s) for k, s, dl in zip(win.kernel, win.stride, win.dilation)]
    if math.prod(spans) > MAX_WINDOW:
        raise LoweringError("max pool backward with too many overlapping windows")

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        here = win.flat(idx[lead:])
        total: Expr | None = None
        # Outputs in increasing order (eager's loop adds into the input in that order).
        for js in itertools.product(*(range(s - 1, -1, -1) for s in spans)):
            sub: list[sympy.Expr] = []
            valid: Expr | None = None
            for d, j in enumerate(js):
                i = idx[lead + d]
                o = FloorDiv(i + win.padding[d], win.stride[d]) - j
                off = i + win.padding[d] - o * win.stride[d]     # k * dilation, if covered
                conds = [op("ge", Index(o), Index(sympy.Integer(0))),
                         op("lt", Index(o), Index(win.out_sizes[d])),
                         op("le", Index(off), Index(sympy.Integer((win.kernel[d] - 1) * win.dilation[d])))]
                if win.dilation[d] > 1:
                    conds.append(op("eq", Index(ModularIndexing(off, 1, win.dilation[d])),
                                        Index(sympy.Integer(0))))
                for c in conds:
                    valid = c if valid is None else op("logical_and", valid, c)
                sub.append(sympy.Max(0, sympy.Min(o, win.out_sizes[d] - 1)))
            at = list(idx[:lead]) + sub
            hit = op("eq", indices.load(at), Index(here))
            take = hit if valid is None else op("logical_and", valid, hit)
            g = cast(grad.load(at), acc)
            if total is None:
                total = op("where", take, g, Const(0.0, acc))
            else:   # eager adds in the tensor's dtype: round after every addition
                total = op("where", take, cast(cast(op("add", total, g), x.dtype), acc), total)
        assert total is not None
        return cast(total, x.dtype)

    origins = merge_origins(grad.origins, indices.origins, (ctx.current_origin,))
    return TensorValue(tuple(x.shape), x.dtype, loader, None, origins)


@register_lowering(aten.max_pool2d_with_indices_backward.default)
def max_pool2d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, kernel_size: Any,
                        stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
                        indices: TensorValue) -> TensorValue:
    return _max_pool_backward(ctx, grad, x, 2, kernel_size, stride, padding, dilation, indices)


@register_lowering(aten.max_pool3d_with_indices_backward.default)
def max_pool3d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, kernel_size: Any,
                        stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
                        indices: TensorValue) -> TensorValue:
    return _max_pool_backward(ctx, grad, x, 3, kernel_size, stride, padding, dilation, indices)


@register_lowering(aten.avg_pool2d.default)
def avg_pool2d(ctx: LoweringContext, x: TensorValue, kernel_size: Any, stride: Any = (),
               padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> TensorValue:
    _check_input(x, 2)
    out_shape = _out_shape(ctx)
    win = Window(x.shape, out_shape, 2, kernel_size, stride, padding)
    acc = opmath(x.dtype)
    lead = x.ndim - 2

    def divisor(idx: Sequence[sympy.Expr]) -> Expr:
        if divisor_override:
            return Const(divisor_override, torch.int64)
        # eager: the window clipped to the padded input, then (without count_include_pad)
        # to the input itself
        count = sympy.Integer(1)
        for d in range(2):
            start = idx[lead + d] * win.stride[d] - win.padding[d]
            end = sympy.Min(start + win.kernel[d], win.sizes[d] + win.padding[d])
            if not count_include_pad:
                start, end = sympy.Max(start, 0), sympy.Min(end, win.sizes[d])
            count = count * (end - start)
        return Index(count)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        total: Expr = Const(0.0, acc)
        for sub, valid in win.positions(idx[lead:]):
            v = cast(x.load(list(idx[:lead]) + sub), acc)
            total = op("add", total, v) if valid is None else op("where", valid, op("add", total, v), total)
        return cast(op("truediv", total, cast(divisor(idx), acc)), x.dtype)

    return TensorValue(out_shape, x.dtype, loader, None, merge_origins(x.origins, (ctx.current_origin,)))


@register_lowering(aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(ctx: LoweringContext, x: TensorValue, output_size: Any) -> TensorValue:
    """Output o averages input [floor(o*I/O), ceil((o+1)*I/O)) per spatial dim: a window of
    varying size, read as its largest size with the slots beyond masked; summed in order
    and divided by its height, then its width, as eager's CPU kernel does. (A 1x1 output
    reaches us as a mean: a reduction.)"""
    _check_input(x, 2)
    out_shape = _out_shape(ctx)
    lead = x.ndim - 2
    sizes, outs = list(x.shape[lead:]), list(out_shape[lead:])
    if any(not isinstance(s, sympy.Integer) for s in sizes + outs) or any(o == 0 for o in outs):
        raise LoweringError("adaptive pooling over symbolic or empty sizes")
    sizes_i, outs_i = [int(s) for s in sizes], [int(o) for o in outs]
    widest = [max(-(-(o + 1) * i // n) - (o * i // n) for o in range(n)) for i, n in zip(sizes_i, outs_i)]
    if math.prod(widest) > MAX_WINDOW:
        raise LoweringError(f"adaptive pooling window of more than {MAX_WINDOW} positions")
    acc = opmath(x.dtype)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        starts = [FloorDiv(idx[lead + d] * sizes_i[d], outs_i[d]) for d in range(2)]
        counts = [FloorDiv((idx[lead + d] + 1) * sizes_i[d] - 1, outs_i[d]) + 1 - starts[d]
                  for d in range(2)]
        total: Expr = Const(0.0, acc)
        for ks in itertools.product(*(range(w) for w in widest)):
            sub: list[sympy.Expr] = []
            valid: Expr | None = None
            for d, k in enumerate(ks):
                sub.append(sympy.Min(starts[d] + k, sizes_i[d] - 1))
                if k > 0:   # slot 0 is always inside the window
                    ok = op("lt", Index(sympy.Integer(k)), Index(counts[d]))
                    valid = ok if valid is None else op("logical_and", valid, ok)
            v = cast(x.load(list(idx[:lead]) + sub), acc)
            total = op("add", total, v) if valid is None else op("where", valid, op("add", total, v), total)
        for d in range(2):
            total = op("truediv", total, cast(Index(counts[d]), acc))
        return cast(total, x.dtype)

    return TensorValue(out_shape, x.dtype, loader, None, merge_origins(x.origins, (ctx.current_origin,)))
