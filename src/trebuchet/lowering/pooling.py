"""Lowering rules for max pooling over small windows, and the window geometry every
pooling rule shares: max pool with its indices (1-3 spatial dims) and its backward,
adaptive max pool 2d/3d and its backward; `Window` (kernel, stride, padding, dilation)
and `Adaptive` (windows [floor(o*I/O), ceil((o+1)*I/O))) give each output's window
positions and each input's covering outputs. Average pools are in avg_pooling.py.

A small window is a fixed list of shifted loads, so pooling is a pointwise value that
fuses with its producer (the convolution block's epilogue) and its consumers: a 3x3 max
pool is a max of 9 loads. Each matches eager's CPU kernel (`cpu_max_pool`,
`cpu_adaptive_max_pool`): the window is clipped to the input (padding never read),
positions are visited in row-major order, a max takes a value greater than the current
one or NaN (so NaN propagates and the first maximum's index is kept). A backward sums,
for each input element, the gradients of the outputs covering it whose index names it,
in output order as eager's loop does, rounding to the dtype after each addition.
Windows beyond `MAX_WINDOW` positions (for a backward: inputs covered by more outputs) run
the eager op.
"""
from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import sympy
import torch
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from ..ir.expr import Const, Expr, Index, cast, op
from ..ir.symbolic import clamp
from .pointwise import opmath
from .storage import store_in_output_layout
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
    """A pooling window over the last `n` dims of an input of shape `in_shape`. Declined
    when an element would read more than `MAX_WINDOW` positions: the window's, or for a
    `backward` the outputs covering an input."""

    def __init__(self, in_shape: Sequence[sympy.Expr], out_shape: Sequence[sympy.Expr], n: int,
                 kernel: Any, stride: Any, padding: Any, dilation: Any = 1, backward: bool = False) -> None:
        self.n = n
        self.kernel = _params(kernel, n)
        self.stride = _params(stride, n, self.kernel)
        self.padding = _params(padding, n)
        self.dilation = _params(dilation, n)
        self.sizes = list(in_shape[-n:])
        self.out_sizes = list(out_shape[-n:])
        if backward and self.overlap() > MAX_WINDOW:
            raise LoweringError(f"pooling backward with more than {MAX_WINDOW} outputs covering an input")
        if not backward and math.prod(self.kernel) > MAX_WINDOW:
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
                    pos = clamp(pos, self.sizes[d] - 1)
                elif not self.inside(d):
                    ok = op("logical_and", op("ge", Index(pos), Index(sympy.Integer(0))),
                            op("lt", Index(pos), Index(self.sizes[d])))
                    valid = ok if valid is None else op("logical_and", valid, ok)
                    pos = clamp(pos, self.sizes[d] - 1)
                sub.append(pos)
            yield sub, valid

    def overlap(self) -> int:
        """The most outputs whose windows cover one input."""
        return math.prod(self._span(d) for d in range(self.n))

    def _span(self, d: int) -> int:
        return -(-((self.kernel[d] - 1) * self.dilation[d] + 1) // self.stride[d])

    def covering(self, in_idx: Sequence[sympy.Expr]) -> Iterator[tuple[list[sympy.Expr], Expr | None]]:
        """The outputs whose windows cover input `in_idx` (spatial part), in row-major
        order: the output index (clamped into range) and whether it covers it. Along dim
        d these are o = (i + p - k*dil) / s for the k that divide exactly: at most `span`
        consecutive o, the last floor((i+p)/s)."""
        per_dim = []
        for d, i in enumerate(in_idx):
            s, p, dil = self.stride[d], self.padding[d], self.dilation[d]
            reach = (self.kernel[d] - 1) * dil          # the last window position's offset
            span = self._span(d)
            choices = []
            for j in range(span - 1, -1, -1):
                o = FloorDiv(i + p, s) - j
                off = i + p - o * s                       # k * dilation, if o covers i
                conds = []
                if j > 0:
                    conds.append(_lt(-1, o))
                if (int(self.sizes[d]) - 1 + p) // s - j >= self.out_sizes[d]:
                    conds.append(_lt(o, self.out_sizes[d]))
                if j > 0 or s - 1 > reach:
                    conds.append(_lt(off, reach + 1))
                if dil > 1:
                    conds.append(op("eq", Index(ModularIndexing(off, 1, dil)), Index(sympy.Integer(0))))
                choices.append((clamp(o, self.out_sizes[d] - 1), conds))
            per_dim.append(choices)
        return combine(per_dim)


def flat_index(sub: Sequence[sympy.Expr], sizes: Sequence[Any]) -> sympy.Expr:
    """The index eager's max pools record: the position flattened over the spatial dims."""
    out = sympy.Integer(0)
    for d, s in enumerate(sub):
        out = out * sizes[d] + s
    return out


def _max(a: Expr, b: Expr) -> Expr:
    """NaN-propagating max written as selects: a chain of them vectorizes in GCC, where a
    chain of the C target's `maximum` (NaN tested on its first operand) does not."""
    return op("where", op("isnan", b), b, op("where", op("le", a, b), b, a))


def output_shape(ctx: LoweringContext, k: int = 0) -> tuple[sympy.Expr, ...]:
    meta = ctx.current_meta
    meta = meta[k] if isinstance(meta, (list, tuple)) else meta
    return tuple(sympy.sympify(int(s)) for s in meta.shape)


def check_input(x: TensorValue, n: int) -> None:
    if x.ndim not in (n + 1, n + 2) or not x.dtype.is_floating_point:
        raise LoweringError("pooling of a non-floating input or of unexpected rank")


def _max_pool(ctx: LoweringContext, x: TensorValue, n: int, kernel: Any, stride: Any,
              padding: Any, dilation: Any, ceil_mode: bool) -> tuple[TensorValue, TensorValue]:
    check_input(x, n)
    out_shape = output_shape(ctx)
    win = Window(x.shape, out_shape, n, kernel, stride, padding, dilation)
    acc = opmath(x.dtype)
    lead = x.ndim - n
    if x.ref is None and any(k > s for k, s in zip(win.kernel, win.stride)):
        # Overlapping windows read each input several times: store a computed input once
        # (batch norm + relu before a 3x3/2 pool: measured 1.5x faster than recomputing).
        # Written in memory order, in the output's (its input's) memory format, or the
        # layout plan's for the output.
        x = store_in_output_layout(ctx, x)

    def candidates(idx: Sequence[sympy.Expr]) -> Iterator[tuple[Expr, Expr | None, sympy.Expr]]:
        for sub, valid in win.positions(idx[lead:], repeat_ok=True):
            yield cast(x.load(list(idx[:lead]) + sub), acc), valid, flat_index(sub, win.sizes)

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
        # than the current one, or NaN. `seen`: whether a valid position came before (a
        # flag, not a test of the index: GCC under -fwrapv does not vectorize a chain
        # that compares the selected int64 index); None once one always does.
        cur: Expr = Const(float("-inf"), acc)
        pos: Expr = Const(-1, torch.int64)
        seen: Expr | None = Const(False, torch.bool)
        for v, valid, flat in candidates(idx):
            take = op("logical_or", op("gt", v, cur), op("isnan", v))
            if seen is not None:
                take = op("logical_or", take, op("eq", seen, Const(False, torch.bool)))
            if valid is not None:
                take = op("logical_and", valid, take)
            cur = op("where", take, v, cur)
            pos = op("where", take, Index(flat), pos)
            if seen is not None:
                seen = None if valid is None else op("logical_or", seen, valid)
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


def _and(conds: Sequence[Expr]) -> Expr | None:
    out: Expr | None = None
    for c in conds:
        out = c if out is None else op("logical_and", out, c)
    return out


def _lt(a: sympy.Expr, b: sympy.Expr) -> Expr:
    return op("lt", Index(sympy.sympify(a)), Index(sympy.sympify(b)))


def combine(per_dim: Sequence[Sequence[tuple[sympy.Expr, list[Expr]]]]
            ) -> Iterator[tuple[list[sympy.Expr], Expr | None]]:
    """The row-major product of per-dim choices (index, conditions): each choice's index
    per dim and whether all its conditions hold (None when there are none)."""
    for choice in itertools.product(*per_dim):
        yield [c[0] for c in choice], _and([cond for c in choice for cond in c[1]])


def round_to(value: Expr, dtype: torch.dtype) -> Expr:
    """`value` (computed in opmath) rounded to `dtype` as a store would, kept in opmath:
    eager's loops that add into a float16/bfloat16 tensor round after every addition."""
    return cast(cast(value, dtype), value.dtype)


def _max_grad(ctx: LoweringContext, grad: TensorValue, x: TensorValue, indices: TensorValue, n: int,
              covering: Callable[[Sequence[sympy.Expr]], Iterator[tuple[list[sympy.Expr], Expr | None]]]
              ) -> TensorValue:
    """Max pool's backward: each input sums the gradients of the outputs covering it whose
    index names it, in increasing output order (eager's loop adds into the input in that
    order, in the input's dtype)."""
    if grad.dtype != x.dtype or indices.dtype != torch.int64:
        raise LoweringError("max pool backward with mixed dtypes")
    lead = x.ndim - n
    acc = opmath(x.dtype)
    sizes = list(x.shape[lead:])

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        here = Index(flat_index(idx[lead:], sizes))
        total: Expr = Const(0.0, acc)
        for sub, valid in covering(idx[lead:]):
            at = list(idx[:lead]) + sub
            take = _and([c for c in (valid, op("eq", indices.load(at), here)) if c is not None])
            assert take is not None
            total = op("where", take, round_to(op("add", total, cast(grad.load(at), acc)), x.dtype), total)
        return cast(total, x.dtype)

    origins = merge_origins(grad.origins, indices.origins, (ctx.current_origin,))
    return TensorValue(tuple(x.shape), x.dtype, loader, None, origins)


def _max_pool_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue, n: int,
                       kernel: Any, stride: Any, padding: Any, dilation: Any,
                       indices: TensorValue) -> TensorValue:
    check_input(x, n)
    win = Window(x.shape, grad.shape, n, kernel, stride, padding, dilation, backward=True)
    return _max_grad(ctx, grad, x, indices, n, win.covering)


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


