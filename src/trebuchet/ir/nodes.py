"""Buffers: the tensor-level nodes of the IR, and the graph that holds them.

Lowering turns an ATen FX graph into a `GraphIR`: an ordered list of buffers,
each either an input, a computed buffer (a `Pointwise` or `Reduction` body over
an iteration space, or a `Scatter`: initial contents, then indexed writes in entry
order) or an `Extern` (an eager ATen call). Sizes and strides are
sympy expressions; loop variables are the symbols `i0, i1, ...` for the output
dimensions and `r0, r1, ...` for reduced dimensions.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Sequence

import sympy
import torch

from .expr import Expr, loads


def index_vars(n: int, prefix: str = "i") -> list[sympy.Symbol]:
    return [sympy.Symbol(f"{prefix}{k}", integer=True, nonnegative=True) for k in range(n)]


def contiguous_strides(shape: Sequence[sympy.Expr]) -> tuple[sympy.Expr, ...]:
    strides: list[sympy.Expr] = []
    acc: sympy.Expr = sympy.Integer(1)
    for size in reversed(shape):
        strides.append(acc)
        acc = acc * size
    return tuple(reversed(strides))


def linear_index(idx: Sequence[sympy.Expr], strides: Sequence[sympy.Expr],
                 offset: sympy.Expr = sympy.Integer(0)) -> sympy.Expr:
    total = sympy.Add(offset, *(i * s for i, s in zip(idx, strides)))
    if sympy.sympify(offset).is_number and all(sympy.sympify(s).is_number for s in strides):
        return total   # number * sum distributes by itself: already expanded (expand is slow)
    return sympy.expand(total)


def product(xs: Sequence[sympy.Expr]) -> sympy.Expr:
    out: sympy.Expr = sympy.Integer(1)
    for x in xs:
        out = out * x
    return out


@dataclasses.dataclass(eq=False)
class Buffer:
    """A named tensor in memory, `shape` and `stride` in elements. `source` is the
    user's source line that produced it, where TorchDynamo recorded one."""

    name: str
    shape: tuple[sympy.Expr, ...]
    dtype: torch.dtype
    stride: tuple[sympy.Expr, ...]
    source: str = dataclasses.field(default="", kw_only=True)

    def numel(self) -> sympy.Expr:
        return product(self.shape)

    def reads(self) -> set[str]:
        return set()


@dataclasses.dataclass(eq=False)
class InputBuffer(Buffer):
    """A graph input tensor; `position` is its index in the argument list."""

    position: int = 0


@dataclasses.dataclass(eq=False)
class ConstantBuffer(Buffer):
    """A tensor constant captured by the graph (lifted attribute, e.g. a mask)."""

    value: torch.Tensor | None = None


@dataclasses.dataclass(eq=False)
class Pointwise(Buffer):
    """out[i0..in] = body, with body over the symbols index_vars(len(shape))."""

    body: Expr | None = None
    origins: tuple[str, ...] = ()   # ATen ops whose work this buffer computes

    def reads(self) -> set[str]:
        return {ld.buf for ld in loads(self.body)}


# Reduction types and their identity; argmax/argmin produce int64 positions.
REDUCTION_TYPES = ("sum", "prod", "max", "min", "argmax", "argmin", "any", "all")


@dataclasses.dataclass(eq=False)
class Reduction(Buffer):
    """out[i..] = reduce_type over r.. in reduce_ranges of body(i.., r..).

    `shape` holds the kept (outer) dims only; keepdim is a view on top.
    """

    body: Expr | None = None
    reduce_ranges: tuple[sympy.Expr, ...] = ()
    reduce_type: str = "sum"
    origins: tuple[str, ...] = ()

    def reads(self) -> set[str]:
        return {ld.buf for ld in loads(self.body)}


@dataclasses.dataclass(eq=False)
class Scatter(Buffer):
    """Indexed writes in a fixed order (index_put accumulating, scatter_add):

        out[i..] = init                                   over the output's vars i0..
        for each point i.. of `ranges` (independent: distinct points write distinct elements)
            for r0 in 0 .. entries - 1, in increasing order:
                out[index + dynamic] = update

    In the second part the vars i0.. run over `ranges` and r0 over the entries. `index` is
    the static part of the written element's flat offset, `dynamic` its data-dependent part
    (checked indices times strides, as a `Load`'s). `update` may load out itself at that
    element (`Load(name, index, dtype, dynamic)`: the value so far, for an accumulation), so
    every element sees its entries one after another in entry order, as eager's serial
    kernels do.
    """

    init: Expr | None = None
    ranges: tuple[sympy.Expr, ...] = ()
    entries: sympy.Expr = sympy.Integer(1)
    index: sympy.Expr = sympy.Integer(0)
    dynamic: Expr | None = None
    update: Expr | None = None
    origins: tuple[str, ...] = ()

    def exprs(self) -> list[Expr]:
        """Every expression it computes: init, the dynamic offset, update."""
        return [e for e in (self.init, self.dynamic, self.update) if e is not None]

    def reads(self) -> set[str]:
        return {ld.buf for e in self.exprs() for ld in loads(e)} - {self.name}


