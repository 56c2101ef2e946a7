"""Which activations a graph keeps channels-last: a layout plan made before lowering.

oneDNN's 2-d convolutions run faster on channels-last (NHWC) activations: on the 2-core
benchmark machine eager ResNet-18 and MobileNetV3-Small inference run 1.4-1.5x faster after
`.to(memory_format=torch.channels_last)` of the model and its input. A graph traced in the
contiguous layout gets the same when its 4-d activations around the convolutions are stored
NHWC: each convolution reads NHWC and writes NHWC (oneDNN follows its input's layout; the
wrapper's `fix_layout` restores the declared layout if a call does not), and the kernels
between them (batch norm, activations, residual adds, pooling) read and write NHWC.

The plan: from the input and the output of every 2-d convolution (but those oneDNN runs
faster NCHW, `prefers_nchw`), the connected 4-d floating-point values (through any op but
views, whose re-indexing belongs to the traced layout; through multi-output ops such as
batch norm and max pool to their results, indices included) that eager lays out
contiguously with more than one spatial element. On the CPU only. A convolution outside
the plan is passed its input in the traced layout, as eager would; the backward of one
that `prefers_nchw` NCHW tensors.

Training: the forward graph returns the activations it saves for the backward graph.
Those the plan covers are returned channels-last (`LoweringContext.free_outputs`) and the
compiler reports their strides to AOTAutograd (frontend/backend.py), which compiles the
backward graph with its inputs restrided so. There a convolution's backward whose input
is stored channels-last seeds the plan (its output gradient, its input and its input
gradient): oneDNN computes it channels-last, and the gradient kernels around it follow.

Nothing a user observes changes: graph outputs a user sees are stored in eager's layout
(storage.graph_output), inputs are never replaced; only intermediate buffers and saved
activations, which only the backward graph reads, change order.
"""
from __future__ import annotations

import operator
from typing import Collection, Sequence

import sympy
import torch
import torch.fx

from ..ir.nodes import op_short_name
from .storage import VIEW_OPS, graph_returns, meta_layout, view_root

aten = torch.ops.aten

# Memory order (outermost first) of an NCHW tensor stored channels-last.
CHANNELS_LAST = [0, 2, 3, 1]
# Convolutions of these run in oneDNN, which follows its input's layout (others, float64
# ones, run ATen's own kernels, and their results would be copied back to the plan's).
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def channels_last_plan(gm: torch.fx.GraphModule, free_positions: Collection[int] = ()
                       ) -> tuple[set[torch.fx.Node], dict[torch.fx.Node, tuple]]:
    """The nodes stored NHWC, and the graph outputs returned so with their strides: those
    at `free_positions` (the saved activations of a forward graph, whose layout is ours to
    choose) in the plan, and aliases of them returned there too. A value a user sees
    (returned elsewhere) that another output views keeps eager's layout, so that the view
    is a view of it, as in eager."""
    returned = graph_returns(gm)
    views = [n for n in returned if isinstance(n, torch.fx.Node) and n.op == "call_function"
             and op_short_name(n.target) in VIEW_OPS]
    seen = {n for k, n in enumerate(returned) if k not in free_positions}
    region = channels_last_nodes(gm) - ({view_root(n) for n in views} & seen)
    free = {n for k, n in enumerate(returned) if k in free_positions and isinstance(n, torch.fx.Node)
            and isinstance(v := n.meta.get("val"), torch.Tensor)
            and all(isinstance(d, int) for d in v.shape)} - seen
    # a value another output views keeps the traced layout, unless that is a free alias
    free -= {view_root(n) for n in views if not (_is_alias(n) and n in free)}
    planned = free & region
    planned |= {n for n in free if _is_alias(n) and n.args[0] in planned}
    return region, {n: channels_last_strides(meta_layout(n.meta["val"])[0]) for n in planned}


def _is_alias(n: torch.fx.Node) -> bool:
    return n.op == "call_function" and op_short_name(n.target) == "alias"


