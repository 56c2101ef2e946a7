"""Lowering rules for creation ops, concatenation, padding and indexed loads:
full/scalar_tensor/iota/arange/empty, cat, constant_pad_nd, gather, index,
index_select, embedding, and scatter with few indices per output row.
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from ..ir.expr import INDEX_ERRORS, Const, Expr, Index, Load, cast, op
from ..ir.symbolic import clamp
from .pointwise import broadcast_shapes, broadcast_to, const_value, scalar_expr
from .registry import LoweringContext, LoweringError, TensorValue, register_lowering

aten = torch.ops.aten
prims = torch.ops.prims


def _check_device(device: Any) -> None:
    if device is not None and torch.device(device).type != "cpu":
        raise LoweringError("non-CPU device")


def _shape(sizes: Sequence[Any]) -> tuple[sympy.Expr, ...]:
    return tuple(sympy.sympify(s) for s in sizes)


@register_lowering(aten.full.default)
def full(ctx: LoweringContext, sizes: Sequence[Any], value: Any, *, dtype: Any = None,
         layout: Any = None, device: Any = None, pin_memory: Any = None) -> TensorValue:
    _check_device(device)
    dtype = dtype or ctx.out_dtype()
    c = scalar_expr(value, dtype)
    return TensorValue(_shape(sizes), dtype, lambda idx: c, None, (ctx.current_origin,))


@register_lowering(aten.scalar_tensor.default)
def scalar_tensor(ctx: LoweringContext, value: Any, *, dtype: Any = None, layout: Any = None,
                  device: Any = None, pin_memory: Any = None) -> TensorValue:
    _check_device(device)
    dtype = dtype or ctx.out_dtype()
    # Unlike full, eager's scalar_tensor converts a float unchecked: 70000.0 in float16 is inf.
    c = scalar_expr(value, dtype, wrap=dtype.is_floating_point)
    return TensorValue((), dtype, lambda idx: c, None, (ctx.current_origin,))


@register_lowering(aten.empty.memory_format, aten.empty_strided.default,
                   aten.new_empty.default, aten.new_empty_strided.default)
def empty(ctx: LoweringContext, *args: Any, dtype: Any = None, layout: Any = None,
          device: Any = None, pin_memory: Any = None, memory_format: Any = None) -> TensorValue:
    _check_device(device)
    meta = ctx.out_meta()
    # Contents are unspecified; zeros are a valid choice and keep results deterministic.
    return const_value(0, meta.dtype, _shape(meta.shape))


@register_lowering(aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
                   aten.empty_like.default)
def like(ctx: LoweringContext, x: TensorValue, *args: Any, **kwargs: Any) -> TensorValue:
    meta = ctx.out_meta()
    target = ctx.current_target
    value = {aten.zeros_like.default: 0, aten.ones_like.default: 1,
             aten.empty_like.default: 0}.get(target, args[0] if args else kwargs.get("fill_value"))
    return TensorValue(x.shape, meta.dtype, lambda idx, c=scalar_expr(value, meta.dtype): c)


@register_lowering(prims.iota.default)
def iota(ctx: LoweringContext, length: Any, *, start: Any, step: Any, dtype: torch.dtype,
         device: Any = None, requires_grad: bool = False) -> TensorValue:
    _check_device(device)
    start, step = sympy.sympify(start), sympy.sympify(step)
    return TensorValue((sympy.sympify(length),), dtype,
                       lambda idx: cast(Index(start + idx[0] * step), dtype))


@register_lowering(aten.arange.start_step, aten.arange.default, aten.arange.start)
def arange(ctx: LoweringContext, *args: Any, dtype: Any = None, layout: Any = None,
           device: Any = None, pin_memory: Any = None) -> TensorValue:
    _check_device(device)
    meta = ctx.out_meta()
    args = tuple(int(a) if isinstance(a, bool) else a for a in args)
    start, step = (0, 1)
    if len(args) >= 2:
        start = args[0]
    if len(args) >= 3:
        step = args[2]
    if not all(isinstance(v, int) or (isinstance(v, sympy.Expr) and v.is_integer)
               for v in (start, step)):
        # float ranges: eager computes start + i * step in double
        def loader(idx: Sequence[sympy.Expr]) -> Expr:
            i = cast(Index(idx[0]), torch.float64)
            v = op("add", Const(float(start), torch.float64),
                   op("mul", i, Const(float(step), torch.float64)))
            return cast(v, meta.dtype)
        return TensorValue(_shape(meta.shape), meta.dtype, loader)
    return TensorValue(_shape(meta.shape), meta.dtype,
                       lambda idx: cast(Index(sympy.sympify(start) + idx[0] * step), meta.dtype))


@register_lowering(aten.cat.default)
def cat(ctx: LoweringContext, tensors: Sequence[TensorValue], dim: int = 0) -> TensorValue:
    meta = ctx.out_meta()
    parts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    if not parts:
        return const_value(0, meta.dtype, _shape(meta.shape))
    dim = dim % parts[0].ndim
    offsets = [sympy.Integer(0)]
    for t in parts:
        offsets.append(offsets[-1] + t.shape[dim])
    shape = list(parts[0].shape)
    shape[dim] = offsets[-1]
    dtype = meta.dtype

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        # A chain of selects: the last part whose start the index has passed.
        i = Index(idx[dim])
        result: Expr | None = None
        for k in range(len(parts) - 1, -1, -1):
            sub = list(idx)
            sub[dim] = idx[dim] - offsets[k]
            # Clamp so every branch's load stays inside its part.
            sub[dim] = clamp(sub[dim], parts[k].shape[dim] - 1)
            val = cast(parts[k].load(sub), dtype)
            if result is None:
                result = val
            else:
                result = op("where", op("lt", i, Index(offsets[k + 1])), val, result)
        return result

    return TensorValue(tuple(shape), dtype, loader, None, sum((t.origins for t in parts), ()))


@register_lowering(aten.constant_pad_nd.default)
def constant_pad_nd(ctx: LoweringContext, x: TensorValue, pad: Sequence[Any],
                    value: Any = 0) -> TensorValue:
    pads = [sympy.sympify(p) for p in pad]
    shape = list(x.shape)
    lows: dict[int, sympy.Expr] = {}
    for k in range(len(pads) // 2):
        d = x.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        if (lo.is_number and lo < 0) or (hi.is_number and hi < 0):
            raise LoweringError("negative padding")
        lows[d] = lo
        shape[d] = x.shape[d] + lo + hi
    fill = scalar_expr(value, x.dtype)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        inside: Expr | None = None
        sub = list(idx)
        for d, lo in lows.items():
            pos = idx[d] - lo
            ok = op("logical_and", op("ge", Index(pos), Index(sympy.Integer(0))),
                    op("lt", Index(pos), Index(x.shape[d])))
            inside = ok if inside is None else op("logical_and", inside, ok)
            sub[d] = clamp(pos, x.shape[d] - 1)
        val = x.load(sub)
        return val if inside is None else op("where", inside, val, fill)

    return TensorValue(tuple(shape), x.dtype, loader, None, x.origins)


def indirect(idx_expr: Expr, size: sympy.Expr, wrap_negative: bool = False,
             error: type[Exception] = IndexError) -> Expr:
    """A data-dependent index. Values out of range make the call raise `error`, eager's
    type for the op (IndexError, or RuntimeError for gather and scatter), and are never
    read; negative values count from the end only where eager allows that (advanced
    indexing, not gather/index_select/embedding)."""
    if size == 0:
        raise LoweringError("indexing into a zero-size dimension")   # eager raises
    i = cast(idx_expr, torch.int64)
    if wrap_negative:
        i = op("where", op("lt", i, Const(0, torch.int64)), op("add", i, Index(size)), i)
    bit = next(b for b, e in INDEX_ERRORS.items() if e is error)
    return op("check_index", i, Index(size), Const(bit, torch.int64))


def load_indirect(x: TensorValue, idx: list[Any]) -> Expr:
    """Load a materialized x at an index whose entries may be Exprs (data-dependent)."""
    if x.ref is None:
        raise LoweringError("indirect load from an unmaterialized value")
    dynamic: Expr | None = None
    static = x.ref.offset
    for i, st in zip(idx, x.ref.stride):
        if isinstance(i, Expr):
            term = op("mul", i, Index(st))
            dynamic = term if dynamic is None else op("add", dynamic, term)
        else:
            static = static + i * st
    return Load(x.ref.buf, static, x.dtype, dynamic)


@register_lowering(aten.gather.default)
def gather(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue,
           sparse_grad: bool = False) -> TensorValue:
    x = ctx.realize(x)
    dim = dim % max(x.ndim, 1)
    if x.ndim == 0:
        raise LoweringError("gather of 0-dim")

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        pos = indirect(index.load(idx), x.shape[dim], error=RuntimeError)
        full: list[Any] = list(idx)
        full[dim] = pos
        return load_indirect(x, full)

    return TensorValue(index.shape, x.dtype, loader, None, x.origins)


# scatter.value writes at most this many positions per output row as a pointwise select
# (cross-entropy's backward puts one -1 per row of the class dimension).
SCATTER_MAX_PER_ROW = 4


@register_lowering(aten.scatter.value, aten.scatter.src)
def scatter(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue, src: Any) -> TensorValue:
    """out = x with out[..., index[..., k, ...], ...] = src along `dim`, computed per output
    element: it takes src where one of its row's K indices names it, else x. Indices are
    range-checked like eager's. Lowered only where the result is deterministic and cheap:
    index as large as x in every other dim, and K <= SCATTER_MAX_PER_ROW for a scalar
    value (equal duplicates are harmless) or K == 1 for a src tensor (duplicates with
    different values leave eager's choice unspecified)."""
    if x.ndim == 0 or index.ndim != x.ndim:
        raise LoweringError("scatter of 0-dim or with an index of another rank")
    dim = dim % x.ndim
    if any(index.shape[d] != x.shape[d] for d in range(x.ndim) if d != dim):
        raise LoweringError("scatter index smaller than the input outside dim")
    per_row = index.shape[dim]
    if not per_row.is_number or int(per_row) < 1:
        raise LoweringError("scatter with a symbolic or empty index dim")
    per_row = int(per_row)
    tensor_src = isinstance(src, TensorValue)
    if per_row > (1 if tensor_src else SCATTER_MAX_PER_ROW):
        raise LoweringError("scatter with too many indices per row")
    if tensor_src and (src.ndim != x.ndim or any(src.shape[d] < index.shape[d] for d in range(x.ndim))):
        raise LoweringError("scatter src smaller than its index")
    if x.shape[dim] == 0:
        raise LoweringError("scatter into an empty dim")

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        out = x.load(idx)
        for k in range(per_row):
            at = list(idx)
            at[dim] = sympy.Integer(k)
            pos = indirect(index.load(at), x.shape[dim], error=RuntimeError)
            hit = op("eq", pos, Index(idx[dim]))
            val = cast(src.load(at), x.dtype) if tensor_src else scalar_expr(src, x.dtype)
            out = op("where", hit, val, out)
        return out

    return TensorValue(x.shape, x.dtype, loader, None, x.origins)


@register_lowering(aten.index_select.default)
def index_select(ctx: LoweringContext, x: TensorValue, dim: int, index: TensorValue) -> TensorValue:
    x = ctx.realize(x)
    if x.ndim == 0:
        raise LoweringError("index_select of 0-dim")
    dim = dim % x.ndim
    shape = list(x.shape)
    shape[dim] = index.shape[0] if index.ndim else sympy.Integer(1)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        pos = indirect(index.load([idx[dim]] if index.ndim else []), x.shape[dim])
        full: list[Any] = list(idx)
        full[dim] = pos
        return load_indirect(x, full)

    return TensorValue(tuple(shape), x.dtype, loader, None, x.origins)


@register_lowering(aten.embedding.default)
def embedding(ctx: LoweringContext, weight: TensorValue, indices: TensorValue,
              padding_idx: int = -1, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> TensorValue:
    weight = ctx.realize(weight)
    shape = tuple(indices.shape) + (weight.shape[1],)
    n = indices.ndim

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        pos = indirect(indices.load(idx[:n]), weight.shape[0])
        return load_indirect(weight, [pos, idx[n]])

    return TensorValue(shape, weight.dtype, loader, None, weight.origins)


@register_lowering(aten.index.Tensor)
def index(ctx: LoweringContext, x: TensorValue, indices: Sequence[TensorValue | None]) -> TensorValue:
    """Advanced indexing with index tensors on some dims (None = full slice)."""
    x = ctx.realize(x)
    indices = list(indices) + [None] * (x.ndim - len(indices))
    used = [k for k, t in enumerate(indices) if t is not None]
    if not used or any(t.dtype in (torch.bool, torch.uint8) for t in indices if t is not None):
        raise LoweringError("boolean mask indexing")
    bshape = broadcast_shapes(*(indices[k].shape for k in used))
    contiguous_block = used == list(range(used[0], used[-1] + 1))
    before = list(range(used[0])) if contiguous_block else []
    after = [d for d in range(x.ndim) if d not in used and d not in before]
    if contiguous_block:
        shape = [x.shape[d] for d in before] + list(bshape) + [x.shape[d] for d in after]
    else:
        shape = list(bshape) + [x.shape[d] for d in after]
    nb = len(bshape)
    index_values = {k: broadcast_to(indices[k], bshape) for k in used}

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        lead = len(before)
        bidx = list(idx[lead:lead + nb])
        rest = list(idx[:lead]) + list(idx[lead + nb:])
        full: list[Any] = [None] * x.ndim
        for d, i in zip(before + after, rest):
            full[d] = i
        for k in used:
            full[k] = indirect(index_values[k].load(bidx), x.shape[k], wrap_negative=True)
        return load_indirect(x, full)

    return TensorValue(tuple(shape), x.dtype, loader, None, x.origins)
