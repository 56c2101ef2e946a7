"""Lowering rules for indexed writes: index_put (accumulate or not), index_copy,
scatter_add, scatter (many indices per row) and as_strided_scatter.

Where it can, the result is the input with some positions replaced (or added to), computed
per output element, so it fuses with its producers and consumers:
- few written positions (at most SELECT_MAX index entries): a chain of selects, one per
  entry, in index order, so a later duplicate wins (or, accumulating, the sums happen in
  eager's order);
- more entries through one index vector (a static KV cache filled by the prompt): a small
  Reduction first finds, for each position of the indexed dims, the last entry naming it
  (-1: none), and each output element then takes that entry's value or keeps the input;
- a boolean mask with a single value: a select on the mask.
Accumulating through many entries (the embedding backward: one index vector of B*S tokens
into a [vocab, hidden] zeros), scatter_add, scatter with many indices per row (or with
reduce="add"/"multiply") and index_put through many entries of a multi-dim index become a
`Scatter` buffer (`scatter_value`): the
input, then the entries written one after another in eager's order, each point of the
non-indexed dims independently (in parallel); the values' pointwise work is inlined into
it. Each element so receives its contributions in increasing entry order, each add rounded
to the dtype (float16/bfloat16: computed in float32, rounded per step; scatter_add's and
scatter reduce's float16/bfloat16 are kept in float32 and rounded once, as eager's), as
eager's serial CPU kernels do.
Indices are range-checked as eager does (IndexError; RuntimeError for scatter). Other
cases decline (the eager op runs as an Extern): masks with many values, values of another
dtype or shape than eager accepts.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import sympy
import torch
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from ..ir.expr import Const, Expr, Index, Load, cast, op
from ..ir.nodes import BufferRef, Scatter, contiguous_strides, index_vars, product
from ..ir.symbolic import clamp
from . import misc
from .misc import indirect, load_indirect
from .pointwise import broadcast_shapes, broadcast_to, opmath, scalar_expr
from .reductions import reduce
from .registry import (LoweringContext, LoweringError, TensorValue, merge_origins, register_lowering,
                       value_from_ref)

aten = torch.ops.aten

# Index entries written as a chain of per-element selects; more go through a Reduction.
SELECT_MAX = 4
# The Reduction finding the last writer costs (positions of the indexed dims) x entries.
INVERSE_MAX_WORK = 1 << 24


def _is_static(n: sympy.Expr) -> bool:
    return sympy.sympify(n).is_number


def _add(a: Expr, b: Expr, dtype: torch.dtype, combine: str = "add") -> Expr:
    """a + b (or another combine: "mul") rounded to dtype, as eager's in-place
    accumulation does it step by step."""
    compute = opmath(dtype)
    return cast(op(combine, cast(a, compute), cast(b, compute)), dtype)


def _check_values(x: TensorValue, values: TensorValue, target_shape: Sequence[sympy.Expr]) -> None:
    """Decline what eager would reject (it raises; the Extern reproduces that)."""
    if values.dtype != x.dtype:
        raise LoweringError("index_put values of another dtype")
    if values.ndim > len(target_shape):
        raise LoweringError("index_put values with more dims than the indexed shape")
    lead = len(target_shape) - values.ndim
    for k, s in enumerate(values.shape):
        if s != 1 and s != target_shape[lead + k]:
            raise LoweringError("index_put values do not broadcast to the indexed shape")


def _values_index(values: TensorValue, target_idx: Sequence[Any]) -> list[Any]:
    """values' index for an element of the indexed shape (broadcast: size-1 dims at 0)."""
    lead = len(target_idx) - values.ndim
    return [sympy.Integer(0) if values.shape[k] == 1 else target_idx[lead + k]
            for k in range(values.ndim)]


