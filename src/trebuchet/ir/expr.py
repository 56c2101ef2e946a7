"""Scalar expressions: the body of every generated loop.

A kernel computes, for each point of its iteration space, a scalar expression
tree built from the primitives below. Index arithmetic (which element a load
reads) is a sympy expression over the loop variables; values are `Expr` nodes.

Nodes are immutable and hash-consed by structure (the hash is computed once),
so identical subexpressions compare equal and code generators get common
subexpression elimination for free by memoizing on the node.

Primitive op set (`Op.op`), 60 names at most, each documented in `OPS`.
"""
from __future__ import annotations

import functools

from typing import Callable, Iterable

import sympy
import torch

# name -> (arity, meaning). Every code generator implements each of these;
# tests/test_ir.py checks that they do.
OPS: dict[str, tuple[int, str]] = {
    # arithmetic (computed in the node's dtype)
    "add": (2, "a + b"), "sub": (2, "a - b"), "mul": (2, "a * b"),
    "truediv": (2, "a / b (float)"),
    "floordiv": (2, "floor(a / b), Python semantics for ints and floats"),
    "remainder": (2, "a - floor(a / b) * b, sign of b (Python %)"),
    "fmod": (2, "C fmod: sign of a"),
    "neg": (1, "-a"), "abs": (1, "|a|"), "pow": (2, "a ** b"),
    "maximum": (2, "max, NaN-propagating"), "minimum": (2, "min, NaN-propagating"),
    # transcendental (float only)
    "exp": (1, ""), "expm1": (1, ""), "log": (1, ""), "log2": (1, ""),
    "log10": (1, ""), "log1p": (1, ""), "sqrt": (1, ""), "rsqrt": (1, "1/sqrt(a)"),
    "sin": (1, ""), "cos": (1, ""), "tan": (1, ""), "asin": (1, ""), "acos": (1, ""),
    "atan": (1, ""), "sinh": (1, ""), "cosh": (1, ""), "tanh": (1, ""), "asinh": (1, ""),
    "acosh": (1, ""), "atanh": (1, ""), "erf": (1, ""), "erfc": (1, ""), "lgamma": (1, ""),
    "atan2": (2, ""), "sigmoid": (1, "1 / (1 + exp(-a))"),
    "floor": (1, ""), "ceil": (1, ""), "trunc": (1, ""), "round": (1, "half to even"),
    "isnan": (1, "-> bool"), "isinf": (1, "-> bool"),
    # comparison (-> bool; operands share a dtype)
    "eq": (2, ""), "ne": (2, ""), "lt": (2, ""), "le": (2, ""), "gt": (2, ""), "ge": (2, ""),
    # logical (operands bool)
    "logical_and": (2, ""), "logical_or": (2, ""),   # not a: eq(a, false)
    # bitwise (integers and bool)
    "bitwise_and": (2, ""), "bitwise_or": (2, ""), "bitwise_xor": (2, ""),
    "bitwise_not": (1, ""), "lshift": (2, ""), "rshift": (2, ""),
    # selection and conversion
    "where": (3, "c ? a : b"),
    "check_index": (3, "a data-dependent index a in [0, b); outside it the kernel sets error bit "
                       "c (the call raises INDEX_ERRORS[c]) and reads element 0"),
    "cast": (1, "convert to the node's dtype (float->int truncates toward zero)"),
}
assert len(OPS) <= 60, len(OPS)

# check_index's error bit -> the exception eager raises for an index out of range:
# IndexError for index, index_select, embedding; RuntimeError for gather and scatter.
INDEX_ERRORS: dict[int, type[Exception]] = {1: IndexError, 4: RuntimeError}
# the messages of what a checked kernel raises (both targets)
INDEX_ERROR = ("index out of range: an index tensor of gather, scatter, index, index_select or "
               "embedding holds a value outside [-size, size) of the dimension it indexes")
ZERO_DIVISION_ERROR = "ZeroDivisionError: integer division or remainder by zero"  # eager's words

FLOAT_ONLY = {
    "truediv", "exp", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "erf", "erfc", "lgamma", "atan2", "sigmoid",
}
BOOL_RESULT = {"eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf",
               "logical_and", "logical_or"}


class Expr:
    """Base of scalar expression nodes. `dtype` is the value's torch dtype."""

    __slots__ = ("dtype", "_hash")
    dtype: torch.dtype

    def _key(self) -> tuple:
        raise NotImplementedError

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (self is other) or (
            type(self) is type(other) and self._hash == other._hash  # type: ignore[attr-defined]
            and self._key() == other._key()  # type: ignore[attr-defined]
        )

    def children(self) -> tuple[Expr, ...]:
        return ()


class Load(Expr):
    """Read element `index` (flat, in elements, from the buffer's data pointer).

    `dynamic`, when set, is an int64 Expr added to the index: a data-dependent
    offset (gather, embedding, advanced indexing).
    """

    __slots__ = ("buf", "index", "dynamic")

    def __init__(self, buf: str, index: sympy.Expr, dtype: torch.dtype,
                 dynamic: Expr | None = None):
        self.buf, self.index, self.dtype = buf, sympy.sympify(index), dtype
        self.dynamic = dynamic
        self._hash = hash(("load", buf, self.index, dtype, dynamic))

    def _key(self) -> tuple:
        return (self.buf, self.index, self.dtype, self.dynamic)

    def children(self) -> tuple[Expr, ...]:
        return () if self.dynamic is None else (self.dynamic,)

    def __repr__(self) -> str:
        extra = "" if self.dynamic is None else f" + {self.dynamic!r}"
        return f"{self.buf}[{self.index}{extra}]"


