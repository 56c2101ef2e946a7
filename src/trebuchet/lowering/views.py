"""Lowering rules for views: no data moves, only the index map changes.

A view of a value that is an exact strided view of a buffer keeps a `BufferRef`
(so Externs such as matmul get the strided tensor without a copy); any other
view composes the loader.
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch
from torch.utils._sympy.functions import FloorDiv, ModularIndexing

from ..ir import symbolic
from ..ir.expr import Const, Expr
from ..ir.nodes import BufferRef, contiguous_strides, linear_index, product
from .pointwise import broadcast_to
from .registry import LoweringContext, LoweringError, TensorValue, register_lowering

aten = torch.ops.aten


def _with_ref(value: TensorValue, shape: Sequence[sympy.Expr], loader: Any,
              stride: Sequence[sympy.Expr] | None = None,
              offset: sympy.Expr | None = None) -> TensorValue:
    ref = None
    if value.ref is not None and stride is not None:
        ref = BufferRef(value.ref.buf, tuple(shape), tuple(stride),
                        value.ref.offset if offset is None else offset)
    return TensorValue(tuple(shape), value.dtype, loader, ref, value.origins)


def permute_value(x: TensorValue, perm: Sequence[int]) -> TensorValue:
    perm = [p % x.ndim for p in perm] if x.ndim else []
    inv = [perm.index(d) for d in range(x.ndim)]
    shape = [x.shape[p] for p in perm]
    stride = [x.ref.stride[p] for p in perm] if x.ref else None
    return _with_ref(x, shape, lambda idx: x.load([idx[inv[d]] for d in range(x.ndim)]), stride)


@register_lowering(aten.permute.default)
def permute(ctx: LoweringContext, x: TensorValue, perm: Sequence[int]) -> TensorValue:
    return permute_value(x, perm)


@register_lowering(aten.transpose.int)
def transpose(ctx: LoweringContext, x: TensorValue, d0: int, d1: int) -> TensorValue:
    if x.ndim == 0:
        return x
    perm = list(range(x.ndim))
    d0, d1 = d0 % x.ndim, d1 % x.ndim
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute_value(x, perm)


@register_lowering(aten.t.default)
def t(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    return permute_value(x, [1, 0]) if x.ndim == 2 else x


@register_lowering(aten.expand.default)
def expand(ctx: LoweringContext, x: TensorValue, sizes: Sequence[Any], *,
           implicit: bool = False) -> TensorValue:
    lead = len(sizes) - x.ndim
    shape = [x.shape[k - lead] if (s == -1) else sympy.sympify(s) for k, s in enumerate(sizes)]
    out = broadcast_to(x, shape)
    if x.ref is not None:
        stride = [sympy.Integer(0) if k < lead or (x.shape[k - lead] == 1 and shape[k] != 1)
                  else x.ref.stride[k - lead] for k in range(len(shape))]
        out = _with_ref(x, shape, out.loader, stride)
    return out


def unsqueeze_value(x: TensorValue, dim: int) -> TensorValue:
    dim = dim % (x.ndim + 1)
    shape = list(x.shape[:dim]) + [sympy.Integer(1)] + list(x.shape[dim:])
    stride = None
    if x.ref is not None:
        stride = list(x.ref.stride[:dim]) + [sympy.Integer(1)] + list(x.ref.stride[dim:])
    return _with_ref(x, shape, lambda idx: x.load(list(idx[:dim]) + list(idx[dim + 1:])), stride)


@register_lowering(aten.unsqueeze.default)
def unsqueeze(ctx: LoweringContext, x: TensorValue, dim: int) -> TensorValue:
    return unsqueeze_value(x, dim)


@register_lowering(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default)
def squeeze(ctx: LoweringContext, x: TensorValue, dims: Any = None) -> TensorValue:
    if dims is None:
        dims = range(x.ndim)
    elif isinstance(dims, int):
        dims = [dims]
    drop = {d % x.ndim for d in dims if x.ndim and x.shape[d % x.ndim] == 1}
    keep = [d for d in range(x.ndim) if d not in drop]
    shape = [x.shape[d] for d in keep]
    stride = [x.ref.stride[d] for d in keep] if x.ref else None

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        full = [sympy.Integer(0)] * x.ndim
        for d, i in zip(keep, idx):
            full[d] = i
        return x.load(full)

    return _with_ref(x, shape, loader, stride)


def _clamp_slice(start: Any, end: Any, size: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    def norm(v: Any, default: sympy.Expr) -> sympy.Expr:
        if v is None:
            return default
        v = sympy.sympify(v)
        if v.is_number:
            if size.is_number:
                v = v + size if v < 0 else v
                return sympy.Max(0, sympy.Min(v, size))
            if v < 0:
                return size + v
            if v >= 2 ** 62:
                return size
        return v

    s = norm(start, sympy.Integer(0))
    e = norm(end, size)
    return s, sympy.Max(s, e) if (s.is_number and e.is_number) else e


@register_lowering(aten.slice.Tensor)
def slice_(ctx: LoweringContext, x: TensorValue, dim: int = 0, start: Any = None,
           end: Any = None, step: int = 1) -> TensorValue:
    dim = dim % x.ndim
    begin, stop = _clamp_slice(start, end, x.shape[dim])
    size = FloorDiv(stop - begin + step - 1, step) if step != 1 else stop - begin
    size = symbolic.simplify(size)
    shape = list(x.shape)
    shape[dim] = size

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        full = list(idx)
        full[dim] = begin + idx[dim] * step
        return x.load(full)

    stride = offset = None
    if x.ref is not None:
        stride = list(x.ref.stride)
        stride[dim] = x.ref.stride[dim] * step
        offset = x.ref.offset + begin * x.ref.stride[dim]
    return _with_ref(x, shape, loader, stride, offset)


@register_lowering(aten.select.int)
def select(ctx: LoweringContext, x: TensorValue, dim: int, index: Any) -> TensorValue:
    dim = dim % x.ndim
    index = sympy.sympify(index)
    if index.is_number and index < 0:
        index = x.shape[dim] + index
    shape = list(x.shape[:dim]) + list(x.shape[dim + 1:])

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        return x.load(list(idx[:dim]) + [index] + list(idx[dim:]))

    stride = offset = None
    if x.ref is not None:
        stride = list(x.ref.stride[:dim]) + list(x.ref.stride[dim + 1:])
        offset = x.ref.offset + index * x.ref.stride[dim]
    return _with_ref(x, shape, loader, stride, offset)


def _view_strides(shape: Sequence[sympy.Expr], stride: Sequence[sympy.Expr],
                  new_shape: Sequence[sympy.Expr]) -> list[sympy.Expr] | None:
    """Strides of a view of a strided tensor, or None when it needs a copy.

    Walks both shapes in groups of equal element count; each old group must be
    contiguous within itself so the new dims can split it.
    """
    old = [(s, st) for s, st in zip(shape, stride) if s != 1]
    out: list[sympy.Expr] = []
    i = 0
    new = list(new_shape)
    j = 0
    while j < len(new):
        if new[j] == 1:
            out.append(sympy.Integer(1))
            j += 1
            continue
        if i >= len(old):
            return None
        # grow an old group and a new group until their element counts agree
        old_group = [old[i]]
        i += 1
        new_group = [j]
        j += 1
        old_n, new_n = old_group[0][0], new[new_group[0]]
        while not symbolic.equal(old_n, new_n):
            if _lt(old_n, new_n):
                if i >= len(old):
                    return None
                old_group.append(old[i])
                old_n = old_n * old[i][0]
                i += 1
            else:
                while j < len(new) and new[j] == 1:
                    j += 1
                if j >= len(new):
                    return None
                new_group.append(j)
                new_n = new_n * new[j]
                j += 1
        for (s_a, st_a), (s_b, st_b) in zip(old_group, old_group[1:]):
            if not symbolic.equal(st_a, st_b * s_b):
                return None
        inner = old_group[-1][1]
        group_strides = []
        for k in reversed(new_group):
            group_strides.append(inner)
            inner = inner * new[k]
        for k, st in zip(new_group, reversed(group_strides)):
            while len(out) < k:
                out.append(sympy.Integer(1))
            out.append(st)
    if i != len(old):
        return None
    return out


def _lt(a: sympy.Expr, b: sympy.Expr) -> bool:
    diff = symbolic.simplify(b / a)
    if diff.is_number:
        return bool(diff > 1)
    ratio = symbolic.simplify(a / b)
    return not (ratio.is_number and ratio > 1) and (b.has(*a.free_symbols) or a.is_number)


def reshape_value(x: TensorValue, sizes: Sequence[Any]) -> TensorValue:
    shape = _infer_shape(x, sizes)
    if product(x.shape) == 0:      # no element is ever loaded
        return TensorValue(tuple(shape), x.dtype, lambda idx: Const(0, x.dtype), None, x.origins)
    if x.ref is not None:
        try:
            stride = _view_strides(x.shape, x.ref.stride, shape)
        except TypeError:
            stride = None
        if stride is not None and len(stride) == len(shape):
            ref = BufferRef(x.ref.buf, tuple(shape), tuple(stride), x.ref.offset)
            from .registry import value_from_ref
            return value_from_ref(ref, x.dtype, x.origins)
    groups = _dim_groups(x.shape, shape)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        old_idx: list[sympy.Expr] = [sympy.Integer(0)] * x.ndim
        for old_dims, new_dims in groups:
            # flat position within the group, then split over the old dims
            new_sizes = [shape[d] for d in new_dims]
            flat = linear_index([idx[d] for d in new_dims], contiguous_strides(new_sizes))
            old_sizes = [x.shape[d] for d in old_dims]
            old_strides = contiguous_strides(old_sizes)
            for k, d in enumerate(old_dims):
                if old_sizes[k] == 1:
                    continue
                if k == 0:
                    old_idx[d] = FloorDiv(flat, old_strides[0]) if len(old_dims) > 1 else flat
                else:
                    old_idx[d] = ModularIndexing(flat, old_strides[k], old_sizes[k])
        return x.load(old_idx)

    return TensorValue(tuple(shape), x.dtype, loader, None, x.origins)


def _dim_groups(old: Sequence[sympy.Expr], new: Sequence[sympy.Expr]) -> list[tuple[list[int], list[int]]]:
    """Pair runs of old and new dims with equal element counts (one run when unsure)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(old) or j < len(new):
        og, ng = [], []
        on, nn = sympy.Integer(1), sympy.Integer(1)
        while True:
            if og and ng and symbolic.equal(on, nn):
                break
            take_old = i < len(old) and (not og or _lt(on, nn) or j >= len(new))
            if take_old:
                og.append(i)
                on = on * old[i]
                i += 1
            elif j < len(new):
                ng.append(j)
                nn = nn * new[j]
                j += 1
            else:
                break
        # size-1 dims trailing a group belong to it
        while i < len(old) and old[i] == 1 and j >= len(new):
            og.append(i)
            i += 1
        while j < len(new) and new[j] == 1 and i >= len(old):
            ng.append(j)
            j += 1
        groups.append((og, ng))
        if not og or not ng:
            return [(list(range(len(old))), list(range(len(new))))]
    return groups