def _fdiv(a: Any, b: int) -> Any:
    return FloorDiv(a, b) if isinstance(a, sympy.Expr) else a // b


class Adaptive:
    """Adaptive pooling windows over the last `n` dims: output o of a dim of input size I
    and output size O covers the inputs [floor(o*I/O), ceil((o+1)*I/O)); input i is
    covered by the outputs [floor(i*O/I), floor(((i+1)*O-1)/I)]."""

    def __init__(self, in_shape: Sequence[sympy.Expr], out_shape: Sequence[sympy.Expr], n: int) -> None:
        sizes, outs = list(in_shape[-n:]), list(out_shape[-n:])
        if any(not isinstance(s, sympy.Integer) for s in sizes + outs) or any(o == 0 for o in outs):
            raise LoweringError("adaptive pooling over symbolic or empty sizes")
        self.n = n
        self.sizes, self.outs = [int(s) for s in sizes], [int(o) for o in outs]
        # per dim: the narrowest and widest window, the fewest and most outputs covering an input
        counts = [[end - start for start, end in map(partial(self.window, d), range(self.outs[d]))]
                  for d in range(n)]
        covers = [[last - first + 1 for first, last in map(partial(self.cover, d), range(self.sizes[d]))]
                  for d in range(n)]
        self.narrowest, self.widest = [min(c) for c in counts], [max(c) for c in counts]
        self.fewest, self.covers = [min(c) for c in covers], [max(c) for c in covers]

    def window(self, d: int, o: Any) -> tuple[Any, Any]:
        """The inputs [start, end) output o reads along dim d."""
        size, out = self.sizes[d], self.outs[d]
        return _fdiv(o * size, out), _fdiv((o + 1) * size - 1, out) + 1

    def cover(self, d: int, i: Any) -> tuple[Any, Any]:
        """The first and last output whose window covers input i along dim d."""
        size, out = self.sizes[d], self.outs[d]
        return _fdiv(i * out, size), _fdiv((i + 1) * out - 1, size)

    def counts(self, out_idx: Sequence[sympy.Expr]) -> list[sympy.Expr]:
        """The window's size per dim at output `out_idx` (spatial part)."""
        return [end - start for start, end in (self.window(d, o) for d, o in enumerate(out_idx))]

    def positions(self, out_idx: Sequence[sympy.Expr], repeat_ok: bool = False
                  ) -> Iterator[tuple[list[sympy.Expr], Expr | None]]:
        """The window positions of output `out_idx` in row-major order, read as the widest
        window's: slots beyond this window's size masked, or (`repeat_ok`) reading its last
        position again, with no mask."""
        per_dim = []
        for d, o in enumerate(out_idx):
            start, end = self.window(d, o)
            slots = []
            for k in range(self.widest[d]):
                if k < self.narrowest[d]:
                    slots.append((start + k, []))
                elif repeat_ok:
                    slots.append((sympy.Min(start + k, end - 1), []))
                else:
                    slots.append((sympy.Min(start + k, self.sizes[d] - 1), [_lt(k, end - start)]))
            per_dim.append(slots)
        return combine(per_dim)

    def covering(self, in_idx: Sequence[sympy.Expr]) -> Iterator[tuple[list[sympy.Expr], Expr | None]]:
        """The outputs whose windows cover input `in_idx`, in row-major order."""
        per_dim = []
        for d, i in enumerate(in_idx):
            first, last = self.cover(d, i)
            per_dim.append([(first + j, []) if j < self.fewest[d]
                            else (sympy.Min(first + j, self.outs[d] - 1), [_lt(j, last - first + 1)])
                            for j in range(self.covers[d])])
        return combine(per_dim)


