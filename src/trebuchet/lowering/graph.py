"""Lower an ATen FX graph (from AOTAutograd) into a `GraphIR`.

Walks the nodes in order; each call goes through its rule from the lowering
table, or becomes an `Extern` (the eager ATen op) when there is no rule or the
rule declines. Records which ops were lowered, run as externs by design, or
fell back. How values that must be in memory are stored (extern arguments,
outputs) is `storage.py`'s part.

Devices: `graph_device` says which device a graph computes on (the pipeline picks the
target by it); a graph whose tensors are on several devices fails to compile, except for
0-d CPU tensors, which eager lets meet tensors of any device (a CPU scalar tensor times a
CUDA tensor). An op that reads or makes a tensor off the target's device (such a scalar)
runs as an extern, the eager op, so generated kernels only touch the target's memory.
"""
from __future__ import annotations

import collections
import operator
import re
from typing import Any, Collection

import sympy
import torch
import torch.fx
from torch.utils._sympy.functions import FloorDiv

from ..errors import TrebuchetWarning
from ..ir import symbolic
from ..ir.nodes import (SOURCE_VALUE, BufferRef, ConstantBuffer, Extern, ExternOutput, GraphIR, GraphOutput,
                        InputBuffer, OpaqueInput, SymbolSource, op_short_name)
from ..warn import warn_user
from . import avg_pooling, layer_norm, misc, norms, pointwise, pooling, reductions, scatter, views  # noqa: F401  (fill the table)
from .layout import (CHANNELS_LAST, channels_last_plan, channels_last_strides, is_conv2d,
                     is_conv2d_backward, prefers_nchw)
from .registry import (LoweringContext, LoweringError, Origin, TensorValue, lookup, merge_origins, sym_expr,
                       value_from_ref)
from .storage import (SAME_ORDER_VIEW_OPS, VIEW_OPS, extern_arg, graph_output, graph_outputs, graph_returns,
                      memory_order, meta_layout, realize_like, viewed_bases)

aten = torch.ops.aten

# Ops that are library calls by design (BLAS/oneDNN); everything else without a
# rule counts as a fallback.
EXTERN_BY_DESIGN = {
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "dot", "mv", "addmv", "convolution",
    "convolution_backward", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward",
    "linear", "_weight_int8pack_mm",
}


def _read_by_library(node: torch.fx.Node, depth: int = 0) -> bool:
    """Whether an extern (a library call, or an op without a lowering rule) reads the
    node's value, directly or through views."""
    for user in node.users:
        if not isinstance(user.target, torch._ops.OpOverload):
            continue
        short = op_short_name(user.target)
        if short in VIEW_OPS:
            if depth < 4 and _read_by_library(user, depth + 1):
                return True
        elif short in EXTERN_BY_DESIGN or lookup(user.target) is None:
            return True
    return False


class OpCounts:
    """Which ATen ops went where, for trebuchet.stats()."""

    def __init__(self) -> None:
        self.lowered: collections.Counter = collections.Counter()
        self.extern: collections.Counter = collections.Counter()
        self.fallback: collections.Counter = collections.Counter()


def op_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def graph_device(gm: torch.fx.GraphModule) -> torch.device | None:
    """The device of the graph's tensors (inputs, results and constants), not counting 0-d
    CPU tensors; None when it has no others. LoweringError for tensors on several devices."""
    found: dict[torch.device, str] = {}
    for node in gm.graph.nodes:
        values = _tensors(node.meta.get("val"))
        if node.op == "get_attr":
            values = _tensors(_fetch_attr(gm, node.target))
        for t in values:
            if t.device.type == "cpu" and t.ndim == 0:
                continue
            found.setdefault(t.device, node.name)
    if len(found) > 1:
        where = ", ".join(f"{d} ({n})" for d, n in found.items())
        raise LoweringError(f"the graph's tensors are on several devices: {where}")
    return next(iter(found), None)