class Const(Expr):
    """A literal. Floats may be inf/nan."""

    __slots__ = ("value",)

    def __init__(self, value: float | int | bool, dtype: torch.dtype):
        if dtype == torch.bool:
            value = bool(value)
        elif not dtype.is_floating_point:
            value = int(value)
        else:
            value = float(value)
        self.value, self.dtype = value, dtype
        # repr() keeps 0.0 and -0.0 apart, and nan equal to itself.
        self._hash = hash(("const", repr(value), dtype))

    def _key(self) -> tuple:
        return (repr(self.value), self.dtype)

    def __repr__(self) -> str:
        return f"{self.value!r}:{str(self.dtype)[6:]}"


class Index(Expr):
    """The integer value of an index expression over the loop variables."""

    __slots__ = ("expr",)

    def __init__(self, expr: sympy.Expr, dtype: torch.dtype = torch.int64):
        self.expr, self.dtype = sympy.sympify(expr), dtype
        self._hash = hash(("index", self.expr, dtype))

    def _key(self) -> tuple:
        return (self.expr, self.dtype)

    def __repr__(self) -> str:
        return f"idx({self.expr})"


class Op(Expr):
    """A primitive from OPS applied to argument expressions."""

    __slots__ = ("op", "args")

    def __init__(self, op: str, args: Iterable[Expr], dtype: torch.dtype):
        args = tuple(args)
        assert op in OPS, op
        assert len(args) == OPS[op][0], (op, args)
        self.op, self.args, self.dtype = op, args, dtype
        self._hash = hash((op, args, dtype))

    def _key(self) -> tuple:
        return (self.op, self.args, self.dtype)

    def children(self) -> tuple[Expr, ...]:
        return self.args

    def __repr__(self) -> str:
        return f"{self.op}({', '.join(map(repr, self.args))})"


# ---- construction helpers -------------------------------------------------------

def cast(x: Expr, dtype: torch.dtype) -> Expr:
    if x.dtype == dtype:
        return x
    if isinstance(x, Const):
        return Const(x.value, dtype) if _const_cast_exact(x.value, dtype) else Op("cast", (x,), dtype)
    return Op("cast", (x,), dtype)


def _const_cast_exact(value: float | int | bool, dtype: torch.dtype) -> bool:
    if dtype.is_floating_point:
        return True
    if dtype == torch.bool:
        return True
    return float(value).is_integer() if isinstance(value, float) else True


def op(name: str, *args: Expr, dtype: torch.dtype | None = None) -> Expr:
    """Build Op(name, args); the dtype defaults to bool for predicates else args[0]'s."""
    if dtype is None:
        dtype = torch.bool if name in BOOL_RESULT else args[-1 if name == "where" else 0].dtype
    return Op(name, args, dtype)


def walk(root: Expr) -> list[Expr]:
    """All distinct nodes below root, children before parents."""
    seen: set[Expr] = set()
    order: list[Expr] = []
    stack: list[tuple[Expr, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((c, False) for c in node.children() if c not in seen)
    return order


def rewrite(root: Expr, leaf_fn: Callable[[Expr], Expr | None]) -> Expr:
    """Rebuild `root`, replacing each leaf (Load/Index/Const) by leaf_fn(leaf) if not None."""
    memo: dict[Expr, Expr] = {}
    for node in walk(root):
        orig = node
        if isinstance(node, Op):
            args = tuple(memo[a] for a in node.args)
            memo[node] = node if args == node.args else Op(node.op, args, node.dtype)
        else:
            if isinstance(node, Load) and node.dynamic is not None:
                node = Load(node.buf, node.index, node.dtype, memo[node.dynamic])
            new = leaf_fn(node)
            memo[orig] = node if new is None else new
    return memo[root]


def substitute_indices(root: Expr, mapping: dict[sympy.Symbol, sympy.Expr]) -> Expr:
    """Replace loop variables inside every index of the tree."""
    if not mapping:
        return root
    key = tuple(mapping.items())

    def leaf(node: Expr) -> Expr | None:
        if isinstance(node, Load):
            return Load(node.buf, _replaced(node.index, key), node.dtype, node.dynamic)
        if isinstance(node, Index):
            return Index(_replaced(node.expr, key), node.dtype)
        return None

    return rewrite(root, leaf)


@functools.lru_cache(maxsize=1 << 16)
def _replaced(index: sympy.Expr, mapping: tuple) -> sympy.Expr:
    """index.xreplace(mapping), cached: the same indices are renamed alike for each
    repeated layer, and sympy evaluates a Min/Max again on every rebuild (slowly)."""
    return index.xreplace(dict(mapping))


def rewrite_indices(root: Expr, fn: Callable[[sympy.Expr], sympy.Expr]) -> Expr:
    """Apply fn to every index expression in the tree."""

    def leaf(node: Expr) -> Expr | None:
        if isinstance(node, Load):
            return Load(node.buf, fn(node.index), node.dtype, node.dynamic)
        if isinstance(node, Index):
            return Index(fn(node.expr), node.dtype)
        return None

    return rewrite(root, leaf)


def loads(root: Expr) -> list[Load]:
    return [n for n in walk(root) if isinstance(n, Load)]


def op_count(root: Expr) -> int:
    return sum(1 for n in walk(root) if isinstance(n, Op))


def may_divide_by_zero(node: Op) -> bool:
    """An integer division or remainder whose divisor may be zero: eager raises there,
    so generated code must check (float division gives inf/nan, no check)."""
    if node.op not in ("fmod", "floordiv", "remainder") or node.args[0].dtype.is_floating_point \
            or node.args[0].dtype == torch.bool:
        return False
    divisor = node.args[1]
    return not (isinstance(divisor, Const) and divisor.value != 0)