def _infer_shape(x: TensorValue, sizes: Sequence[Any]) -> list[sympy.Expr]:
    sizes = [sympy.sympify(s) for s in sizes]
    if any(s == -1 for s in sizes):
        known = product([s for s in sizes if s != -1])
        sizes = [symbolic.simplify(product(x.shape) / known) if s == -1 else s for s in sizes]
    return sizes


@register_lowering(aten.view.default, aten._unsafe_view.default, aten.reshape.default,
                   aten.view_copy.default)
def view(ctx: LoweringContext, x: TensorValue, sizes: Sequence[Any]) -> TensorValue:
    meta = ctx.out_meta()
    if isinstance(meta, torch.Tensor):   # the traced shape: -1 already resolved
        sizes = [s.node.expr if isinstance(s, torch.SymInt) else s for s in meta.shape]
    return reshape_value(x, sizes)


@register_lowering(aten.alias.default, aten.detach.default, aten.lift_fresh.default)
def alias(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    return x


@register_lowering(aten.as_strided.default)
def as_strided(ctx: LoweringContext, x: TensorValue, size: Sequence[Any], stride: Sequence[Any],
               storage_offset: Any = None) -> TensorValue:
    if x.ref is None:
        x = ctx.realize(x)
    base = x.ref
    # as_strided addresses the storage; our buffers start at offset 0 of theirs.
    offset = sympy.sympify(storage_offset) if storage_offset is not None else base.offset
    shape = [sympy.sympify(s) for s in size]
    strides = [sympy.sympify(s) for s in stride]
    if not _is_storage_base(base) or base.buf in ctx.input_names:
        # Inputs may start anywhere in their storage; eager knows where, we do not.
        raise LoweringError("as_strided of a view")
    from .registry import value_from_ref
    return value_from_ref(BufferRef(base.buf, tuple(shape), tuple(strides), offset), x.dtype,
                          x.origins)


def _is_storage_base(ref: BufferRef) -> bool:
    return ref.offset == 0 and tuple(ref.stride) == tuple(contiguous_strides(ref.shape))


@register_lowering(aten.unfold.default)
def unfold(ctx: LoweringContext, x: TensorValue, dim: int, size: int, step: int) -> TensorValue:
    if x.ndim == 0:
        raise LoweringError("unfold of 0-dim")
    dim = dim % x.ndim
    count = symbolic.simplify(FloorDiv(x.shape[dim] - size, step) + 1)
    shape = list(x.shape)
    shape[dim] = count
    shape.append(sympy.Integer(size))

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        full = list(idx[:-1])
        full[dim] = idx[dim] * step + idx[-1]
        return x.load(full)

    return TensorValue(tuple(shape), x.dtype, loader, None, x.origins)


@register_lowering(aten.split_with_sizes.default, aten.split.Tensor)
def split(ctx: LoweringContext, x: TensorValue, sizes: Any, dim: int = 0) -> tuple:
    dim = dim % x.ndim
    if isinstance(sizes, (int, sympy.Expr)):   # split.Tensor: chunks of one size
        total, step = x.shape[dim], sympy.sympify(sizes)
        if not (total.is_number and step.is_number):
            raise LoweringError("symbolic split")
        sizes = [min(int(step), int(total) - s) for s in range(0, int(total), int(step))] or [0]
    parts, start = [], sympy.Integer(0)
    for size in sizes:
        parts.append(slice_(ctx, x, dim, start, start + size))
        start = start + size
    return tuple(parts)