def lower_graph(gm: torch.fx.GraphModule, counts: OpCounts, inline_limit: int = 8,
                device: str = "cpu", float_acc: torch.dtype = torch.float64,
                channels_last: bool = False, free_outputs: Collection[int] = ()) -> GraphIR:
    """`inline_limit`: ops a value read by several consumers may hold before it is stored;
    `channels_last`: keep the activations around 2-d convolutions NHWC (lowering/layout.py);
    `free_outputs`: the output positions whose layout is ours to choose (a training
    forward graph's saved activations; the plan's are returned channels-last);
    `device`: the device type the target's kernels run on (ops off it run as externs);
    `float_acc`: the accumulator of float16/bfloat16/float32 sums (the target's)."""
    ctx = LoweringContext(inline_limit=inline_limit, float_acc=float_acc)
    if channels_last and device == "cpu":
        ctx.channels_last, ctx.free_outputs = channels_last_plan(gm, free_outputs)
    env: dict[torch.fx.Node, Any] = {}
    inputs: list[InputBuffer] = []
    symbol_sources: dict[sympy.Symbol, SymbolSource] = {}
    position = 0
    outputs: list[GraphOutput] = []
    returned = set(graph_returns(gm))
    viewed = viewed_bases(returned)
    early: dict[torch.fx.Node, GraphOutput] = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("val")
        if node.op == "placeholder":
            env[node] = _placeholder(node, meta, position, inputs, symbol_sources, ctx)
            position += 1
        elif node.op == "call_function":
            env[node] = _call(ctx, node, meta, env, counts, device)
            if (node in returned and op_short_name(node.target) not in VIEW_OPS
                    and isinstance(env[node], TensorValue) and env[node].ref is None):
                # Stored where it is computed (a saved activation, in the kernel that
                # uses it), not recomputed at the end from inputs kept alive till then.
                early[node] = graph_output(ctx, node, env)
            elif (node in viewed and isinstance(env[node], TensorValue) and env[node].ref is None
                    and env[node].ndim):
                ctx.realize(env[node])     # returned through a view (a saved activation)
        elif node.op == "get_attr":
            env[node] = _constant(ctx, _fetch_attr(gm, node.target), device)
        elif node.op == "output":
            outputs = graph_outputs(ctx, graph_returns(gm), env, early)
    free = set()
    for b in ctx.buffers:
        for s in list(b.shape) + list(b.stride):
            free |= sympy.sympify(s).free_symbols
    missing = {s for s in free if s not in symbol_sources and not str(s).startswith(("i", "r"))}
    if missing:
        raise LoweringError(f"size symbols {sorted(map(str, missing))} have no source input")
    opaque = [v for v in env.values() if isinstance(v, OpaqueInput)]
    return GraphIR(inputs, ctx.buffers, outputs, symbol_sources, position, ctx.constants, opaque)


def _placeholder(node: torch.fx.Node, meta: Any, position: int, inputs: list[InputBuffer],
                 symbol_sources: dict, ctx: LoweringContext) -> Any:
    """An input's value; the size symbols it carries get a source (see `_bind`)."""
    if isinstance(meta, torch.Tensor):
        shape = tuple(sympy.sympify(sym_expr(s)) for s in meta.shape)
        stride = tuple(sympy.sympify(sym_expr(s)) for s in meta.stride())
        for kind, values in (("size", shape), ("stride", stride)):
            for d, v in enumerate(values):
                _bind(v, SymbolSource(position, kind, d), symbol_sources)
        name = f"in{position}"
        buf = InputBuffer(name, shape, meta.dtype, stride, position=position)
        inputs.append(buf)
        ctx.input_names.add(name)
        return value_from_ref(BufferRef(name, shape, stride, sympy.Integer(0)), meta.dtype)
    expr = sym_expr(meta)
    if isinstance(expr, (int, float, bool)) or (isinstance(expr, sympy.Expr) and expr.is_number):
        return expr      # a size input that was specialized to a constant
    if isinstance(expr, sympy.Expr) and isinstance(meta, torch.SymInt):
        _bind(expr, SymbolSource(position, "int"), symbol_sources)
        return expr
    if isinstance(meta, (torch.SymFloat, torch.SymBool, float, bool)):
        raise LoweringError(f"graph input of type {type(meta).__name__} is not supported")
    return OpaqueInput(f"in{position}", position)


