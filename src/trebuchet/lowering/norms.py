"""Lowering rules for batch norm in eval mode (`_native_batch_norm_legit_no_training`).

Eval-mode batch norm is a per-channel affine map, so it is lowered as the pointwise op it
is: it fuses with the convolution output's consumers (bias, activation, residual add) in
one kernel over that output, in its memory format. It computes as eager's CPU kernel does
(`batch_norm_cpu_collect_linear_and_constant_terms`): per channel
`alpha = 1 / sqrt(var + eps) * weight`, `beta = bias - mean * alpha` in the op-math type,
then `x * alpha + beta`, rounded to the input's dtype. Training-mode batch norm reaches us
decomposed (`_native_batch_norm_legit_functional` in the decomposition table): its
statistics are a `var_mean` over the non-channel axes (a column reduction).
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from ..ir.expr import Const, Expr, cast, op
from .pointwise import opmath
from .registry import LoweringContext, LoweringError, TensorValue, merge_origins, register_lowering

aten = torch.ops.aten


def _channel(value: TensorValue | None, c: sympy.Expr, dtype: torch.dtype, default: float) -> Expr:
    """Element c of a per-channel parameter in `dtype` (a constant when it is absent)."""
    if value is None:
        return Const(default, dtype)
    return cast(value.load([c]), dtype)


@register_lowering(aten._native_batch_norm_legit_no_training.default)
def batch_norm_eval(ctx: LoweringContext, x: TensorValue, weight: TensorValue | None,
                    bias: TensorValue | None, running_mean: TensorValue,
                    running_var: TensorValue, momentum: float, eps: float) -> tuple:
    if x.ndim < 2 or not x.dtype.is_floating_point:
        raise LoweringError("batch norm of an input with fewer than 2 dims or not floating")
    params = [p for p in (weight, bias, running_mean, running_var) if p is not None]
    if any(not isinstance(p, TensorValue) or p.ndim != 1 for p in params):
        raise LoweringError("batch norm parameters that are not 1-d tensors")
    acc = opmath(x.dtype)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        c = idx[1]
        var = _channel(running_var, c, acc, 1.0)
        invstd = op("truediv", Const(1.0, acc), op("sqrt", op("add", var, Const(eps, acc))))
        alpha = op("mul", invstd, _channel(weight, c, acc, 1.0))
        beta = op("sub", _channel(bias, c, acc, 0.0),
                  op("mul", _channel(running_mean, c, acc, 0.0), alpha))
        return cast(op("add", op("mul", cast(x.load(idx), acc), alpha), beta), x.dtype)

    origins = merge_origins(x.origins, *(p.origins for p in params), (ctx.current_origin,))
    out = TensorValue(tuple(x.shape), x.dtype, loader, None, origins)
    # The saved mean and inverse std are empty in eval mode; nothing reads them.
    meta = ctx.current_meta
    empty = [_empty(m) for m in meta[1:]]
    return (out, *empty)


def _empty(meta: Any) -> TensorValue:
    shape = tuple(sympy.sympify(int(s)) for s in meta.shape)
    if any(s != 0 for s in shape):
        raise LoweringError("batch norm eval with non-empty saved statistics")
    return TensorValue(shape, meta.dtype, lambda idx: Const(0, meta.dtype), None, ())