def channels_last_nodes(gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """The nodes whose values are stored NHWC (see the module docstring), and the
    convolution backwards that run channels-last."""
    region: set[torch.fx.Node] = set()
    crossed: set[torch.fx.Node] = set()     # multi-output ops the region extends through
    stack = [m for n in gm.graph.nodes if _conv2d_in_plan(n) for m in (n, n.args[0])]
    backwards = [n for n in gm.graph.nodes if _conv2d_backward_in_plan(n)]
    for n in backwards:      # its output gradient, its input and its input gradient
        stack += [m for m in (n.args[0], n.args[1]) if isinstance(m, torch.fx.Node)]
        stack += [u for u in n.users if u.target is operator.getitem and u.args[1] == 0]
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
    return region | set(backwards)


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


def prefers_nchw(n: torch.fx.Node) -> bool:
    """A convolution (`is_conv2d`) or its backward (`is_conv2d_backward`) that oneDNN runs
    faster on NCHW tensors than on NHWC ones, which the plan leaves out: one group, a
    kernel wider than 1x1, at least 256 input channels and at most 7x7 output positions.
    Measured on the 2-core benchmark machine (ATen calls, median of 15): ResNet-18's last
    stage at batch 4, 512->512 3x3 on 7x7, forward 2.25 ms NCHW vs 2.73 ms NHWC, backward
    10.4 vs 15.1 ms; 256->512 3x3 stride 2, backward 5.6 vs 7.2 ms; while the 14x14 and
    larger stages, 1x1 and depthwise convolutions run as fast or faster NHWC."""
    backward = n.target is aten.convolution_backward.default
    weight, out = (n.args[2], n.args[0]) if backward else (n.args[1], n)
    groups = n.args[9] if backward else n.args[8]
    w = weight.meta.get("val") if isinstance(weight, torch.fx.Node) else None
    y = out.meta.get("val") if isinstance(out, torch.fx.Node) else None
    if not isinstance(w, torch.Tensor) or not isinstance(y, torch.Tensor) or groups != 1:
        return False
    try:
        return bool(w.shape[2] * w.shape[3] > 1 and w.shape[1] >= 256 and y.shape[2] * y.shape[3] <= 49)
    except Exception:       # a data-dependent size
        return False


def _conv2d_in_plan(n: torch.fx.Node) -> bool:
    return is_conv2d(n) and not prefers_nchw(n)


def is_conv2d_backward(n: torch.fx.Node) -> bool:
    """The backward of a convolution `is_conv2d` accepts."""
    if (n.op != "call_function" or n.target is not aten.convolution_backward.default
            or len(n.args) < 11 or not isinstance(n.args[1], torch.fx.Node)):
        return False
    x = n.args[1].meta.get("val")
    return (isinstance(x, torch.Tensor) and x.ndim == 4 and x.device.type == "cpu"
            and x.dtype in ONEDNN_DTYPES and not n.args[7])


def _conv2d_backward_in_plan(n: torch.fx.Node) -> bool:
    """A convolution backward whose input is stored channels-last (a saved activation the
    forward graph returned so) or computed here (the plan will store it so): oneDNN then
    runs it channels-last. Inputs eager lays out contiguously (the network's input
    image) are left so: ATen would convert its output gradient instead."""
    if not is_conv2d_backward(n) or prefers_nchw(n):
        return False
    x = n.args[1]
    return x.op == "call_function" or _is_channels_last(x.meta["val"])


def _is_channels_last(v: torch.Tensor) -> bool:
    try:
        return v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
    except Exception:       # a data-dependent size
        return False


def _multi_output(n: torch.fx.Node) -> bool:
    """An op with several results, one of them a 4-d floating-point tensor (batch norm,
    max pool with its indices): it is not stored itself, its results (getitem nodes)
    are, so the region extends through it to its inputs and results."""
    v = n.meta.get("val")
    return (n.op == "call_function" and isinstance(v, (tuple, list))
            and op_short_name(n.target) not in VIEW_OPS and not is_conv2d_backward(n)
            and any(isinstance(t, torch.Tensor) and t.ndim == 4 and t.dtype.is_floating_point
                    for t in v))


def _eligible(n: torch.fx.Node) -> bool:
    if n.op not in ("placeholder", "call_function") or (is_conv2d(n) and not _conv2d_in_plan(n)) or (
            n.op == "call_function" and n.target is not operator.getitem
            and op_short_name(n.target) in VIEW_OPS):
        return False
    v = n.meta.get("val")
    # a multi-output op's other results (max pool's indices) in its layout too
    result = n.target is operator.getitem and _multi_output(n.args[0])
    if not isinstance(v, torch.Tensor) or v.ndim != 4 or not (v.dtype.is_floating_point or result):
        return False
    if v.device.type != "cpu" or v.layout != torch.strided:
        return False
    try:
        # contiguous, and not also channels-last (one channel or one spatial element)
        return (v.is_contiguous() and not v.is_contiguous(memory_format=torch.channels_last)
                and v.shape[2] * v.shape[3] > 1)
    except Exception:       # a data-dependent size: leave the traced layout
        return False