def adaptive_windows(ctx: LoweringContext, x: TensorValue, n: int) -> tuple[tuple[sympy.Expr, ...], Adaptive]:
    """An adaptive pool's output shape and windows over x's last n dims (LoweringError when
    a window is wider than MAX_WINDOW positions: the eager op runs)."""
    check_input(x, n)
    out_shape = output_shape(ctx)
    win = Adaptive(x.shape, out_shape, n)
    if math.prod(win.widest) > MAX_WINDOW:
        raise LoweringError(f"adaptive pooling window of more than {MAX_WINDOW} positions")
    return out_shape, win


def _adaptive_max_pool(ctx: LoweringContext, x: TensorValue, n: int) -> tuple[TensorValue, TensorValue]:
    """Each output the maximum of its adaptive window, as eager's CPU kernel: from -inf and
    the window's first position, take a value greater than the current one or NaN."""
    out_shape, win = adaptive_windows(ctx, x, n)
    acc = opmath(x.dtype)
    lead = x.ndim - n

    def values(idx: Sequence[sympy.Expr]) -> Expr:
        cur: Expr | None = None
        for sub, _ in win.positions(idx[lead:], repeat_ok=True):
            v = cast(x.load(list(idx[:lead]) + sub), acc)
            cur = v if cur is None else _max(cur, v)
        assert cur is not None
        return cast(cur, x.dtype)

    def indices(idx: Sequence[sympy.Expr]) -> Expr:
        cur: Expr = Const(float("-inf"), acc)
        pos: Expr | None = None
        for sub, valid in win.positions(idx[lead:]):
            v = cast(x.load(list(idx[:lead]) + sub), acc)
            here = Index(flat_index(sub, win.sizes))
            if pos is None:       # the first position: eager's initial index
                pos = here
            take = op("logical_or", op("gt", v, cur), op("isnan", v))
            take = take if valid is None else op("logical_and", valid, take)
            cur = op("where", take, v, cur)
            pos = op("where", take, here, pos)
        assert pos is not None
        return pos

    origins = merge_origins(x.origins, (ctx.current_origin,))
    return (TensorValue(out_shape, x.dtype, values, None, origins),
            TensorValue(out_shape, torch.int64, indices, None, origins))