def _mask_put(ctx: LoweringContext, x: TensorValue, start: int, mask: TensorValue,
              values: TensorValue, accumulate: bool) -> TensorValue:
    """x[mask] = v (or += v) with a single value: a select on the mask."""
    m = mask.ndim
    if mask.dtype != torch.bool or start + m > x.ndim or m == 0:
        raise LoweringError("index_put with a uint8 mask or a mask of another rank")
    if tuple(mask.shape) != tuple(x.shape[start:start + m]):
        raise LoweringError("index_put mask of another shape than the dims it indexes")
    if not all(s == 1 for s in values.shape) or values.ndim > x.ndim - m + 1:
        raise LoweringError("index_put through a mask with several values")
    if values.dtype != x.dtype:
        raise LoweringError("index_put values of another dtype")
    zero = [sympy.Integer(0)] * values.ndim

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        old = x.load(idx)
        v = values.load(zero)
        new = _add(old, v, x.dtype) if accumulate else v
        return op("where", mask.load(list(idx[start:start + m])), new, old)

    return TensorValue(x.shape, x.dtype, loader, None,
                       merge_origins(x.origins, values.origins, (ctx.current_origin,)))


def index_put_value(ctx: LoweringContext, x: TensorValue, indices: Sequence[TensorValue | None],
                    values: TensorValue, accumulate: bool = False,
                    wrap_negative: bool = True) -> TensorValue:
    """x with x[indices] = values (+= when accumulating), as a TensorValue."""
    if x.ndim == 0:
        raise LoweringError("index_put into a 0-dim tensor")
    if accumulate and x.dtype == torch.bool:
        raise LoweringError("index_put accumulating booleans")
    indices = list(indices) + [None] * (x.ndim - len(indices))
    if len(indices) > x.ndim:
        raise LoweringError("too many indices")
    used = [k for k, t in enumerate(indices) if t is not None]
    if not used:
        raise LoweringError("index_put without index tensors")
    if any(indices[k].dtype in (torch.bool, torch.uint8) for k in used):
        if len(used) != 1:
            raise LoweringError("index_put mixing a mask with other indices")
        return _mask_put(ctx, x, used[0], indices[used[0]], values, accumulate)
    if any(indices[k].dtype not in (torch.int64, torch.int32) for k in used):
        raise LoweringError("index_put with indices that are not int64/int32")
    bshape = broadcast_shapes(*(indices[k].shape for k in used))
    # Where the indexed dims go in the indexed shape (as in advanced indexing, misc.index).
    block = used == list(range(used[0], used[-1] + 1))
    before = list(range(used[0])) if block else []
    after = [d for d in range(x.ndim) if d not in used and d not in before]
    nb = len(bshape)
    target_shape = ([x.shape[d] for d in before] + list(bshape) + [x.shape[d] for d in after])
    _check_values(x, values, target_shape)
    index_values = {k: broadcast_to(indices[k], bshape) for k in used}
    entries = product(bshape) if bshape else sympy.Integer(1)

    def target_idx(idx: Sequence[sympy.Expr], kk: Sequence[Any]) -> list[Any]:
        return [idx[d] for d in before] + list(kk) + [idx[d] for d in after]

    def hit(idx: Sequence[sympy.Expr], kk: Sequence[sympy.Expr]) -> Expr:
        out: Expr | None = None
        for d in used:
            pos = indirect(index_values[d].load(kk), x.shape[d], wrap_negative)
            eq = op("eq", pos, Index(idx[d]))
            out = eq if out is None else op("logical_and", out, eq)
        return out

    origins = merge_origins(x.origins, values.origins, (ctx.current_origin,))
    if _is_static(entries) and int(entries) <= SELECT_MAX:
        if int(entries) == 0:
            raise LoweringError("index_put with no entries")
        combos = [list(c) for c in _multi_indices([int(s) for s in bshape])]

        def loader(idx: Sequence[sympy.Expr]) -> Expr:
            out = x.load(idx)
            for kk in combos:
                kk_ = [sympy.Integer(k) for k in kk]
                v = values.load(_values_index(values, target_idx(idx, kk_)))
                new = _add(out, v, x.dtype) if accumulate else v
                out = op("where", hit(idx, kk_), new, out)
            return out

        return TensorValue(x.shape, x.dtype, loader, None, origins)

    positions = product([x.shape[d] for d in used])
    if accumulate or nb != 1 or (_is_static(positions * entries)
                                 and int(positions * entries) > INVERSE_MAX_WORK):
        # entries one after another, in eager's (row-major) order over the index shape
        points = before + after

        def entry(k: sympy.Expr) -> list[sympy.Expr]:
            out, rest = [], sympy.Integer(1)
            for j in range(nb - 1, -1, -1):
                out.append(k if nb == 1 else FloorDiv(k, rest) if j == 0
                           else ModularIndexing(k, rest, bshape[j]))
                rest = rest * bshape[j]
            return out[::-1]

        def at(p: Sequence[sympy.Expr], k: sympy.Expr) -> tuple[list[Any], Expr]:
            kk = entry(k)
            full: list[Any] = [None] * x.ndim
            for d, v in zip(points, p):
                full[d] = v
            for d in used:
                full[d] = indirect(index_values[d].load(kk), x.shape[d], wrap_negative)
            tidx = [full[d] for d in before] + kk + [full[d] for d in after]
            return full, values.load(_values_index(values, tidx))

        return scatter_value(ctx, x, [x.shape[d] for d in points], entries, at,
                             "add" if accumulate else None, origins)
    # last[j..] = the last entry k naming position j.. of the indexed dims, -1 if none.
    used_shape = tuple(x.shape[d] for d in used) + (entries,)

    def search(idx: Sequence[sympy.Expr]) -> Expr:
        full = [sympy.Integer(0)] * x.ndim
        for d, i in zip(used, idx):
            full[d] = i
        k = idx[-1]
        return op("where", hit(full, [k]), Index(k), Const(-1, torch.int64))

    last = reduce(ctx, TensorValue(used_shape, torch.int64, search, None, origins),
                  [len(used)], "max", torch.int64)
    k_dim = len(before) - (len(target_shape) - values.ndim)   # the entry dim in values' dims
    by_entry = 0 <= k_dim < values.ndim and values.shape[k_dim] != 1
    if by_entry:
        values = ctx.realize(values)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        old = x.load(idx)
        w = last.load([idx[d] for d in used])
        found = op("ge", w, Const(0, torch.int64))
        if by_entry:
            vidx: list[Any] = _values_index(values, target_idx(idx, [sympy.Integer(0)]))
            vidx[k_dim] = op("maximum", w, Const(0, torch.int64))    # never read out of range
            v = load_indirect(values, vidx)
        else:
            v = values.load(_values_index(values, target_idx(idx, [sympy.Integer(0)])))
        return op("where", found, v, old)

    return TensorValue(x.shape, x.dtype, loader, None, origins)


