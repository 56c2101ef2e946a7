"""The Triton target's types and op table: how each IR primitive, constant, cast and
load is written in Triton (the shared expression emitter, codegen/emitter.py, calls it).

Every value is a block (1-D in pointwise kernels, 2-D in reductions); constants are
typed one-element blocks (`tl.full([1], ...)`) that broadcast against either;
float16/bfloat16 are loaded into float32 and computed there (as the C target computes
them in float). Primitives Triton has no operation for call the prelude's `@triton.jit`
helpers (prelude.py). Integer floor division and remainder fix up Triton's truncating
`//` and `%`; a divisor of 0 or -1 is taken apart as in the C prelude. Checks that set
the kernel's error bits (an index out of range, an integer divisor of zero) are written
by `ERROR_CHECKS`, next to the value.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ...ir.expr import Op

TL_TYPES = {
    torch.float32: "tl.float32", torch.float64: "tl.float64", torch.float16: "tl.float16",
    torch.bfloat16: "tl.bfloat16", torch.int8: "tl.int8", torch.uint8: "tl.uint8",
    torch.int16: "tl.int16", torch.int32: "tl.int32", torch.int64: "tl.int64",
    torch.bool: "tl.int1", torch.uint16: "tl.uint16", torch.uint32: "tl.uint32",
    torch.uint64: "tl.uint64",
}
HALF = (torch.float16, torch.bfloat16)
UNSIGNED = (torch.uint8, torch.uint16, torch.uint32, torch.uint64, torch.bool)


class TritonUnsupported(NotImplementedError):
    """Something the Triton target does not generate yet (the graph falls back)."""


def tl_type(dtype: torch.dtype) -> str:
    """The Triton type a value of `dtype` has while it is computed."""
    if dtype in HALF:
        return "tl.float32"
    if dtype not in TL_TYPES:
        raise TritonUnsupported(f"the Triton target does not handle dtype {dtype} yet")
    return TL_TYPES[dtype]


def is_float(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point


def const_code(value: float | int | bool, dtype: torch.dtype) -> str:
    """A constant as a block of its compute type."""
    if dtype == torch.bool:
        v = "True" if value else "False"
    elif dtype.is_floating_point:
        value = float(value)
        if dtype in HALF and math.isfinite(value):
            value = float(torch.tensor(value, dtype=dtype).float())
        v = f'float("{value}")' if not math.isfinite(value) else repr(value)
    else:
        info = torch.iinfo(dtype)                  # wrapped into the type, as C's cast
        n = int(value) & ((1 << info.bits) - 1)
        v = str(n - (1 << info.bits) if info.min < 0 and n > info.max else n)
    return f"tl.full([1], {v}, {tl_type(dtype)})"


def cast_code(x: str, src: torch.dtype, dst: torch.dtype) -> str:
    if dst == torch.bool:
        return f"({x} != 0)"
    if dst == torch.bfloat16:
        return f"_t_round_bf16({x}.to(tl.float32))"
    if dst == torch.float16:
        return f"{x}.to(tl.float32).to(tl.float16).to(tl.float32)"
    if src in HALF and dst == torch.float32:
        return x
    return f"{x}.to({tl_type(dst)})"


Rule = Callable[[Op, list[str]], str]


def _arg_dtype(node: Op) -> torch.dtype:
    return node.args[0].dtype if node.args else node.dtype


def _infix(sym: str) -> Rule:
    def rule(node: Op, a: list[str]) -> str:
        if node.dtype == torch.bool and node.op in ("add", "mul"):
            return f"({a[0]} {'|' if node.op == 'add' else '&'} {a[1]})"
        return f"({a[0]} {sym} {a[1]})"
    return rule


def _truediv(node: Op, a: list[str]) -> str:
    # Triton's float32 `/` is not correctly rounded on the GPU; div_rn is (as eager).
    if tl_type(node.dtype) == "tl.float32":
        return f"tl.math.div_rn({a[0]}, {a[1]})"
    return f"({a[0]} / {a[1]})"


# prelude helpers that float32 values call in float64: their range reductions lose a few
# bits in float32 (measured: atan2 3e-6 relative off in the subnormal range)
WIDENED = {"tan", "atan", "asin", "acos", "asinh", "acosh", "atanh", "atan2", "pow"}


def _float_only(fn: Callable[[str], str], name: str = "") -> Rule:
    """A float function; on an integer argument (floor, ceil, ...) the identity."""
    def rule(node: Op, a: list[str]) -> str:
        if not is_float(_arg_dtype(node)):
            return a[0]
        if name in WIDENED and tl_type(node.dtype) == "tl.float32":
            return f"{fn(f'{a[0]}.to(tl.float64)')}.to(tl.float32)"
        return fn(a[0])
    return rule


def _sqrt(x: str, node: Op) -> str:
    return f"tl.sqrt_rn({x})" if tl_type(node.dtype) == "tl.float32" else f"tl.sqrt({x})"


def _float32_in_float64(fn: str, fn64: str) -> Rule:
    """A function whose prelude routine `fn` is a float64 one accurate to about 1e-13
    (erfc, lgamma): float32 (and float16/bfloat16) values computed in it; float64 values
    through `fn64`, a routine within a few float64 ulp."""
    def rule(node: Op, a: list[str]) -> str:
        if not is_float(_arg_dtype(node)):
            return a[0]
        if node.dtype == torch.float64:
            return f"{fn64}({a[0]})"
        return f"{fn}({a[0]}.to(tl.float64)).to(tl.float32)"
    return rule


def _neg(node: Op, a: list[str]) -> str:
    # Triton 3.6's unary minus on floats is 0 - x, so -(0.0) was +0.0 (3.9 negates);
    # a product by -1 is exact and gives -0.0 on every version.
    if node.dtype.is_floating_point:
        return f"({a[0]} * -1.0)"
    return f"(-{a[0]})"


def _abs(node: Op, a: list[str]) -> str:
    return a[0] if node.dtype in UNSIGNED else f"tl.abs({a[0]})"


def _int_division(node: Op, a: list[str]) -> str:
    """Integer fmod, floordiv, remainder as eager (Python semantics for the last two);
    a divisor of 0 gives 0 (the kernel flags it) and -1 is taken apart (min // -1 wraps)."""
    x, y = a
    t = tl_type(node.dtype)
    signed = node.dtype not in UNSIGNED
    special = f"(({y} == 0) | ({y} == -1))" if signed else f"({y} == 0)"
    d = f"tl.where({special}, tl.full([1], 1, {t}), {y})"
    q, r = f"({x} // {d})", f"({x} % {d})"
    zero = f"tl.full([1], 0, {t})"
    wrong_sign = f"(({r} != 0) & (({r} < 0) != ({d} < 0)))"
    if node.op == "fmod":
        value = f"tl.where({special}, {zero}, {r})"
    elif node.op == "remainder":
        value = f"tl.where({special}, {zero}, {r})" if not signed else \
            f"tl.where({special}, {zero}, tl.where({wrong_sign}, {r} + {d}, {r}))"
    elif not signed:
        value = f"tl.where({special}, {zero}, {q})"
    else:
        fixed = f"({q} - {wrong_sign}.to({t}))"
        value = f"tl.where({y} == 0, {zero}, tl.where({y} == -1, -{x}, {fixed}))"
    return f"{value}.to({t})"


def _division(node: Op, a: list[str]) -> str:
    if not is_float(_arg_dtype(node)):
        return _int_division(node, a)
    if node.op == "fmod":
        return f"({a[0]} % {a[1]})"
    return f"{'_t_floordiv_f' if node.op == 'floordiv' else '_t_remainder_f'}({a[0]}, {a[1]})"


def _check_index(node: Op, a: list[str]) -> str:
    """The index where it is in [0, n), else 0 (ERROR_CHECKS sets the error bit)."""
    return f"tl.where(({a[0]} >= 0) & ({a[0]} < {a[1]}), {a[0]}, 0)"


def _extremum(node: Op, a: list[str]) -> str:
    return f"{'_t_fmax' if node.op == 'maximum' else '_t_fmin'}({a[0]}, {a[1]})"


def _isnan(node: Op, a: list[str]) -> str:
    return f"({a[0]} != {a[0]})" if is_float(_arg_dtype(node)) else f"({a[0]} != {a[0]})"


def _isinf(node: Op, a: list[str]) -> str:
    if not is_float(_arg_dtype(node)):
        return f"({a[0]} != {a[0]})"
    return f'(tl.abs({a[0]}) == float("inf"))'


def _bitwise_not(node: Op, a: list[str]) -> str:
    return f"(~{a[0]})"


def _shift(node: Op, a: list[str]) -> str:
    """Shifts by a negative count or by the width or more give 0 (or -1 for a negative
    number shifted right), as eager does."""
    t = tl_type(node.dtype)
    bits = torch.iinfo(node.dtype).bits if node.dtype != torch.bool else 8
    out = f"(({a[1]} < 0) | ({a[1]} >= {bits}))"
    n = f"tl.where({out}, 0, {a[1]}).to({t})"
    if node.op == "lshift":
        return f"tl.where({out}, tl.full([1], 0, {t}), {a[0]} << {n})"
    fill = f"tl.where({a[0]} < 0, -1, 0).to({t})"
    return f"tl.where({out}, {fill}, {a[0]} >> {n})"


def _call2(fn: str) -> Rule:
    """pow, atan2: float32 computed in float64 (2^(y log2 x) in float32 loses up to
    |y log2 x| ulp and flushes results in the subnormal range); float64 pow through
    double-double logarithms (`_t_pow64`: 2^(y log2 x) in float64 was 3e-14 off at
    1e30 ** 5); integer pow is not generated yet."""
    def rule(node: Op, a: list[str]) -> str:
        if tl_type(node.dtype) == "tl.float32":
            return f"{fn}({a[0]}.to(tl.float64), {a[1]}.to(tl.float64)).to(tl.float32)"
        if fn == "_t_pow" and node.dtype == torch.float64:
            return f"_t_pow64({a[0]}, {a[1]})"
        if fn == "_t_pow":
            raise TritonUnsupported(f"the Triton target does not implement the pow primitive "
                                    f"on {node.dtype} yet (floating types only)")
        return f"{fn}({a[0]}, {a[1]})"
    return rule


def _where(node: Op, a: list[str]) -> str:
    return f"tl.where({a[0]}, {a[1]}, {a[2]})"


def _cast(node: Op, a: list[str]) -> str:
    return cast_code(a[0], node.args[0].dtype, node.dtype)


def _round(node: Op, a: list[str]) -> str:
    if not is_float(_arg_dtype(node)):
        return a[0]
    big = "4503599627370496.0" if node.dtype == torch.float64 else "8388608.0"
    return f"_t_round({a[0]}, {big})"


def _rsqrt(node: Op, a: list[str]) -> str:
    return _truediv(node, [f"tl.full([1], 1.0, {tl_type(node.dtype)})", _sqrt(a[0], node)])


_INFIX = {"add": "+", "sub": "-", "mul": "*", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
          "gt": ">", "ge": ">=", "logical_and": "&", "logical_or": "|", "bitwise_and": "&",
          "bitwise_or": "|", "bitwise_xor": "^"}
_CALLS = {
    "exp": "tl.exp({})", "expm1": "_t_expm1({})", "log": "tl.log({})", "log2": "tl.log2({})",
    "log10": "(tl.log({}) * 0.43429448190325176)", "log1p": "_t_log1p({})",
    "sin": "tl.sin({})", "cos": "tl.cos({})", "tanh": "_t_tanh({})", "sinh": "_t_sinh({})",
    "cosh": "_t_cosh({})", "erf": "tl.math.erf({})", "sigmoid": "_t_sigmoid({})",
    "floor": "tl.floor({})", "ceil": "tl.ceil({})", "trunc": "_t_trunc({})",
    "tan": "_t_tan({})", "atan": "_t_atan({})", "asin": "_t_asin({})", "acos": "_t_acos({})",
    "asinh": "_t_asinh({})", "acosh": "_t_acosh({})", "atanh": "_t_atanh({})",
}
# primitive -> Triton (every name of ir/expr.py OPS; tests/test_ir.py checks)
TRITON_OPS: dict[str, Rule] = {
    **{name: _infix(sym) for name, sym in _INFIX.items()},
    **{name: _float_only(fmt.format, name) for name, fmt in _CALLS.items()},
    "erfc": _float32_in_float64("_t_erfc", "_t_erfc64"),
    "lgamma": _float32_in_float64("_t_lgamma", "_t_lgamma64"),
    "truediv": _truediv, "sqrt": lambda node, a: _sqrt(a[0], node), "rsqrt": _rsqrt,
    "neg": _neg, "abs": _abs, "pow": _call2("_t_pow"), "atan2": _call2("_t_atan2"),
    "fmod": _division, "floordiv": _division, "remainder": _division,
    "check_index": _check_index, "maximum": _extremum, "minimum": _extremum,
    "isnan": _isnan, "isinf": _isinf, "bitwise_not": _bitwise_not,
    "lshift": _shift, "rshift": _shift, "where": _where, "cast": _cast, "round": _round,
}


def _index_error(node: Op, a: list[str]) -> str:
    return f"tl.where(({a[0]} < 0) | ({a[0]} >= {a[1]}), {a[2]}, 0).to(tl.int32)"


def _zero_divisor(node: Op, a: list[str]) -> str:
    return f"tl.where({a[1]} == 0, 2, 0).to(tl.int32)"   # TB_ZERO_DIVISION


# primitive -> the int32 error bits it sets (0 where fine); the kernel ORs them
ERROR_CHECKS: dict[str, Rule] = {"check_index": _index_error, "floordiv": _zero_divisor,
                                 "remainder": _zero_divisor, "fmod": _zero_divisor}
