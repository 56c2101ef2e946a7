"""Which activations an inference graph keeps channels-last: a layout plan made before lowering.

oneDNN's 2-d convolutions run faster on channels-last (NHWC) activations: on the 2-core
benchmark machine eager ResNet-18 and MobileNetV3-Small inference run 1.4-1.5x faster after
`.to(memory_format=torch.channels_last)` of the model and its input. A graph traced in the
contiguous layout gets the same when its 4-d activations around the convolutions are stored
NHWC: each convolution reads NHWC and writes NHWC (oneDNN follows its input's layout; the
wrapper's `fix_layout` restores the declared layout if a call does not), and the kernels
between them (batch norm, activations, residual adds, pooling) read and write NHWC.

The plan: from the input and the output of every 2-d convolution, the connected 4-d
floating-point values (through any op but views, whose re-indexing belongs to the traced
layout; through multi-output ops such as batch norm and max pool to their results) that
eager lays out contiguously with more than one spatial element. Only for
inference graphs on the CPU: a training graph returns its saved activations to the backward
graph in the traced layout, so there the conversion would add copies.

Nothing a user observes changes: graph outputs are stored in eager's layout
(storage.graph_output), inputs are never replaced; only intermediate buffers change order.
"""
from __future__ import annotations

import operator
from typing import Sequence

import sympy
import torch
import torch.fx

from ..ir.nodes import op_short_name
from .storage import VIEW_OPS

aten = torch.ops.aten

# Memory order (outermost first) of an NCHW tensor stored channels-last.
CHANNELS_LAST = [0, 2, 3, 1]
# Convolutions of these run in oneDNN, which follows its input's layout (others, float64
# ones, run ATen's own kernels, and their results would be copied back to the plan's).
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def channels_last_nodes(gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """The nodes whose values are stored NHWC (see the module docstring)."""
    region: set[torch.fx.Node] = set()
    crossed: set[torch.fx.Node] = set()     # multi-output ops the region extends through
    stack = [m for n in gm.graph.nodes if is_conv2d(n) for m in (n, n.args[0])]
    while stack:
        n = stack.pop()
        if n in region or n in crossed:
            continue
        if _multi_output(n):
            crossed.add(n)
            stack.extend(m for m in [*n.all_input_nodes, *n.users] if m not in region)
            continue
        if not _eligible(n):
            continue
        region.add(n)
        # a convolution's weight keeps its layout: only its input and users join
        around = [n.args[0], *n.users] if is_conv2d(n) else [*n.all_input_nodes, *n.users]
        stack.extend(m for m in around if isinstance(m, torch.fx.Node) and m not in region)
    return region


def channels_last_strides(shape: Sequence[sympy.Expr]) -> tuple[sympy.Expr, ...]:
    """The strides of an NCHW shape stored channels-last."""
    n, c, h, w = shape
    return (c * h * w, sympy.Integer(1), w * c, c)


def is_conv2d(n: torch.fx.Node) -> bool:
    """A 2-d, not transposed, convolution of CPU float32 or bfloat16 tensors."""
    if n.op != "call_function" or n.target is not aten.convolution.default or len(n.args) < 7:
        return False
    x = n.args[0].meta.get("val") if isinstance(n.args[0], torch.fx.Node) else None
    return (isinstance(x, torch.Tensor) and x.ndim == 4 and x.device.type == "cpu"
            and x.dtype in ONEDNN_DTYPES and not n.args[6])


def _multi_output(n: torch.fx.Node) -> bool:
    """An op with several results, one of them a 4-d floating-point tensor (batch norm,
    max pool with its indices): it is not stored itself, its results (getitem nodes)
    are, so the region extends through it to its inputs and results."""
    v = n.meta.get("val")
    return (n.op == "call_function" and isinstance(v, (tuple, list))
            and op_short_name(n.target) not in VIEW_OPS
            and any(isinstance(t, torch.Tensor) and t.ndim == 4 and t.dtype.is_floating_point
                    for t in v))


def _eligible(n: torch.fx.Node) -> bool:
    if n.op not in ("placeholder", "call_function") or (
            n.op == "call_function" and n.target is not operator.getitem
            and op_short_name(n.target) in VIEW_OPS):
        return False
    v = n.meta.get("val")
    if not isinstance(v, torch.Tensor) or v.ndim != 4 or not v.dtype.is_floating_point:
        return False
    if v.device.type != "cpu" or v.layout != torch.strided:
        return False
    try:
        # contiguous, and not also channels-last (one channel or one spatial element)
        return (v.is_contiguous() and not v.is_contiguous(memory_format=torch.channels_last)
                and v.shape[2] * v.shape[3] > 1)
    except Exception:       # a data-dependent size: leave the traced layout
        return False
