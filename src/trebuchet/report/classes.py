"""Operator classes of the memory-wall report (Ivanov et al., "Data Movement Is All
You Need", MLSys 2021): every eager ATen op, generated kernel and library call falls
into exactly one.

    contraction    matrix products, convolutions, attention (library calls)
    normalization  layer/batch/group/RMS norm, softmax, and reductions (sum, mean, max...)
    element-wise   pointwise arithmetic and activations (ATen's `pointwise` tag)
    data movement  copies, layout changes, views, cat, index, gather, embedding
    other          everything else (allocation, random numbers, ...)

ATen ops are classified by name (the profiler gives names, the dispatcher gives
overloads; both go through `classify_op`), with ATen's own `pointwise` and
`reduction` tags deciding the ops no list names. A generated kernel is classified by
its shape and the ops it fuses (`classify_kernel`).
"""
from __future__ import annotations

from typing import Iterable

import torch

CLASSES = ("contraction", "normalization", "element-wise", "data movement", "other")
LABELS = {"contraction": "tensor contraction", "normalization": "normalization",
          "element-wise": "element-wise", "data movement": "data movement", "other": "other"}

CONTRACTION = frozenset({
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "mv", "addmv", "dot", "vdot",
    "einsum", "tensordot", "convolution", "_convolution", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "mkldnn_convolution",
    "convolution_backward", "_int_mm", "_weight_int8pack_mm",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_cudnn_attention", "_efficient_attention_forward", "_flash_attention_forward",
})
NORMALIZATION = frozenset({
    "layer_norm", "native_layer_norm", "native_layer_norm_backward", "group_norm",
    "native_group_norm", "native_group_norm_backward", "batch_norm", "native_batch_norm",
    "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "native_batch_norm_backward", "_batch_norm_impl_index",
    "_batch_norm_with_update", "batch_norm_backward", "rms_norm", "_fused_rms_norm",
    "_fused_rms_norm_backward", "softmax", "_softmax", "log_softmax", "_log_softmax",
    "_softmax_backward_data", "_log_softmax_backward_data", "instance_norm", "norm",
    "linalg_vector_norm", "var_mean", "var", "std", "std_mean", "mean", "sum", "prod", "amax",
    "amin", "max", "min", "argmax", "argmin", "logsumexp", "cumsum", "nll_loss", "nll_loss_forward",
    "nll_loss_backward", "cross_entropy_loss", "any", "all",
})
DATA_MOVEMENT = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand",
    "expand_as", "unsqueeze", "squeeze", "slice", "select", "as_strided", "contiguous", "clone",
    "copy", "copy_", "_to_copy", "to", "cat", "stack", "index", "index_select", "embedding",
    "embedding_backward", "embedding_dense_backward", "gather", "scatter", "scatter_add",
    "index_put", "index_put_", "_index_put_impl_", "index_add", "index_copy", "split",
    "split_with_sizes", "chunk", "narrow", "flatten", "unflatten", "unbind", "repeat", "pad",
    "constant_pad_nd", "alias", "detach", "lift_fresh", "view_as", "unfold", "roll", "flip",
    "masked_select", "slice_scatter", "select_scatter", "as_strided_scatter", "tril", "triu",
    "movedim", "swapaxes", "narrow_copy", "select_backward", "slice_backward", "_unsafe_index",
    "take_along_dim", "nonzero", "repeat_interleave", "type_as", "masked_scatter",
})


def short_name(op: object) -> str:
    """'aten::add', 'aten.add.Tensor', an OpOverload -> 'add' (in-place '_' kept)."""
    packet = getattr(op, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    text = str(op)
    for prefix in ("aten::", "aten."):
        text = text.removeprefix(prefix)
    return text.split(".")[0]


def _tags(name: str) -> set:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        packet = getattr(torch.ops.aten, name.rstrip("_"), None)
    if packet is None:
        return set()
    tags: set = set()
    for overload in packet.overloads():
        tags.update(getattr(packet, overload).tags)
    return tags


_cache: dict[str, str] = {}


def classify_op(op: object) -> str:
    """The class of one ATen op (a name or an OpOverload)."""
    name = short_name(op)
    if name in _cache:
        return _cache[name]
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    if base in CONTRACTION:
        cls = "contraction"
    elif base in NORMALIZATION:
        cls = "normalization"
    elif base in DATA_MOVEMENT or name in DATA_MOVEMENT:
        cls = "data movement"
    else:
        tags = _tags(name)
        if torch.Tag.pointwise in tags:
            cls = "element-wise"
        elif torch.Tag.reduction in tags:
            cls = "normalization"
        elif torch.Tag.view_copy in tags or torch.Tag.inplace_view in tags:
            cls = "data movement"
        else:
            cls = "other"
    _cache[name] = cls
    return cls


def classify_kernel(kind: str, ops: Iterable[object]) -> str:
    """A generated kernel: "reduction" kernels are normalization, scatter kernels (indexed
    writes) data movement; pointwise kernels are data movement when every op they fuse moves
    data (a copy, a gather, cat), else element-wise."""
    if kind == "scatter":
        return "data movement"
    if kind != "pointwise":
        return "normalization"
    classes = {classify_op(o) for o in ops}
    if classes and classes <= {"data movement", "other"}:
        return "data movement"
    return "element-wise"