def _bind(expr: sympy.Expr, source: SymbolSource, symbol_sources: dict) -> None:
    """Record where the value of a size symbol in `expr` can be read at run time.

    AOTAutograd passes a size as a plain symbol (`s27`), again as a symbol already
    seen (two inputs of one length), or as an expression (`2*s27`, a saved size in a
    backward graph). An expression `a*s + b` whose only unbound symbol is `s` binds
    s = (value - b) // a; other expressions bind nothing (their symbols must come from
    elsewhere, which `lower_graph` checks)."""
    if not isinstance(expr, sympy.Expr) or expr.is_number:
        return
    if isinstance(expr, sympy.Symbol):
        symbol_sources.setdefault(expr, source)
        return
    unbound = [s for s in expr.free_symbols if s not in symbol_sources]
    if len(unbound) != 1:
        return
    sym = unbound[0]
    poly = sympy.Poly(expr, sym)
    if poly.degree() != 1:
        return
    a, b = poly.all_coeffs()
    if a.is_Integer and b.is_Integer:    # the formula reads the one input value only
        symbol_sources[sym] = source._replace(formula=FloorDiv(SOURCE_VALUE - b, a))


def _fetch_attr(gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _constant(ctx: LoweringContext, value: Any, device: str = "cpu") -> Any:
    if not isinstance(value, torch.Tensor):
        raise LoweringError(f"constant of type {type(value).__name__}")
    if value.device.type != device or value.is_complex() or value.layout != torch.strided:
        raise LoweringError(f"constant tensor that is not a dense {device} tensor "
                            f"({value.device}, {value.dtype}, {value.layout})")
    name = ctx.new_name("const")
    shape = tuple(sympy.Integer(s) for s in value.shape)
    stride = tuple(sympy.Integer(s) for s in value.stride())
    ctx.constants.append(ConstantBuffer(name, shape, value.dtype, stride, value=value))
    ctx.input_names.add(name)
    return value_from_ref(BufferRef(name, shape, stride, sympy.Integer(0)), value.dtype)


def _call(ctx: LoweringContext, node: torch.fx.Node, meta: Any, env: dict, counts: OpCounts,
          device: str = "cpu") -> Any:
    target = node.target
    if target is operator.getitem:
        return env[node.args[0]][node.args[1]]
    if isinstance(target, torch._ops.HigherOrderOperator):
        # e.g. with_effects around an op with side effects: run it as it is.
        name = f"higher_order.{target.name()}"
        counts.fallback[name] += 1
        args = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        return make_extern(ctx, target, args, kwargs, meta, name, node)
    if not isinstance(target, torch._ops.OpOverload):
        # Python arithmetic on sizes (operator.mul on SymInts, sym_size...).
        expr = sym_expr(meta)
        if isinstance(expr, (sympy.Expr, int, float, bool)):
            return expr
        raise LoweringError(f"unsupported call {target}")
    if isinstance(meta, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float)):
        return sym_expr(meta)
    args = torch.fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
    name = op_name(target)
    rule = lookup(target)
    if rule is not None and _fake_ok(meta, device) and _on_device(node, device):
        ctx.current_source = source_line(node)
        ctx.current_origin = Origin(name, ctx.current_source)
        ctx.current_target, ctx.current_meta = target, meta
        orders = _planned_orders(ctx, node, meta)
        ctx.current_order = orders[0] if isinstance(orders, list) else orders
        try:
            result = rule(ctx, *args, **kwargs)
        except LoweringError:
            result = None     # the rule declined: run the op as an extern
        except Exception as e:  # noqa: BLE001 - a rule bug must not give a wrong answer
            warn_user(f"trebuchet: lowering rule for {name} failed ({type(e).__name__}: "
                      f"{e}); running the op eagerly", TrebuchetWarning)
            result = None
        if result is not None and _matches_meta(result, meta):
            counts.lowered[name] += 1
            if op_short_name(target) not in VIEW_OPS:
                _add_origin(result, ctx.current_origin, args)
            if (isinstance(result, TensorValue) and result.ref is None and len(node.users) > 1
                    and op_short_name(target) not in VIEW_OPS - SAME_ORDER_VIEW_OPS
                    and _read_by_library(node)):
                # A library call will read it from memory anyway: store it once, and let
                # its other users load it instead of recomputing it.
                return realize_like(ctx, result, meta, orders)
            return _finish(ctx, result, _readers(node, result), meta, orders)
    short = op_short_name(target)
    (counts.extern if short in EXTERN_BY_DESIGN else counts.fallback)[name] += 1
    return make_extern(ctx, target, args, kwargs, meta, name, node)


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def source_line(node: torch.fx.Node) -> str:
    """The innermost user frame TorchDynamo recorded for the node, as file:line (function)."""
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    if not frames:
        return ""
    path, line, fn = frames[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line} ({fn})"