@register_lowering(aten.adaptive_max_pool2d.default)
def adaptive_max_pool2d(ctx: LoweringContext, x: TensorValue, output_size: Any
                        ) -> tuple[TensorValue, TensorValue]:
    return _adaptive_max_pool(ctx, x, 2)


@register_lowering(aten.adaptive_max_pool3d.default)
def adaptive_max_pool3d(ctx: LoweringContext, x: TensorValue, output_size: Any
                        ) -> tuple[TensorValue, TensorValue]:
    return _adaptive_max_pool(ctx, x, 3)


def _adaptive_max_pool_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue,
                                indices: TensorValue, n: int) -> TensorValue:
    check_input(x, n)
    win = Adaptive(x.shape, grad.shape, n)
    if math.prod(win.covers) > MAX_WINDOW:
        raise LoweringError("adaptive max pool backward with too many overlapping windows")
    return _max_grad(ctx, grad, x, indices, n, win.covering)


@register_lowering(aten.adaptive_max_pool2d_backward.default)
def adaptive_max_pool2d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue,
                                 indices: TensorValue) -> TensorValue:
    return _adaptive_max_pool_backward(ctx, grad, x, indices, 2)


@register_lowering(aten.adaptive_max_pool3d_backward.default)
def adaptive_max_pool3d_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue,
                                 indices: TensorValue) -> TensorValue:
    return _adaptive_max_pool_backward(ctx, grad, x, indices, 3)
