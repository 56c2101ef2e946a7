"""Lowering rules for indexed writes: index_put (accumulate or not) and index_copy.

The result is the input with some positions replaced (or added to), computed per output
element, so it fuses with its producers and consumers:
- few written positions (at most SELECT_MAX index entries): a chain of selects, one per
  entry, in index order, so a later duplicate wins (or, accumulating, the sums happen in
  eager's order);
- more entries through one index vector (a static KV cache filled by the prompt): a small
  Reduction first finds, for each position of the indexed dims, the last entry naming it
  (-1: none), and each output element then takes that entry's value or keeps the input;
- a boolean mask with a single value: a select on the mask.
Indices are range-checked as eager does (IndexError). Other cases decline (the eager op
runs as an Extern): accumulating through many entries, masks with many values, values of
another dtype or shape than eager accepts.
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch
from torch.utils._sympy.functions import ModularIndexing

from ..ir.expr import Const, Expr, Index, cast, op
from ..ir.nodes import product
from .misc import indirect, load_indirect
from .pointwise import broadcast_shapes, broadcast_to, opmath
from .reductions import reduce
from .registry import LoweringContext, LoweringError, TensorValue, merge_origins, register_lowering

aten = torch.ops.aten

# Index entries written as a chain of per-element selects; more go through a Reduction.
SELECT_MAX = 4
# The Reduction finding the last writer costs (positions of the indexed dims) x entries.
INVERSE_MAX_WORK = 1 << 24


def _is_static(n: sympy.Expr) -> bool:
    return sympy.sympify(n).is_number


def _add(a: Expr, b: Expr, dtype: torch.dtype) -> Expr:
    """a + b rounded to dtype, as eager's in-place accumulation does it step by step."""
    compute = opmath(dtype)
    return cast(op("add", cast(a, compute), cast(b, compute)), dtype)


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

    if accumulate:
        raise LoweringError("index_put accumulating through many entries (order of duplicates)")
    if nb != 1:
        raise LoweringError("index_put through many entries of a multi-dim index")
    positions = product([x.shape[d] for d in used])
    if _is_static(positions * entries) and int(positions * entries) > INVERSE_MAX_WORK:
        raise LoweringError("index_put through too many entries")
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
        j = sympy.Max(0, sympy.Min(pos, numel - 1))
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
