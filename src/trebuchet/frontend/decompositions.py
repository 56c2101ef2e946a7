"""The decomposition table handed to AOTAutograd.

PyTorch's core ATen decompositions, plus decompositions of composite ops we
want as primitives (softmax, layer norm, batch/group norm, ...), minus ops we
lower directly with a better rule (variance, logsumexp: one fused kernel).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch._decomp
from torch._decomp import core_aten_decompositions, get_decompositions

aten = torch.ops.aten

EXTRA = [
    aten._softmax, aten._log_softmax, aten.native_group_norm,
    aten._native_batch_norm_legit_functional, aten.slice_scatter, aten.elu, aten.hardtanh,
    aten.addmm, aten.diagonal, aten.flip, aten.repeat, aten.im2col, aten.col2im,
    aten.expand_copy, aten.permute_copy, aten.transpose_copy, aten.unsqueeze_copy,
    aten.squeeze_copy, aten.select_copy, aten.slice_copy,
]
# Lowered directly: keep them whole. The two transposes are views we lower as a
# permutation; decomposed, they took 0.05 s of AOTAutograd's tracing of a small
# bfloat16 BERT training step (292 calls through the reference implementations).
KEEP = [aten.var_mean, aten.var, aten.std, aten.logsumexp, aten.gelu, aten.mean,
        aten.t, aten.transpose, aten.native_layer_norm, aten.native_layer_norm_backward,
        aten.gelu_backward]
# Library calls by design. The flash-attention decomposition must not be used under
# autograd: its second output is the attention matrix where the backward op
# (which stays a library call) expects the log-sum-exp, so gradients come out wrong.
EXTERN = [aten._scaled_dot_product_flash_attention_for_cpu, aten.scaled_dot_product_attention,
          aten._scaled_dot_product_attention_math]


LOW_PRECISION = (torch.bfloat16, torch.float16)


def _addmm(core: Callable, bias_in_product: bool) -> Callable:
    """addmm decomposed (mm + a bias add that fuses) in float32 and float64; in bfloat16
    and float16 kept whole: the core decomposition computes it in float32 (casting both
    matrices, a cast kernel each, and a float32 mm where eager calls the low-precision
    GEMM), and a low-precision mm plus an add would round twice where eager rounds once.
    With `bias_in_product`, float32 addmm with a one-dimensional bias is kept whole too:
    oneDNN adds the bias inside the product (runtime/onednn.py), where the add after it
    was a pass over the result of its own when nothing else read it (ViT-Tiny's qkv
    projections, which attention reads)."""

    def decompose(self: Any, mat1: Any, mat2: Any, beta: Any = 1, alpha: Any = 1) -> Any:
        if mat1.dtype in LOW_PRECISION:
            return NotImplemented      # traced as the op itself: a library call
        if bias_in_product and mat1.dtype == torch.float32 and self.dtype == mat1.dtype \
                and self.dim() == 1 and beta == 1 and alpha == 1:
            return NotImplemented
        if beta == 1 and alpha == 1 and mat1.dtype.is_floating_point and self.dtype == mat1.dtype:
            # What the core decomposition computes (`1 * mm + 1 * self`: multiplying by
            # one is exact), without its dtype and out= wrappers and the two multiplies:
            # tracing ViT-Tiny's 49 linears took 0.27 s less (1.13 s -> 0.86 s).
            return torch.mm(mat1, mat2) + self
        return core(self, mat1, mat2, beta=beta, alpha=alpha)

    return decompose


def decomposition_table(bias_in_product: bool = False) -> dict[Any, Callable]:
    """The table (a fresh dict, the caller may change it). Built once per state of
    PyTorch's decomposition registry: building it took 0.027 s, each graph's compile.
    `bias_in_product`: float32 products go to oneDNN, which adds a bias itself (`_addmm`)."""
    return dict(_table(len(torch._decomp.decomposition_table), bias_in_product))


@functools.lru_cache(maxsize=2)
def _table(registered: int, bias_in_product: bool) -> dict[Any, Callable]:
    table = dict(core_aten_decompositions())
    table.update(get_decompositions(EXTRA))
    for packet in KEEP + EXTERN:
        for name in packet.overloads():
            table.pop(getattr(packet, name), None)
    table[aten.addmm.default] = _addmm(table[aten.addmm.default], bias_in_product)
    return table
