"""The C target's types and op table: how each IR primitive, constant, cast, load and
store is written in C (the shared expression emitter, codegen/emitter.py, calls it).

float16/bfloat16 are stored as 16-bit words and computed in float; float32 transcendental
calls use the prelude's inline SIMD routines (prelude.h).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ...ir.expr import Const, Expr, Op, may_divide_by_zero

# storage type of each dtype; float16/bfloat16 values live in float registers
STORAGE = {
    torch.float32: "float", torch.float64: "double", torch.float16: "uint16_t",
    torch.bfloat16: "uint16_t", torch.int8: "int8_t", torch.uint8: "uint8_t",
    torch.int16: "int16_t", torch.int32: "int32_t", torch.int64: "int64_t",
    torch.bool: "bool", torch.uint16: "uint16_t", torch.uint32: "uint32_t",
    torch.uint64: "uint64_t",
}
HALF = (torch.float16, torch.bfloat16)


def ctype(dtype: torch.dtype) -> str:
    """The C type a value of `dtype` has while it is computed."""
    if dtype in HALF:
        return "float"
    if dtype not in STORAGE:
        raise NotImplementedError(f"dtype {dtype} in C")
    return STORAGE[dtype]


def supported(dtype: torch.dtype) -> bool:
    return dtype in STORAGE


def c_const(value: float | int | bool, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "true" if value else "false"
    if dtype.is_floating_point:
        suffix = "f" if ctype(dtype) == "float" else ""
        if math.isnan(value):
            return "NAN" if suffix else "(double)NAN"
        if math.isinf(value):
            s = "INFINITY" if suffix else "(double)INFINITY"
            return s if value > 0 else f"(-{s})"
        if dtype in HALF:
            value = float(torch.tensor(value, dtype=dtype).float())
        return f"{float(value).hex()}{suffix}" if value != int(value) or abs(value) > 1e15 \
            else f"{float(value)!r}{suffix}"
    v = int(value)
    if dtype == torch.int64 and v == -(2 ** 63):
        return "INT64_MIN"
    if abs(v) > 2 ** 31 - 1:
        return f"(({ctype(dtype)}){v}LL)" if v < 0 else f"(({ctype(dtype)}){v}ULL)"
    return f"(({ctype(dtype)}){v})" if dtype != torch.int32 else str(v)


_FLOAT_CALLS = {
    "exp": "exp", "expm1": "expm1", "log": "log", "log2": "log2", "log10": "log10",
    "log1p": "log1p", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin",
    "acos": "acos", "atan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "asinh": "asinh", "acosh": "acosh", "atanh": "atanh", "erf": "erf", "erfc": "erfc",
    "lgamma": "lgamma", "floor": "floor", "ceil": "ceil", "trunc": "trunc",
    "round": "nearbyint", "fabs": "fabs",
}
# float32 (and float16/bfloat16, computed in float) use the prelude's inline SIMD routines.
_FAST_FLOAT = {"exp": "t_expf", "tanh": "t_tanhf", "sin": "t_sinf", "cos": "t_cosf",
               "sigmoid": "t_sigmoidf", "erf": "t_erff"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "eq": "==", "ne": "!=",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "logical_and": "&&", "logical_or": "||",
          "bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}


def _not_nan_const(e: Expr) -> bool:
    return isinstance(e, Const) and not (isinstance(e.value, float) and math.isnan(e.value))


def cast_code(x: str, src: torch.dtype, dst: torch.dtype) -> str:
    if dst == torch.bool:
        return f"({x} != 0)"
    if dst == torch.float16:
        return f"t_h2f(t_f2h((float)({x})))"
    if dst == torch.bfloat16:
        return f"t_b2f(t_f2b((float)({x})))"
    if src.is_floating_point and not dst.is_floating_point:
        # Out-of-range float->int is undefined in C; eager's result is unspecified too.
        return f"(({ctype(dst)})({x}))"
    return f"(({ctype(dst)})({x}))"


def load_code(buf: str, index: str, dtype: torch.dtype) -> str:
    if dtype == torch.float16:
        return f"t_h2f({buf}[{index}])"
    if dtype == torch.bfloat16:
        return f"t_b2f({buf}[{index}])"
    return f"{buf}[{index}]"


def store_value(value: str, dtype: torch.dtype) -> str:
    if dtype == torch.float16:
        return f"t_f2h({value})"
    if dtype == torch.bfloat16:
        return f"t_f2b({value})"
    return value


def _types(node: Op) -> tuple[str, bool, str]:
    """The node's C type, whether its first argument is a float, and the float32 suffix."""
    t = ctype(node.dtype)
    arg_dt = node.args[0].dtype if node.args else node.dtype
    return t, ctype(arg_dt) in ("float", "double"), "f" if ctype(arg_dt) == "float" else ""


Rule = Callable[[Op, list[str]], str]


def _infix(sym: str) -> Rule:
    def rule(node: Op, a: list[str]) -> str:
        t, _, _ = _types(node)
        if node.dtype == torch.bool and node.op in ("add", "mul"):
            return f"({a[0]} {'||' if node.op == 'add' else '&&'} {a[1]})"
        expr = f"({a[0]} {sym} {a[1]})"
        return expr if node.op in ("eq", "ne", "lt", "le", "gt", "ge", "logical_and",
                                   "logical_or") or t in ("float", "double") else f"(({t}){expr})"
    return rule