def _fake_ok(meta: Any, device: str = "cpu") -> bool:
    """Whether an op's results are tensors a kernel of the target can write."""
    vals = meta if isinstance(meta, (list, tuple)) else [meta]
    return all(v is None or (isinstance(v, torch.Tensor) and v.device.type == device
                             and not v.is_complex() and v.layout == torch.strided)
               for v in vals)


def _on_device(node: torch.fx.Node, device: str) -> bool:
    """Whether every tensor an op reads is on the target's device (a 0-d CPU tensor meeting
    CUDA tensors is not: its op runs as the eager op)."""
    read: list[torch.Tensor] = []
    torch.fx.node.map_aggregate((node.args, node.kwargs), lambda a: read.extend(
        _tensors(a.meta.get("val"))) if isinstance(a, torch.fx.Node) else None)
    return all(t.device.type == device for t in read)


def _matches_meta(result: Any, meta: Any) -> bool:
    """A rule's result must have the shape and dtype eager would produce (None where
    eager returns None: an output a backward op was not asked for)."""
    if meta is None or result is None:
        return meta is None and result is None
    if isinstance(meta, (list, tuple)):
        return (isinstance(result, (list, tuple)) and len(result) == len(meta)
                and all(_matches_meta(r, m) for r, m in zip(result, meta)))
    if not isinstance(result, TensorValue) or result.dtype != meta.dtype:
        return False
    shape = [sympy.sympify(sym_expr(s)) for s in meta.shape]
    return len(shape) == result.ndim and all(
        symbolic.equal(a, b) for a, b in zip(shape, result.shape))


def _add_origin(result: Any, origin: str, args: Any) -> None:
    """Name the op in the origins of the value it computed, when its rule did not (data
    movement rules pass their input's origins on): the kernel that fuses an embedding
    says so in its comment, its error messages and trebuchet.stats()["kernel_ops"]."""
    if isinstance(result, (list, tuple)):
        for r in result:
            _add_origin(r, origin, args)
        return
    if isinstance(result, TensorValue) and result.ref is None and not any(result is a for a in args):
        result.origins = merge_origins(result.origins, (origin,))


def _finish(ctx: LoweringContext, result: Any, num_users: Any, meta: Any, orders: Any) -> Any:
    """Store a value many consumers would recompute at length, in the memory order eager
    gives it (a channels-last activation stays channels-last for the convolution and the
    reductions after it), or the layout plan's."""
    if result is None:
        return None
    if isinstance(result, TensorValue):
        return (realize_like(ctx, result, meta, orders) if ctx.should_realize(result, num_users)
                else result)
    metas = meta if isinstance(meta, (list, tuple)) else [None] * len(result)
    users = num_users if isinstance(num_users, list) else [num_users] * len(result)
    return tuple(_finish(ctx, r, n, m, o) for r, n, m, o in zip(result, users, metas, orders))


def _readers(node: torch.fx.Node, result: Any) -> Any:
    """How many nodes read the node's value; per item of a multi-output op (the users
    of its getitem node for that item)."""
    if not isinstance(result, (list, tuple)):
        return len(node.users)
    items = _items(node)
    return [len(items[k].users) if k in items else 0 for k in range(len(result))]


def _items(node: torch.fx.Node) -> dict[int, torch.fx.Node]:
    """A multi-output op's getitem nodes, by the item they take."""
    return {u.args[1]: u for u in node.users if u.target is operator.getitem}