def scatter_value(ctx: LoweringContext, x: TensorValue, points: Sequence[sympy.Expr],
                  entries: sympy.Expr,
                  at: Callable[[Sequence[sympy.Expr], sympy.Expr], tuple[list[Any], Expr]],
                  combine: str | None, origins: tuple[str, ...]) -> TensorValue:
    """x, then for each point p of `points` (independently) and each entry k < entries in
    increasing order: out[target] = value (combine "add"/"mul": out[target] + value or
    out[target] * value, rounded to x's dtype per step), where `at(p, k)` gives (target:
    x's index, each entry a sympy index or a checked data-dependent Expr; value). Distinct
    points must write distinct elements (they are the non-indexed dims). A `Scatter` buffer;
    returns a value loading it."""
    shape = tuple(x.shape)
    strides = contiguous_strides(shape)
    p = index_vars(len(points))
    k = index_vars(1, "r")[0]
    target, value = at(p, k)
    static: sympy.Expr = sympy.Integer(0)
    dynamic: Expr | None = None
    for t, st in zip(target, strides):
        if isinstance(t, Expr):
            term = op("mul", t, Index(st))
            dynamic = term if dynamic is None else op("add", dynamic, term)
        else:
            static = static + t * st
    name = ctx.new_name()
    value = cast(value, x.dtype)
    update = (value if combine is None
              else _add(Load(name, static, x.dtype, dynamic), value, x.dtype, combine))
    ctx.add(Scatter(name, shape, x.dtype, strides, init=x.load(index_vars(len(shape))),
                    ranges=tuple(points), entries=entries, index=static, dynamic=dynamic,
                    update=update, origins=origins))
    return value_from_ref(BufferRef(name, shape, strides, sympy.Integer(0)), x.dtype, origins)


@register_lowering(aten.scatter_add.default)
def scatter_add(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue,
                src: TensorValue) -> TensorValue:
    """out = x; out[..., index[i], ...] += src[i] along dim for every position i of index."""
    return _scatter_along(ctx, x, dim, index, src, "add")