def _float_call(name: str) -> Rule:
    """A libm call (a prelude routine for float32 where there is one); on an integer
    argument, rounding is the identity."""
    def rule(node: Op, a: list[str]) -> str:
        _, is_float, f = _types(node)
        if name in _FAST_FLOAT and f:
            return f"{_FAST_FLOAT[name]}({a[0]})"
        if not is_float:
            return a[0]
        return f"{_FLOAT_CALLS[name]}({a[0]})"
    return rule


def _neg(node: Op, a: list[str]) -> str:
    return f"(({_types(node)[0]})(-{a[0]}))"


def _abs(node: Op, a: list[str]) -> str:
    t, is_float, _ = _types(node)
    return f"fabs({a[0]})" if is_float else f"(({t})({a[0]} < 0 ? -{a[0]} : {a[0]}))"


def _rsqrt(node: Op, a: list[str]) -> str:
    f = _types(node)[2]
    return f"(1.0{f} / sqrt{f}({a[0]}))"


def _sigmoid(node: Op, a: list[str]) -> str:
    f = _types(node)[2]
    if f:
        return f"{_FAST_FLOAT['sigmoid']}({a[0]})"
    return f"(1.0{f} / (1.0{f} + exp(-{a[0]})))"


def _call2(fn: str) -> Rule:
    def rule(node: Op, a: list[str]) -> str:
        _types(node)
        return f"{fn}({a[0]}, {a[1]})"
    return rule


_INT_DIVISION = {"fmod": "T_IFMOD", "floordiv": "T_IFLOORDIV", "remainder": "T_IREM"}
_FLOAT_DIVISION = {"fmod": "fmod", "floordiv": "t_floordiv", "remainder": "t_rem"}


def _division(node: Op, a: list[str]) -> str:
    """fmod, floordiv, remainder: Python semantics (prelude helpers); an integer divisor
    that may be zero is checked (eager raises)."""
    t, is_float, f = _types(node)
    if not is_float:
        check = f"TB_CHECK_DIVISOR({a[1]}), " if may_divide_by_zero(node) else ""
        return f"({check}({t}){_INT_DIVISION[node.op]}({a[0]}, {a[1]}))"
    if node.op == "fmod":
        return f"fmod({a[0]}, {a[1]})"
    return f"{_FLOAT_DIVISION[node.op]}{f}({a[0]}, {a[1]})"


def _check_index(node: Op, a: list[str]) -> str:
    _types(node)
    return f"TB_CHECK_INDEX({a[0]}, {a[1]}, {a[2]})"


def _extremum(node: Op, a: list[str]) -> str:
    _types(node)
    is_max = node.op == "maximum"
    # Against a constant that is not NaN one comparison suffices (relu, clamp):
    # NaN compares false and is returned, and the choice between -0.0 and +0.0
    # matches T_MAX/T_MIN.
    cmp = "<=" if is_max else ">="
    if _not_nan_const(node.args[1]):
        return f"({a[0]} {cmp} {a[1]} ? {a[1]} : {a[0]})"
    if _not_nan_const(node.args[0]):
        return f"({a[0]} {'>' if is_max else '<'} {a[1]} ? {a[0]} : {a[1]})"
    return f"{'T_MAX' if is_max else 'T_MIN'}({a[0]}, {a[1]})"


def _isnan(node: Op, a: list[str]) -> str:
    return f"({a[0]} != {a[0]})" if _types(node)[1] else "false"


def _isinf(node: Op, a: list[str]) -> str:
    return f"(isinf({a[0]}) != 0)" if _types(node)[1] else "false"


def _bitwise_not(node: Op, a: list[str]) -> str:
    return f"(({_types(node)[0]})(~{a[0]}))"


def _shift(node: Op, a: list[str]) -> str:
    """Shifts by a negative count or by the width or more give 0 (or -1 for a negative
    number shifted right), as eager does; C leaves them undefined."""
    t = _types(node)[0]
    bits = torch.iinfo(node.dtype).bits if node.dtype != torch.bool else 8
    if node.op == "lshift":
        return f"(({t})(({a[1]} < 0 || {a[1]} >= {bits}) ? 0 : ({t})((uint64_t){a[0]} << {a[1]})))"
    fill = f"({a[0]} < 0 ? -1 : 0)"
    return f"(({t})(({a[1]} < 0 || {a[1]} >= {bits}) ? {fill} : ({a[0]} >> {a[1]})))"


def _where(node: Op, a: list[str]) -> str:
    _types(node)
    return f"({a[0]} ? {a[1]} : {a[2]})"


def _cast(node: Op, a: list[str]) -> str:
    _types(node)
    return cast_code(a[0], node.args[0].dtype, node.dtype)


# primitive -> C (every name of ir/expr.py OPS; tests/test_ir.py checks)
C_OPS: dict[str, Rule] = {
    **{name: _infix(sym) for name, sym in _INFIX.items()},
    **{name: _float_call(name) for name in _FLOAT_CALLS if name != "fabs"},
    "neg": _neg, "abs": _abs, "rsqrt": _rsqrt, "sigmoid": _sigmoid,
    "pow": _call2("pow"), "atan2": _call2("atan2"),
    "fmod": _division, "floordiv": _division, "remainder": _division,
    "check_index": _check_index, "maximum": _extremum, "minimum": _extremum,
    "isnan": _isnan, "isinf": _isinf, "bitwise_not": _bitwise_not,
    "lshift": _shift, "rshift": _shift, "where": _where, "cast": _cast,
}


def op_code(node: Op, a: list[str]) -> str:
    """C for one primitive, given its argument variable names."""
    rule = C_OPS.get(node.op)
    if rule is None:
        raise NotImplementedError(f"C codegen for op {node.op}")
    return rule(node, a)
