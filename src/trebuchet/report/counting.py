"""FLOPs and bytes: per eager ATen op (from its tensors' shapes) and per generated
kernel (from its IR), the quantities of the roofline.

Conventions (docs/report.md):
- A matrix product [M, K] @ [K, N] is 2*M*N*K FLOPs (a multiply and an add per term);
  batched products multiply by the batch; `addmm`/`baddbmm` add M*N for the bias;
  a convolution is 2 * output elements * (input channels / groups) * kernel size
  (+ output elements with a bias); attention is its two products (2*L*S*E and 2*L*S*Ev
  per batch and head) plus the softmax (L*S exponentials, noted as transcendental).
- Element-wise ops cost one FLOP per output element; those computing a transcendental
  function (exp, log, tanh, erf, sigmoid, gelu, silu, pow, sqrt, ...) count it as
  one FLOP and are noted in `transcendentals`.
- Reductions cost one FLOP per input element; composite normalizations count their
  steps per element (`PER_ELEMENT`).
- Views, copies, index and layout ops cost no FLOPs.
- Bytes are the minimal unique bytes: each distinct input tensor once (elements under
  a stride-0 dimension once) plus each output; views move nothing.
- A generated kernel's FLOPs are its IR: each distinct floating-point operation of
  each buffer's body times the points it runs at, plus one per reduced element.
"""
from __future__ import annotations

import math
from typing import Sequence

import sympy

from ..ir.expr import Op, walk
from ..ir.nodes import BufferRef, Extern, ExternOutput, GraphIR, Reduction, product
from ..scheduler.kernels import Kernel
from .classes import classify_op, short_name

Shape = Sequence[int]

TRANSCENDENTAL_IR = frozenset({
    "exp", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc",
    "lgamma", "atan2", "sigmoid", "pow",
})
TRANSCENDENTAL_ATEN = frozenset(TRANSCENDENTAL_IR | {
    "gelu", "silu", "softplus", "elu", "selu", "celu", "mish", "gelu_backward", "silu_backward",
    "tanh_backward", "sigmoid_backward", "exp2", "logit", "reciprocal", "rsqrt", "sqrt",
    "log_sigmoid_forward", "erfinv", "digamma",
})
# FLOPs and transcendentals per element of composite normalizations (input elements).
PER_ELEMENT = {
    "native_layer_norm": (8, 0), "layer_norm": (8, 0), "native_group_norm": (8, 0),
    "group_norm": (8, 0), "native_batch_norm": (8, 0), "batch_norm": (8, 0),
    "_native_batch_norm_legit": (8, 0), "_native_batch_norm_legit_no_training": (4, 0),
    "rms_norm": (4, 0), "_fused_rms_norm": (4, 0),
    "softmax": (4, 1), "_softmax": (4, 1), "log_softmax": (4, 1), "_log_softmax": (4, 1),
    "_softmax_backward_data": (3, 0), "_log_softmax_backward_data": (3, 1),
    "native_layer_norm_backward": (12, 0), "var_mean": (3, 0), "var": (3, 0), "std": (3, 0),
    "logsumexp": (3, 1),
}
IR_FLOAT_OPS = frozenset({
    "add", "sub", "mul", "truediv", "floordiv", "remainder", "fmod", "neg", "abs", "pow",
    "maximum", "minimum", "floor", "ceil", "trunc", "round",
}) | TRANSCENDENTAL_IR


def _numel(shape: Shape) -> int:
    return math.prod(int(s) for s in shape)