def _planned_order(ctx: LoweringContext, node: torch.fx.Node) -> list[int] | None:
    """The memory order the layout plan gives the node's value (None: eager's)."""
    return CHANNELS_LAST if node in ctx.channels_last else None


def _planned_orders(ctx: LoweringContext, node: torch.fx.Node, result: Any) -> Any:
    """`_planned_order` of a result (or of its traced value), per item of a multi-output
    op (its getitem users)."""
    if not isinstance(result, (list, tuple)):
        return _planned_order(ctx, node)
    items = _items(node)
    return [_planned_order(ctx, items[k]) if k in items else None for k in range(len(result))]


def _traced(x: Any) -> Any:
    """The fake tensors (node meta "val") standing for FX nodes in an argument structure."""
    return torch.fx.node.map_arg(x, lambda n: n.meta.get("val"))


def make_extern(ctx: LoweringContext, target: Any, args: Any, kwargs: Any, meta: Any,
                name: str, node: torch.fx.Node | None = None) -> Any:
    traced_args = _traced(node.args) if node is not None else [None] * len(args)
    traced_kwargs = _traced(node.kwargs) if node is not None else {}
    if node is not None:     # what the arguments' copies are stored for
        ctx.current_source = source_line(node)
        ctx.current_origin = Origin(name, ctx.current_source)
    # A convolution (its backward) in the layout plan reads its input (and output
    # gradient) channels-last, and oneDNN then writes its result (input gradient) so.
    # A convolution outside the plan reads its input in the traced layout (eager's choice);
    # the backward of one that runs faster NCHW reads NCHW tensors (its saved input may be
    # stored channels-last, as the input of another convolution in the plan).
    relaid_args, orders = (), [None] * len(args)
    if node is not None and node in ctx.channels_last:
        relaid_args = (0,) if is_conv2d(node) else (0, 1) if is_conv2d_backward(node) else ()
        for k in relaid_args:
            orders[k] = CHANNELS_LAST
    elif node is not None and is_conv2d(node) and ctx.channels_last:
        orders[0] = memory_order(meta_layout(traced_args[0])[1])
    elif node is not None and is_conv2d_backward(node) and prefers_nchw(node):
        orders[0] = orders[1] = [0, 1, 2, 3]
    e_args = tuple(extern_arg(ctx, v, t, o) for v, t, o in zip(args, traced_args, orders))
    e_kwargs = {k: extern_arg(ctx, v, traced_kwargs.get(k)) for k, v in kwargs.items()}
    buf_name = ctx.new_name()
    if isinstance(meta, torch.Tensor):
        shape, stride = meta_layout(meta)
        if relaid_args:
            stride = channels_last_strides(shape)
            ctx.relaid_out.add(buf_name)
        ctx.add(Extern(buf_name, shape, meta.dtype, stride, target=target, args=e_args,
                       kwargs=e_kwargs))
        return value_from_ref(BufferRef(buf_name, shape, stride, sympy.Integer(0)), meta.dtype)
    ctx.add(Extern(buf_name, (), torch.float32, (), target=target, args=e_args, kwargs=e_kwargs,
                   multi=True))
    return _extern_outputs(ctx, buf_name, meta, (), name, (0,) if relaid_args else None)


def _extern_outputs(ctx: LoweringContext, source: str, meta: Any, path: tuple, name: str,
                    relaid: tuple | None = None) -> Any:
    """The results of a multi-output library call; the one at path `relaid` is declared
    channels-last (a convolution backward's input gradient in the layout plan)."""
    if isinstance(meta, (list, tuple)):
        return tuple(_extern_outputs(ctx, source, m, path + (k,), name, relaid)
                     for k, m in enumerate(meta))
    if isinstance(meta, torch.Tensor):
        shape, stride = meta_layout(meta)
        out_name = ctx.new_name()
        if path == relaid:
            stride = channels_last_strides(shape)
            ctx.relaid_out.add(out_name)
        ctx.add(ExternOutput(out_name, shape, meta.dtype, stride, source=source, item=path))
        return value_from_ref(BufferRef(out_name, shape, stride, sympy.Integer(0)), meta.dtype)
    return sym_expr(meta)