@register_lowering(aten.scatter.value, aten.scatter.src)
def scatter(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue, src: Any) -> TensorValue:
    """A few indices per row: misc.scatter's per-element select (it fuses). Otherwise a
    Scatter writing the entries of each row in order (the last duplicate wins, as in eager's
    serial CPU kernel)."""
    try:
        return misc.scatter(ctx, x, dim, index, src)
    except LoweringError:
        pass
    return _scatter_along(ctx, x, dim, index, src, None)


@register_lowering(aten.scatter.reduce, aten.scatter.value_reduce)
def scatter_reduce_arg(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue, src: Any,
                       *, reduce: str) -> TensorValue:
    """scatter with reduce="add" or "multiply": each entry added to (multiplied into) its
    element, in order."""
    combine = {"add": "add", "multiply": "mul"}.get(reduce)
    if combine is None:
        raise LoweringError(f"scatter with reduce={reduce!r}")
    return _scatter_along(ctx, x, dim, index, src, combine)


def _scalar_as_1d(t: Any) -> Any:
    if not isinstance(t, TensorValue):
        return t
    return TensorValue((sympy.Integer(1),), t.dtype, lambda idx: t.load([]), None, t.origins)


def _scatter_along(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue, src: Any,
                   combine: str | None) -> TensorValue:
    """scatter/scatter_add as a Scatter: the points are index's positions off `dim`, the
    entries its positions along it. Declines what eager rejects (index of another rank,
    larger than src or than x off dim, not int64/int32; src of another dtype)."""
    if x.ndim == 0 and index.ndim == 0 and (not isinstance(src, TensorValue) or src.ndim == 0):
        # eager treats 0-dim tensors as one element: the same on 1-element views
        if dim not in (0, -1):
            raise LoweringError("scatter of a 0-dim tensor along another dim")
        out = _scatter_along(ctx, _scalar_as_1d(x), 0, _scalar_as_1d(index), _scalar_as_1d(src),
                             combine)
        return TensorValue((), out.dtype, lambda idx: out.load([sympy.Integer(0)]), None,
                           out.origins)
    if x.ndim == 0 or index.ndim != x.ndim:
        raise LoweringError("scatter of a 0-dim tensor or with an index of another rank")
    if index.dtype not in (torch.int64, torch.int32):
        raise LoweringError("scatter with an index that is not int64/int32")
    dim = dim % x.ndim
    tensor_src = isinstance(src, TensorValue)
    if tensor_src and (src.dtype != x.dtype or src.ndim != x.ndim):
        raise LoweringError("scatter src of another dtype or rank")
    for d in range(x.ndim):
        bounds = [src.shape[d]] if tensor_src else []
        if d != dim:
            bounds.append(x.shape[d])
        for b in bounds:
            diff = sympy.sympify(b - index.shape[d])
            if not (diff.is_number and diff >= 0):
                raise LoweringError("scatter index larger than src or the input (or symbolic)")
    if combine is not None and x.dtype == torch.bool:
        raise LoweringError("scatter accumulating booleans")
    points = [index.shape[d] for d in range(x.ndim) if d != dim]

    def at(p: Sequence[sympy.Expr], k: sympy.Expr) -> tuple[list[Any], Expr]:
        idx = list(p[:dim]) + [k] + list(p[dim:])
        target: list[Any] = list(idx)
        target[dim] = indirect(index.load(idx), x.shape[dim], error=RuntimeError)
        value = src.load(idx) if tensor_src else scalar_expr(src, x.dtype)
        return target, value

    origins = merge_origins(x.origins, index.origins, src.origins if tensor_src else (),
                            (ctx.current_origin,))
    if combine is None or x.dtype not in (torch.float16, torch.bfloat16):
        return scatter_value(ctx, x, points, index.shape[dim], at, combine, origins)
    # Eager's scatter_add (and scatter's reduce) of float16/bfloat16 accumulates in float32
    # (the input included) and rounds once at the end: a float32 Scatter, then a cast that
    # fuses into its consumers.
    wide = TensorValue(x.shape, torch.float32, lambda idx: cast(x.load(idx), torch.float32))
    acc = scatter_value(ctx, wide, points, index.shape[dim], at, combine, origins)
    return TensorValue(x.shape, x.dtype, lambda idx: cast(acc.load(idx), x.dtype), None, origins)