def op_flops(op: object, inputs: Sequence[Shape], outputs: Sequence[Shape],
             groups: int = 1) -> tuple[int, int]:
    """(FLOPs, transcendental ops) of one ATen op from its tensor inputs' and outputs'
    shapes, in argument order."""
    name = short_name(op)
    out = _numel(outputs[0]) if outputs else 0
    cls = classify_op(name)
    if name in ("mm", "addmm", "_int_mm"):
        a, b = (inputs[1], inputs[2]) if name == "addmm" else (inputs[0], inputs[1])
        m, k, n = int(a[0]), int(a[1]), int(b[1])
        return 2 * m * n * k + (m * n if name == "addmm" else 0), 0
    if name in ("bmm", "baddbmm"):
        a, b = (inputs[1], inputs[2]) if name == "baddbmm" else (inputs[0], inputs[1])
        bt, m, k, n = int(a[0]), int(a[1]), int(a[2]), int(b[2])
        return 2 * bt * m * n * k + (bt * m * n if name == "baddbmm" else 0), 0
    if name in ("mv", "addmv", "dot", "vdot"):
        a = inputs[1] if name == "addmv" else inputs[0]
        return 2 * _numel(a), 0
    if name in ("matmul", "linear"):
        a, b = inputs[0], inputs[1]
        k = int(a[-1])
        flops = 2 * out * k
        if name == "linear" and len(inputs) > 2:
            flops += out
        return flops, 0
    if name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
        if name.endswith("_backward"):
            return 2 * _attention(inputs[1], inputs[2], inputs[3])[0], 0
        return _attention(inputs[0], inputs[1], inputs[2])
    if "convolution" in name or name.startswith("conv"):
        if name == "convolution_backward":
            w = inputs[2]
            return 2 * 2 * _numel(inputs[0]) * _numel(w[1:]) // max(groups, 1), 0
        w = inputs[1]
        flops = 2 * out * _numel(w[1:])
        if len(inputs) > 2:
            flops += out
        return flops, 0
    if cls == "data movement":
        return 0, 0
    if name in PER_ELEMENT:
        f, t = PER_ELEMENT[name]
        n = _numel(inputs[0]) if inputs else out
        return f * n, t * n
    if cls == "normalization":
        return (_numel(inputs[0]) if inputs else out), 0
    if cls == "element-wise":
        trans = name.rstrip("_") in TRANSCENDENTAL_ATEN
        return out, out if trans else 0
    return 0, 0


def _attention(q: Shape, k: Shape, v: Shape) -> tuple[int, int]:
    batch = _numel(q[:-2])
    length, e, s, ev = int(q[-2]), int(q[-1]), int(k[-2]), int(v[-1])
    scores = batch * length * s
    return 2 * scores * e + 2 * scores * ev + 4 * scores, scores


def unique_bytes(shape: Shape, stride: Shape, itemsize: int) -> int:
    """Bytes of the distinct elements a strided view addresses (a stride-0 dim once)."""
    return math.prod(int(n) for n, st in zip(shape, stride) if st != 0) * itemsize


# ---- generated kernels and library calls of a compiled graph ----

def _value(x: sympy.Expr) -> int | None:
    x = sympy.sympify(x)
    return int(x) if x.is_number else None


def kernel_flops(kernel: Kernel) -> tuple[int | None, int | None]:
    """(FLOPs, transcendentals) of one generated kernel per call; None with symbolic sizes."""
    flops = trans = sympy.Integer(0)
    for n in kernel.nodes:
        runs = product(kernel.outer) * (product(kernel.inner) if n.level == "full" else 1)
        ops = [x for x in walk(n.body) if isinstance(x, Op) and x.op in IR_FLOAT_OPS
               and x.dtype.is_floating_point]
        count = len(ops) + (1 if isinstance(n.buf, Reduction) else 0)
        flops += runs * count
        trans += runs * sum(1 for x in ops if x.op in TRANSCENDENTAL_IR)
    return _value(flops), _value(trans)


def extern_flops(graph: GraphIR, extern: Extern) -> tuple[int | None, int | None]:
    """(FLOPs, transcendentals) of a library call from its arguments' shapes."""
    shapes: list[Shape] = []

    def collect(x: object) -> None:
        if isinstance(x, BufferRef):
            shapes.append(x.shape)
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)

    collect(extern.args)
    if extern.multi:
        outs = [b.shape for b in graph.buffers
                if isinstance(b, ExternOutput) and b.source == extern.name]
    else:
        outs = [extern.shape]
    values = [[_value(s) for s in sh] for sh in shapes + outs]
    if any(v is None for sh in values for v in sh):
        return None, None
    groups = 1
    if "convolution" in short_name(extern.target):
        ints = [a for a in extern.args if isinstance(a, int)]
        groups = ints[-1] if ints else 1
    try:
        return op_flops(extern.target, values[:len(shapes)], values[len(shapes):], groups)
    except (IndexError, ValueError, TypeError):
        return None, None
