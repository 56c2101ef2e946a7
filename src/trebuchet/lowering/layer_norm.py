"""Lowering rules for layer norm and its backward (`native_layer_norm`,
`native_layer_norm_backward`), kept whole through AOTAutograd's tracing.

Each rule is the steps of PyTorch's own decomposition of the op (`torch._refs`'
`native_layer_norm`, `torch._decomp`'s `native_layer_norm_backward`), each step lowered by
the rule of the ATen op the decomposition calls there (`call_rule`), in the same order.
So the IR is what lowering the decomposed graph gave, op for op: the same kernels and the
same numerics (float16/bfloat16 computed in float32; on CPUs the saved mean and 1/std
rounded to the input's dtype, as eager returns them).

Why not let AOTAutograd decompose them, as before: tracing a decomposition dispatches
every step through functionalization, fake tensors and the FX tracer. Layer norm and its
backward were the costliest decompositions in training graphs (a bfloat16 BERT training
step: 0.095 s of 0.15 s spent tracing decompositions, measured per op).
A value many steps read is stored where lowering the decomposed graph stored it
(`call_step`: the same `should_realize` test, with the step's number of readers).
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from ..ir import symbolic
from ..ir.nodes import product
from .pointwise import opmath
from .registry import (LoweringContext, LoweringError, TensorValue, call_rule, call_step, register_lowering,
                       to_dtype)

aten = torch.ops.aten


def _count(n: sympy.Expr) -> Any:
    """A number of elements as the decomposition passes it: an int when it is known."""
    n = sympy.sympify(n)
    return int(n) if n.is_Integer else n


def _dims(x: TensorValue, normalized_shape: Sequence[Any]) -> tuple[list[int], list[int]]:
    axis = x.ndim - len(normalized_shape)
    if not normalized_shape or axis < 0:
        raise LoweringError("layer norm: normalized_shape must name the input's last dims")
    return list(range(axis, x.ndim)), list(range(axis))


@register_lowering(aten.native_layer_norm.default)
def native_layer_norm(ctx: LoweringContext, x: TensorValue, normalized_shape: Sequence[Any],
                      weight: TensorValue | None, bias: TensorValue | None,
                      eps: float) -> tuple[TensorValue, TensorValue, TensorValue]:
    if not x.dtype.is_floating_point:
        raise LoweringError("layer norm of a non-float tensor")
    dims, _ = _dims(x, normalized_shape)
    if symbolic.equal(product([x.shape[d] for d in dims]), 0):
        # eager's mean of no elements is 0 (a variance-of-nothing mean would be NaN)
        raise LoweringError("layer norm over no elements")
    meta = ctx.current_meta
    x_acc = to_dtype(ctx, x, opmath(x.dtype), users=2)
    var, mean = call_rule(ctx, aten.var_mean.correction, x_acc, dims, correction=0, keepdim=True)
    rstd = call_step(ctx, 2, aten.rsqrt.default, call_rule(ctx, aten.add.Tensor, var, eps))
    out = call_rule(ctx, aten.mul.Tensor, call_rule(ctx, aten.sub.Tensor, x_acc, mean), rstd)
    if weight is not None:
        out = call_rule(ctx, aten.mul.Tensor, out, weight)
    if bias is not None:
        out = call_rule(ctx, aten.add.Tensor, out, bias)
    # eager's statistics: in the input's dtype on CPUs, in float32 elsewhere (the traced
    # op's results say which)
    return (to_dtype(ctx, out, x.dtype), to_dtype(ctx, mean, meta[1].dtype),
            to_dtype(ctx, rstd, meta[2].dtype))


def _unsqueeze_to(ctx: LoweringContext, x: TensorValue, ndim: int) -> TensorValue:
    while x.ndim < ndim:
        x = call_rule(ctx, aten.unsqueeze.default, x, -1)
    return x


@register_lowering(aten.native_layer_norm_backward.default)
def native_layer_norm_backward(ctx: LoweringContext, grad_out: TensorValue, x: TensorValue,
                               normalized_shape: Sequence[Any], mean: TensorValue,
                               rstd: TensorValue, weight: TensorValue | None,
                               bias: TensorValue | None, output_mask: Sequence[bool]) -> tuple:
    if not x.dtype.is_floating_point:
        raise LoweringError("layer norm of a non-float tensor")
    inner, outer = _dims(x, normalized_shape)
    n = product([x.shape[d] for d in inner])
    m = product([x.shape[d] for d in outer])
    if symbolic.equal(n, 0) or symbolic.equal(m, 0):
        raise LoweringError("layer norm backward of an empty tensor")   # eager's zeros
    want_input = bool(output_mask[0])
    want_weight = bool(output_mask[1]) and weight is not None
    want_bias = bool(output_mask[2]) and bias is not None
    cdt = opmath(x.dtype)
    # the readers of each value below, as in the decomposed graph (where what no output
    # needs was dead code: here it is never made)
    go = to_dtype(ctx, grad_out, cdt,
                  users=(1 if weight is not None else 3) * want_input + want_weight + want_bias)
    x_hat = None
    if want_input or want_weight:
        x_c = to_dtype(ctx, x, cdt)
        mean = _unsqueeze_to(ctx, mean, x.ndim)
        rstd = _unsqueeze_to(ctx, rstd, x.ndim)
        x_hat = call_step(ctx, 2 * want_input + want_weight, aten.mul.Tensor,
                          call_rule(ctx, aten.sub.Tensor, x_c, mean), rstd)
    d_input = d_weight = d_bias = None
    if want_input:
        grad_x_hat = (call_step(ctx, 3, aten.mul.Tensor, go, to_dtype(ctx, weight, cdt))
                      if weight is not None else go)
        a = call_rule(ctx, aten.mul.Tensor, grad_x_hat, _count(n))
        b = call_rule(ctx, aten.sum.dim_IntList, grad_x_hat, inner, True)
        c1 = call_rule(ctx, aten.mul.Tensor, grad_x_hat, x_hat)
        c2 = call_rule(ctx, aten.sum.dim_IntList, c1, inner, True)
        c3 = call_rule(ctx, aten.mul.Tensor, x_hat, c2)
        d_inner = call_rule(ctx, aten.sub.Tensor, call_rule(ctx, aten.sub.Tensor, a, b), c3)
        scale = call_rule(ctx, aten.div.Tensor, rstd, _count(n))
        d_input = call_rule(ctx, aten.mul.Tensor, scale, d_inner)
    if want_weight:
        d_weight = call_rule(ctx, aten.mul.Tensor, go, x_hat)
        if outer:
            d_weight = call_rule(ctx, aten.sum.dim_IntList, d_weight, outer, False)
    if want_bias:
        d_bias = (call_rule(ctx, aten.sum.dim_IntList, go, outer, False) if outer
                  else call_rule(ctx, aten.clone.default, go))
    return (to_dtype(ctx, d_input, x.dtype) if d_input is not None else None,
            to_dtype(ctx, d_weight, weight.dtype) if d_weight is not None else None,
            to_dtype(ctx, d_bias, bias.dtype) if d_bias is not None else None)