def _multi_indices(shape: list[int]) -> list[tuple[int, ...]]:
    """Every index of `shape` in row-major order (eager's order over index entries)."""
    out: list[tuple[int, ...]] = [()]
    for s in shape:
        out = [t + (k,) for t in out for k in range(s)]
    return out


@register_lowering(aten.index_put.default)
def index_put(ctx: LoweringContext, x: TensorValue, indices: Sequence[TensorValue | None],
              values: Any, accumulate: bool = False) -> TensorValue:
    if not isinstance(values, TensorValue):
        raise LoweringError("index_put with a scalar value")
    return index_put_value(ctx, x, indices, values, bool(accumulate))


@register_lowering(aten.index_copy.default)
def index_copy(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue,
               source: TensorValue) -> TensorValue:
    """x with x[..., index[k], ...] = source[..., k, ...] along dim. Eager takes a 1-D (or
    0-dim) int64 index, non-negative, and a source shaped like x but for dim."""
    if x.ndim == 0 or index.ndim > 1 or index.dtype != torch.int64:
        raise LoweringError("index_copy of a 0-dim tensor or with a multi-dim index")
    dim = dim % x.ndim
    count = index.shape[0] if index.ndim else sympy.Integer(1)
    expected = list(x.shape)
    expected[dim] = count
    if source.ndim != x.ndim or list(source.shape) != expected:
        raise LoweringError("index_copy source of another shape")
    if index.ndim == 0:
        idx1 = TensorValue((sympy.Integer(1),), index.dtype, lambda i: index.load([]), None,
                           index.origins)
    else:
        idx1 = index
    return index_put_value(ctx, x, [None] * dim + [idx1], source, False, wrap_negative=False)


@register_lowering(aten.as_strided_scatter.default)
def as_strided_scatter(ctx: LoweringContext, x: TensorValue, src: TensorValue, size: Sequence[Any],
                       stride: Sequence[Any], storage_offset: Any = 0) -> TensorValue:
    """x with the elements of the view `as_strided(size, stride, offset)` of its memory
    replaced by src (eager: clone x in its layout, copy src into the view). Lowered when
    the view is dense and non-overlapping (every position in a range of the memory once,
    as the views AOTAutograd makes of a gradient's base are): memory position k takes the
    src element at k - offset, decoded by the view's strides; other positions keep x."""
    size = [sympy.sympify(s) for s in size]
    stride = [sympy.sympify(s) for s in stride]
    offset = sympy.sympify(storage_offset)
    if src.dtype != x.dtype or [*src.shape] != size:
        raise LoweringError("as_strided_scatter with a src of another dtype or shape")
    if not all(_is_static(v) for v in [*size, *stride, offset, *x.shape]):
        raise LoweringError("as_strided_scatter with symbolic sizes")
    numel = _dense_numel(size, stride)
    # x's memory order: eager's clone keeps a dense layout's strides.
    out_stride = [sympy.sympify(int(s)) for s in ctx.out_meta().stride()]
    _dense_numel(list(x.shape), out_stride)
    if product(x.shape) < offset + numel:
        raise LoweringError("as_strided_scatter view beyond the tensor")

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        pos = sum((i * s for i, s in zip(idx, out_stride)), sympy.Integer(0)) - offset
        inside = op("logical_and", op("ge", Index(pos), Index(sympy.Integer(0))),
                    op("lt", Index(pos), Index(numel)))
        j = clamp(pos, numel - 1)
        src_idx = [sympy.Integer(0) if size[d] == 1 else
                   ModularIndexing(j, stride[d], size[d]) for d in range(len(size))]
        return op("where", inside, src.load(src_idx), x.load(idx))

    return TensorValue(tuple(x.shape), x.dtype, loader, None,
                       merge_origins(x.origins, src.origins, (ctx.current_origin,)))


def _dense_numel(size: Sequence[sympy.Expr], stride: Sequence[sympy.Expr]) -> sympy.Expr:
    """The element count of a layout that covers a range of memory once (declines others)."""
    expected = sympy.Integer(1)
    for d in sorted((d for d in range(len(size)) if size[d] != 1), key=lambda d: stride[d]):
        if stride[d] != expected:
            raise LoweringError("as_strided_scatter through a layout that is not dense")
        expected = expected * size[d]
    return expected