@dataclasses.dataclass(eq=False)
class Extern(Buffer):
    """An eager ATen call. `args`/`kwargs` hold `BufferRef`s where tensors go.

    A multi-output op is one Extern with `shape=()` and `outputs` listing the
    `ExternOutput` buffers taken from its result tuple.
    """

    target: Any = None
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    multi: bool = False

    def reads(self) -> set[str]:
        out: set[str] = set()
        _collect_refs((self.args, self.kwargs), out)
        return out


def op_short_name(target: Any) -> str:
    """An ATen op's name without namespace and overload ("mm" for aten.mm.default);
    "" for targets that are not ATen ops."""
    return getattr(getattr(target, "overloadpacket", None), "__name__", "")


@dataclasses.dataclass(eq=False)
class ExternOutput(Buffer):
    """Output `item` (a path of tuple indices) of a multi-output Extern."""

    source: str = ""
    item: tuple[int, ...] = ()

    def reads(self) -> set[str]:
        return {self.source}


@dataclasses.dataclass(frozen=True)
class BufferRef:
    """A tensor argument of an Extern: a strided view of a buffer."""

    buf: str
    shape: tuple[sympy.Expr, ...]
    stride: tuple[sympy.Expr, ...]
    offset: sympy.Expr


def _collect_refs(obj: Any, out: set[str]) -> None:
    if isinstance(obj, BufferRef):
        out.add(obj.buf)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _collect_refs(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _collect_refs(x, out)


@dataclasses.dataclass(frozen=True)
class OpaqueInput:
    """A graph input that is neither a tensor nor a size: an object the graph only passes
    on, to library calls or back out (DTensor's script objects, which AOTAutograd threads
    from the forward to the backward). It is bound by name, never captured at compile time."""

    name: str
    position: int


@dataclasses.dataclass
class GraphOutput:
    """What the graph returns at one output position."""

    kind: str                     # "ref" (a strided view of a buffer), "none", "value"
    ref: BufferRef | None = None
    value: Any = None             # python scalar/SymInt expression for kind == "value"


SOURCE_VALUE = sympy.Symbol("_v", integer=True)


class SymbolSource(typing.NamedTuple):
    """Where a size symbol's value comes from at run time: a graph input's size, stride or
    int value, and `formula`, the symbol as an expression of that value (`SOURCE_VALUE`)
    when the input holds an expression of it (an input `2*s27` gives s27 = _v // 2)."""

    position: int
    kind: str                     # "size" | "stride" | "int"
    dim: int = 0
    formula: sympy.Expr = SOURCE_VALUE

    def read_code(self) -> str:
        """Python source reading the input's value from `args`."""
        return {"size": f"args[{self.position}].size({self.dim})",
                "stride": f"args[{self.position}].stride({self.dim})",
                "int": f"args[{self.position}]"}[self.kind]

    def value(self, args: list) -> int:
        a = args[self.position]
        v = a.size(self.dim) if self.kind == "size" else a.stride(self.dim) if self.kind == "stride" \
            else int(a)
        if self.formula == SOURCE_VALUE:
            return v
        return int(self.formula.subs(SOURCE_VALUE, v))


@dataclasses.dataclass
class GraphIR:
    """The lowered graph: buffers in execution order, and what to return."""

    inputs: list[InputBuffer]
    buffers: list[Buffer]
    outputs: list[GraphOutput]
    # size symbol -> where its value is read at run time (see SymbolSource)
    symbol_sources: dict[sympy.Symbol, "SymbolSource"]
    num_args: int = 0
    constants: list[ConstantBuffer] = dataclasses.field(default_factory=list)
    opaque_inputs: list[OpaqueInput] = dataclasses.field(default_factory=list)

    def buffer(self, name: str) -> Buffer:
        return self._by_name[name]

    def __post_init__(self) -> None:
        self._by_name = {b.name: b for b in self.inputs}
        self._by_name.update({b.name: b for b in self.constants})
        self._by_name.update({b.name: b for b in self.buffers})

    def add(self, buf: Buffer) -> None:
        self._by_name[buf.name] = buf
