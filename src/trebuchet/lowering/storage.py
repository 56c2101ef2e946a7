"""Where lowered values live in memory: the storage decisions of lowering.

Lowering keeps values as expressions (recomputed where they are used) until
something needs them in memory. This module decides how such values are stored:

- an extern's tensor argument is stored densely with its dims in the memory
  order eager gave that argument, and passed as a view in its own dim order
  (attention reads transposed heads, a weight gradient's matmul a transposed
  output gradient, without copies), and stays stored for its later users;
- a graph output is stored in eager's layout, written in memory order; an
  output that is a view in the graph is a view of the stored value, as in eager.

`LoweringContext.remember` makes a stored value load from its buffer from then on.
"""
from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch
import torch.fx

from ..ir import symbolic
from ..ir.expr import Expr, Load
from ..ir.nodes import (BufferRef, Extern, ExternOutput, GraphOutput, contiguous_strides, index_vars,
                        linear_index, op_short_name)
from ..ir.simplify import simplify_index
from .registry import LoweringContext, LoweringError, TensorValue, sym_expr


# Ops whose lowering only re-indexes their input; some keep the elements in order.
VIEW_OPS = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "squeeze",
            "unsqueeze", "slice", "select", "alias", "as_strided"}
SAME_ORDER_VIEW_OPS = {"view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "alias"}


def extern_arg(ctx: LoweringContext, x: Any, traced: Any = None,
               order: list[int] | None = None) -> Any:
    """A value as an extern call's argument: a BufferRef where a tensor goes.

    A computed value is stored densely with its dims in the memory order eager gave
    that argument when the graph was traced (`traced`, the FX node's fake tensor), and
    passed as a view in its own dim order, as eager passes it: attention reads the
    heads of a bias-added projection transposed (the add running in place of the matmul
    result), a weight gradient's matmul reads the output gradient transposed; neither
    is copied, and the kernel computing the value writes memory in order.
    `order`, when given, is the memory order to pass a tensor in instead (a channels-last
    convolution input; a stored value in another order is copied, not replaced).
    """
    if isinstance(x, TensorValue) and order is not None:
        if x.ref is None:
            ref = store_in_order(ctx, x, order)
            ctx.remember(x, ref)
            return ref
        if memory_order(x.ref.stride) == order:
            return x.ref
        copy = TensorValue(x.shape, x.dtype, x.loader, None, x.origins or (ctx.current_origin,))
        return store_in_order(ctx, copy, order)
    if isinstance(x, TensorValue):
        if x.ref is not None:
            return x.ref
        order = list(range(x.ndim))
        if isinstance(traced, torch.Tensor):
            shape, stride = meta_layout(traced)
            if len(shape) == x.ndim and all(symbolic.equal(a, b) for a, b in zip(shape, x.shape)):
                order = memory_order(stride) or order
        ref = store_in_order(ctx, x, order)
        ctx.remember(x, ref)      # later users (another call, a bias gradient) load it
        return ref
    if isinstance(x, (list, tuple)):
        seq = traced if isinstance(traced, (list, tuple)) and len(traced) == len(x) else [None] * len(x)
        return type(x)(extern_arg(ctx, v, t) for v, t in zip(x, seq))
    return x


def memory_order(stride: tuple) -> list[int] | None:
    """Dims from outermost to innermost in memory (largest stride first, ties in dim
    order); None when a stride is symbolic. A broadcast dim (stride 0: an expand) goes
    outermost: the dims that address memory keep their order, the last one contiguous
    (ranked by its stride 0 it went innermost, and an attention mask expanded over the
    heads was stored with the heads innermost, its last dim of stride H, which CUDA's
    memory-efficient attention refuses)."""
    if not all(sympy.sympify(s).is_number for s in stride):
        return None
    return sorted(range(len(stride)), key=lambda d: (int(stride[d]) != 0, -int(stride[d]), d))


def store_in_output_layout(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    """x stored once, in the memory format of the result of the op being lowered (the
    layout plan's when it has one, else eager's), and remembered: later loads read it."""
    order = (ctx.current_order or memory_order(tuple(ctx.out_meta().stride()))
             or list(range(x.ndim)))
    return ctx.remember(x, store_in_order(ctx, x, order))


def store_in_order(ctx: LoweringContext, x: TensorValue, order: list[int]) -> BufferRef:
    """x in a new contiguous buffer whose dims are x's dims in `order`, returned as a
    view with x's dim order (so the kernel filling it iterates the memory in order)."""
    if order == sorted(order):
        return ctx.materialize(x)
    def loader(pidx: Sequence[sympy.Expr]) -> Expr:
        idx: list[sympy.Expr] = [sympy.Integer(0)] * x.ndim
        for i, d in enumerate(order):
            idx[d] = pidx[i]
        return x.load(idx)

    ref = ctx.materialize(TensorValue(tuple(x.shape[d] for d in order), x.dtype, loader, None,
                                      x.origins))
    stride: list[sympy.Expr] = [sympy.Integer(0)] * x.ndim
    for i, d in enumerate(order):
        stride[d] = ref.stride[i]
    return BufferRef(ref.buf, tuple(x.shape), tuple(stride), ref.offset)


def realize_like(ctx: LoweringContext, value: TensorValue, meta: Any,
                 order: list[int] | None = None) -> TensorValue:
    """Store `value` once, in the memory order eager gives it (`meta`, the node's fake
    tensor: channels_last stays channels_last, so a convolution reading it gets its input
    in the layout it expects and a returned view of it needs no copy), or in `order`."""
    if value.ref is not None:
        return value
    if order is None and isinstance(meta, torch.Tensor) and meta.ndim == value.ndim and _dense(meta):
        order = memory_order(meta_layout(meta)[1])
    if order is None or order == sorted(order) or any(symbolic.equal(s, 1) for s in value.shape):
        return ctx.realize(value)
    return ctx.remember(value, store_in_order(ctx, value, order))


def meta_layout(meta: torch.Tensor) -> tuple[tuple, tuple]:
    """A traced (fake) tensor's shape and strides as sympy expressions."""
    shape = tuple(sympy.sympify(sym_expr(s)) for s in meta.shape)
    stride = tuple(sympy.sympify(sym_expr(s)) for s in meta.stride())
    return shape, stride


def _is_view(n: Any) -> bool:
    return isinstance(n, torch.fx.Node) and n.op == "call_function" and op_short_name(n.target) in VIEW_OPS


def view_root(n: Any) -> Any:
    """The node a chain of views starts from (n itself when it is not a view)."""
    while _is_view(n):
        n = n.args[0]
    return n


def shared_view_roots(returned: set) -> set:
    """Values computed in the graph that two or more outputs reach through views (or
    return and view): in eager those outputs share memory, so they must here too."""
    reach: dict[torch.fx.Node, int] = {}
    viewed = set()
    for n in returned:
        root = view_root(n)
        if isinstance(root, torch.fx.Node) and root.op == "call_function":
            reach[root] = reach.get(root, 0) + 1
            if root is not n:
                viewed.add(root)
    return {r for r in viewed if reach[r] > 1}


def graph_returns(gm: torch.fx.GraphModule) -> list:
    """What the graph returns, in output order (FX nodes and constants)."""
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    return list(out.args[0]) if isinstance(out.args[0], (list, tuple)) else [out.args[0]]


def viewed_bases(returned: set) -> set:
    """Nodes whose value a returned node views through element-order-keeping views, and
    values several outputs view (`shared_view_roots`): they are stored, and the outputs
    are views of them."""
    bases = shared_view_roots(returned)
    for n in returned:
        if not isinstance(n, torch.fx.Node) or op_short_name(n.target) not in SAME_ORDER_VIEW_OPS:
            continue
        while isinstance(n, torch.fx.Node) and op_short_name(n.target) in SAME_ORDER_VIEW_OPS:
            n = n.args[0]
        if isinstance(n, torch.fx.Node) and n.op == "call_function":
            bases.add(n)
    return bases


def graph_outputs(ctx: LoweringContext, nodes: list, env: dict,
             early: dict[torch.fx.Node, GraphOutput]) -> list[GraphOutput]:
    """The graph's outputs (those stored `early` as they were computed, the others now);
    views after the values they view, so that they are views of the stored values (as
    in eager) rather than copies."""
    shared = shared_view_roots(set(nodes))
    done: dict[int, GraphOutput] = {}
    for k, n in sorted(enumerate(nodes), key=lambda kn: _is_view(kn[1])):
        found = early.get(n) if isinstance(n, torch.fx.Node) else None
        if found is None:
            found = graph_output(ctx, n, env, must_view=_is_view(n) and view_root(n) in shared)
        done[k] = found
    return [done[k] for k in range(len(nodes))]


def graph_output(ctx: LoweringContext, node: Any, env: dict, must_view: bool = False) -> GraphOutput:
    """How an output is returned. `must_view`: it shares memory with another output in
    eager, so a copy would silently break that aliasing; the graph is not lowered then."""
    if node is None:
        return GraphOutput("none")
    if not isinstance(node, torch.fx.Node):
        return GraphOutput("value", value=node)
    value = env[node]
    meta = node.meta.get("val")
    if not isinstance(value, TensorValue):
        return GraphOutput("value", value=value)
    shape, traced = meta_layout(meta)
    traced = ctx.free_outputs.get(node, traced)     # a saved activation in the layout plan's
    stride = traced if _dense(meta) else contiguous_strides(shape)
    ref = value.ref
    if ref is not None and same_layout(shape, ref.stride, traced):
        # eager's strides (a size-1 dim's stride is free, but observable)
        return GraphOutput("ref", ref=BufferRef(ref.buf, ref.shape, traced, ref.offset))
    if ref is not None and (tuple(ref.stride) == stride or ref.buf in ctx.input_names
                            or (_is_extern(ctx, ref.buf) and ref.buf not in ctx.relaid_out)):
        return GraphOutput("ref", ref=ref)
    if value.ref is None and op_short_name(node.target) in VIEW_OPS:
        view = _stored_view(value, traced, ctx.input_names)
        if view is not None:     # a view of a stored value is a view in eager too
            return GraphOutput("ref", ref=view)
    if must_view:
        raise LoweringError(f"output {node.name} views {view_root(node).name}, as another output "
                            "does, and cannot be returned as a view of it")
    fresh = TensorValue(value.shape, value.dtype, value.loader, None, value.origins)
    order = memory_order(stride)
    if order is not None and all(s != 1 for s in shape):
        # eager's layout (a transpose, channels-last), written in memory order
        ref = store_in_order(ctx, fresh, order)
    else:
        ref = ctx.materialize(fresh, stride)
    if value.ref is None:
        ctx.remember(value, ref)     # later outputs viewing it view this buffer
    return GraphOutput("ref", ref=ref)


def same_layout(shape: tuple, stride: tuple, traced: tuple) -> bool:
    """Whether strides address the same elements as the traced ones (size-1 dims aside)."""
    return len(stride) == len(traced) and all(
        symbolic.equal(size, 1) or symbolic.equal(a, b) for size, a, b in zip(shape, stride, traced))


def _stored_view(value: TensorValue, stride: tuple, inputs: set) -> BufferRef | None:
    """`value` as a strided view of a buffer computed in this graph, when its elements are
    exactly that (an alias or reshape of a stored value) with strides `stride`."""
    idx = index_vars(value.ndim)
    e = value.load(idx)
    if not isinstance(e, Load) or e.dynamic is not None or e.dtype != value.dtype or e.buf in inputs:
        return None
    index = simplify_index(sympy.expand(e.index), dict(zip(idx, value.shape)))
    offset = index.subs({v: 0 for v in idx})
    coeffs = [index.coeff(v) for v in idx]
    if sympy.expand(linear_index(idx, coeffs, offset) - index) != 0:
        return None
    if any(size != 1 and not symbolic.equal(c, s) for size, c, s in zip(value.shape, coeffs, stride)):
        return None
    return BufferRef(e.buf, tuple(value.shape), tuple(stride), offset)


def _is_extern(ctx: LoweringContext, name: str) -> bool:
    return any(b.name == name and isinstance(b, (Extern, ExternOutput)) for b in ctx.buffers)


# Newer torch names it "..._or_false" (False where symbolic sizes leave it undecided).
_NON_OVERLAPPING_AND_DENSE = (getattr(torch._prims_common, "is_non_overlapping_and_dense_or_false", None)
                              or getattr(torch._prims_common, "is_non_overlapping_and_dense", None))


def _dense(meta: torch.Tensor) -> bool:
    """Whether a traced tensor's elements fill its memory exactly (any dim order)."""
    try:
        return bool(_NON_OVERLAPPING_AND_DENSE(meta))
    except Exception:
        return False
