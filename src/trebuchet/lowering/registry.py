"""The lowering table and the values lowering rules pass around.

A rule turns one ATen op into IR. It receives `TensorValue`s for tensor
arguments: lazy tensors whose elements are given by a `loader` (index -> Expr).
Pointwise work and views compose loaders without touching memory, so chains
of them fuse by construction; `LoweringContext.materialize` turns a value into
a buffer when something needs real memory (an Extern, a graph output, a value
read by many consumers).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import sympy
import torch

from ..ir.expr import Expr, Load, loads, op_count
from ..ir.nodes import (Buffer, BufferRef, Pointwise, contiguous_strides, index_vars,
                        linear_index)

Loader = Callable[[Sequence[sympy.Expr]], Expr]
# A value read by several consumers is stored once its expression streams more buffers
# than this (each reader would read them all again): ViT-Tiny's residual stream otherwise
# had its layer norms read up to nine buffers each (2-3% of its step).
STREAMED_LIMIT = 2
LOWERINGS: dict[Any, Callable] = {}


def register_lowering(*targets: Any) -> Callable:
    """Register `fn(ctx, *args, **kwargs)` as the rule for each ATen op (packet or overload)."""

    def wrap(fn: Callable) -> Callable:
        for t in targets:
            for overload in _overloads(t):
                LOWERINGS[overload] = fn
        return fn

    return wrap


def _overloads(target: Any) -> list[Any]:
    if isinstance(target, torch._ops.OpOverloadPacket):
        return [getattr(target, name) for name in target.overloads()]
    return [target]


def lookup(target: Any) -> Callable | None:
    return LOWERINGS.get(target)


def call_rule(ctx: "LoweringContext", target: Any, *args: Any, **kwargs: Any) -> Any:
    """Lower `target` applied to `args` with its own rule, as one step of another op's rule
    (a rule written as the steps of a decomposition: lowering/layer_norm.py)."""
    saved = ctx.current_target
    ctx.current_target = target
    try:
        return LOWERINGS[target](ctx, *args, **kwargs)
    finally:
        ctx.current_target = saved


def call_step(ctx: "LoweringContext", users: int, target: Any, *args: Any, **kwargs: Any) -> Any:
    """`call_rule`, its result stored if `users` later steps would otherwise each recompute
    it at length: what lowering the decomposed graph did with an FX node of that many users."""
    return stored_if_reread(ctx, call_rule(ctx, target, *args, **kwargs), users)


def stored_if_reread(ctx: "LoweringContext", value: Any, users: int) -> Any:
    """`value`, stored (and remembered: every holder of it loads it from then on) when
    `users` readers would otherwise each recompute it at length (`should_realize`)."""
    if isinstance(value, TensorValue) and ctx.should_realize(value, users):
        return ctx.realize(value)
    return value


def to_dtype(ctx: "LoweringContext", x: "TensorValue", dtype: torch.dtype, users: int = 1) -> "TensorValue":
    """A decomposition's `x.to(dtype)` as a step read by `users` later steps. When x has the
    dtype already, `to` returns x itself, whose FX node then had those readers too: x is
    stored as lowering that graph stored it."""
    if x.dtype == dtype:
        return stored_if_reread(ctx, x, users)
    return call_step(ctx, users, torch.ops.aten._to_copy.default, x, dtype=dtype)


class Origin(str):
    """An ATen op name in a value's `origins`, with the user's source line that called it
    (where TorchDynamo recorded one): a kernel's comment and error messages name the
    ops it fused, and its `from:` line their source lines."""

    source: str

    def __new__(cls, op: str, source: str = "") -> "Origin":
        self = super().__new__(cls, op)
        self.source = source
        return self

    def __reduce__(self) -> tuple:
        return Origin, (str(self), self.source)


def merge_origins(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The origins of several values, in order, each op and source line once."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for group in groups:
        for o in group:
            key = (str(o), getattr(o, "source", ""))
            if o and key not in seen:
                seen.add(key)
                out.append(o)
    return tuple(out)


@dataclasses.dataclass
class TensorValue:
    """A tensor as lowering sees it: shape, dtype and how to load any element."""

    shape: tuple[sympy.Expr, ...]
    dtype: torch.dtype
    loader: Loader
    ref: BufferRef | None = None        # set when it is an exact strided view of a buffer
    origins: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def load(self, idx: Sequence[sympy.Expr]) -> Expr:
        return self.loader(idx)


def value_from_ref(ref: BufferRef, dtype: torch.dtype, origins: tuple[str, ...] = ()) -> TensorValue:
    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        return Load(ref.buf, linear_index(idx, ref.stride, ref.offset), dtype)

    return TensorValue(tuple(ref.shape), dtype, loader, ref, origins)


def sym_expr(value: Any) -> Any:
    """A SymInt/SymFloat/SymBool as a sympy expression; plain values unchanged."""
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return value.node.expr
    return value


class LoweringError(Exception):
    """A rule cannot handle these arguments; the op becomes an Extern instead."""


@dataclasses.dataclass
class LoweringContext:
    """Per-graph state shared by all rules: the buffers created so far."""

    buffers: list[Buffer] = dataclasses.field(default_factory=list)
    counter: int = 0
    current_origin: str = ""
    current_target: Any = None
    current_source: str = ""
    input_names: set = dataclasses.field(default_factory=set)
    constants: list = dataclasses.field(default_factory=list)
    # How many ops an expression may hold before a multi-use value is stored.
    inline_limit: int = 8
    # The accumulator of float16/bfloat16/float32 sums (the target's float_sum_dtype).
    float_acc: torch.dtype = torch.float64

    current_meta: Any = None
    # FX nodes whose values are stored channels-last (lowering/layout.py), and the library
    # calls whose result is declared so (not in eager's layout: never returned as is).
    channels_last: set = dataclasses.field(default_factory=set)
    relaid_out: set = dataclasses.field(default_factory=set)
    # Graph outputs (FX nodes) returned in the plan's layout (saved activations): their strides.
    free_outputs: dict = dataclasses.field(default_factory=dict)
    # The layout plan's memory order of the node's result (its first, if several), None
    # for eager's: a rule that stores a value in its output's layout follows it.
    current_order: list | None = None

    def out_meta(self) -> Any:
        """The fake tensor of the node being lowered (its first, if several)."""
        meta = self.current_meta
        return meta[0] if isinstance(meta, (list, tuple)) else meta

    def out_dtype(self) -> torch.dtype:
        return self.out_meta().dtype

    def new_name(self, prefix: str = "buf") -> str:
        self.counter += 1
        return f"{prefix}{self.counter - 1}"

    def add(self, buf: Buffer) -> Buffer:
        buf.source = buf.source or self.current_source
        self.buffers.append(buf)
        return buf

    def materialize(self, value: TensorValue, stride: Sequence[sympy.Expr] | None = None) -> BufferRef:
        """Give `value` real memory (contiguous unless `stride` is given); return its ref."""
        if value.ref is not None and stride is None:
            return value.ref
        shape = tuple(value.shape)
        stride = tuple(stride) if stride is not None else contiguous_strides(shape)
        idx = index_vars(len(shape))
        body = value.load(idx)
        name = self.new_name()
        self.add(Pointwise(name, shape, value.dtype, stride, body=body,
                           origins=value.origins or (self.current_origin,)))
        return BufferRef(name, shape, stride, sympy.Integer(0))

    def realize(self, value: TensorValue) -> TensorValue:
        """Materialize and return a value that loads from the new buffer."""
        if value.ref is not None:
            return value
        return self.remember(value, self.materialize(value))

    def remember(self, value: TensorValue, ref: BufferRef) -> TensorValue:
        """From now on `value` (the object every later user of it holds, views of it
        included) loads from `ref`, where it has been stored, instead of recomputing."""
        stored = value_from_ref(ref, value.dtype, value.origins)
        value.ref, value.loader = stored.ref, stored.loader
        return value

    def should_realize(self, value: TensorValue, num_users: int) -> bool:
        """Whether to store a value that many consumers would otherwise recompute at length
        (more than `inline_limit` ops), or each re-read from more than `STREAMED_LIMIT`
        buffers of its own size (a residual stream x + a + b + ... would otherwise be
        summed again from every branch's output by each reader, layer after layer)."""
        if value.ref is not None or not value.shape:
            return False
        idx = index_vars(len(value.shape))
        body = value.load(idx)
        size = op_count(body)
        if size > 200 or (num_users > 1 and size > self.inline_limit):
            return True
        return num_users > 1 and streamed_buffers(loads(body), idx, value.shape) > STREAMED_LIMIT


def streamed_buffers(reads: Sequence[Load], idx: Sequence[sympy.Symbol], shape: Sequence[Any]) -> int:
    """How many buffers `reads` read element for element over `shape`: their index varies
    along every dimension of more than one element (a per-channel scale or a broadcast row
    does not count; it stays in cache)."""
    varying = {v for v, n in zip(idx, shape) if n != 1}
    return len({r.buf for r in reads if varying <= r.index.free_symbols})
