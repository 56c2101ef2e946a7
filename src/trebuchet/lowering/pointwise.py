"""Lowering rules for element-wise ATen ops: math, comparisons, logic, casts.

Type promotion follows PyTorch: `torch._prims_common.elementwise_dtypes` gives
the computation dtype (float32 for float16/bfloat16) and the node's fake
tensor gives the result dtype. As in eager, every operand (Python scalars and
0-dim tensors included) is first converted to the promoted common dtype, then
to the computation dtype; the result is cast out (`scalars.py`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import sympy
import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as KIND
from torch._prims_common import elementwise_dtypes
from torch._subclasses.fake_tensor import unset_fake_temporarily

from ..ir import symbolic
from ..ir.expr import Const, Expr, cast, op
from .registry import (LoweringContext, LoweringError, TensorValue, call_rule, call_step, merge_origins,
                       register_lowering, to_dtype)
from .scalars import scalar_value

aten = torch.ops.aten


def broadcast_shapes(*shapes: Sequence[sympy.Expr]) -> tuple[sympy.Expr, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out: list[sympy.Expr] = []
    for d in range(ndim):
        size: sympy.Expr = sympy.Integer(1)
        for s in shapes:
            k = d - (ndim - len(s))
            if k < 0:
                continue
            if s[k] != 1:
                if size != 1 and not symbolic.equal(size, s[k]):
                    raise LoweringError(f"cannot broadcast {shapes}")
                size = s[k]
        out.append(size)
    return tuple(out)


def broadcast_to(value: TensorValue, shape: Sequence[sympy.Expr]) -> TensorValue:
    """A view of `value` expanded to `shape` (leading dims added, size-1 dims repeated)."""
    shape = tuple(shape)
    if tuple(value.shape) == shape:
        return value
    lead = len(shape) - value.ndim
    keep = [(k, value.shape[k] == 1 and shape[k + lead] != 1) for k in range(value.ndim)]

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        return value.load([sympy.Integer(0) if ones else idx[k + lead] for k, ones in keep])

    return TensorValue(shape, value.dtype, loader, None, value.origins)


def const_value(value: Any, dtype: torch.dtype, shape: Sequence[sympy.Expr] = ()) -> TensorValue:
    c = Const(value, dtype)
    return TensorValue(tuple(shape), dtype, lambda idx: c)


def fake(x: Any) -> Any:
    """What elementwise_dtypes needs: a meta tensor for a TensorValue, the scalar otherwise."""
    if isinstance(x, TensorValue):
        return _meta(min(x.ndim, 1), x.dtype)
    if isinstance(x, sympy.Expr):
        return 1 if x.is_integer else 1.0
    return x


@functools.cache
def _meta(ndim: int, dtype: torch.dtype) -> torch.Tensor:
    """A meta tensor of that dtype, 0-dim or 1-dim (type promotion reads only these): one
    per kind, made outside the compile's FakeTensorMode (a fake tensor per elementwise op
    cost ViT-Tiny's inference compile 0.14 s)."""
    with unset_fake_temporarily():
        return torch.empty((1,) * ndim, dtype=dtype, device="meta")


def pointwise(ctx: LoweringContext, args: Sequence[Any], fn: Callable[..., Expr],
              compute_dtype: torch.dtype, out_dtype: torch.dtype,
              common_dtype: torch.dtype | None = None,
              exact: Sequence[int] = ()) -> TensorValue:
    """Apply `fn` (Exprs in compute_dtype -> Expr) elementwise over broadcast args.

    common_dtype: the promoted dtype eager converts every operand to before computing
    (a bfloat16 tensor compared with 3.14 compares with bfloat16(3.14)); each argument is
    converted to it, then to compute_dtype. Arguments at the positions in `exact` skip
    that conversion (eager's float16/bfloat16 mul and div read a scalar second operand in
    float32)."""
    tensors = [a for a in args if isinstance(a, TensorValue)]
    shape = broadcast_shapes(*(t.shape for t in tensors))
    loaders: list[Callable[[Sequence[sympy.Expr]], Expr]] = []
    origins: tuple[str, ...] = ()
    for i, a in enumerate(args):
        via = None if i in exact else common_dtype
        if isinstance(a, TensorValue):
            b = broadcast_to(a, shape)
            if via is None:
                loaders.append(lambda idx, b=b: cast(b.load(idx), compute_dtype))
            else:
                loaders.append(lambda idx, b=b, via=via: cast(cast(b.load(idx), via),
                                                              compute_dtype))
            origins = merge_origins(origins, a.origins)
        else:
            c = _operand_scalar(a, via, compute_dtype)
            loaders.append(lambda idx, c=c: c)

    def loader(idx: Sequence[sympy.Expr]) -> Expr:
        return cast(fn(*(ld(idx) for ld in loaders)), out_dtype)

    return TensorValue(shape, out_dtype, loader, None, merge_origins(origins, (ctx.current_origin,)))


def _operand_scalar(value: Any, via: torch.dtype | None, dtype: torch.dtype) -> Expr:
    """A scalar operand of an element-wise op: converted as TensorIterator converts a
    wrapped number (unchecked: integers wrap), to `via` first when given."""
    if isinstance(value, sympy.Expr) and not value.is_number:
        index = size_value(value)
        return cast(index if via is None else cast(index, via), dtype)
    if via is not None:
        return scalar_expr(scalar_value(_number(value), via, wrap=True), dtype, wrap=True)
    return scalar_expr(value, dtype, wrap=True)


def _number(value: Any) -> Any:
    if isinstance(value, sympy.Expr):
        return int(value) if value.is_integer else float(value)
    return value


def scalar_expr(value: Any, dtype: torch.dtype, wrap: bool = False) -> Expr:
    """A Python scalar (or sympy size expression) as a `dtype` Const holding the value eager
    converts it to (`scalars.scalar_value`; wrap=False declines values that do not fit)."""
    if isinstance(value, sympy.Expr) and not value.is_number:
        return cast(size_value(value), dtype)
    return Const(scalar_value(_number(value), dtype, wrap=wrap), dtype)


def size_value(value: sympy.Expr) -> Expr:
    """A symbolic scalar: an int64 size expression, or a float64 one (a SymFloat, such as
    batch norm's n / (n - 1) under dynamic shapes: held in an int64 it would truncate)."""
    from ..ir.expr import Index
    return Index(value, torch.int64 if value.is_integer else torch.float64)


def promote(args: Sequence[Any], kind: KIND) -> tuple[torch.dtype, torch.dtype]:
    return elementwise_dtypes(*(fake(a) for a in args), type_promotion_kind=kind)


def common_dtype(args: Sequence[Any], kind: KIND) -> torch.dtype:
    """The dtype eager converts the operands to (a comparison's, before its bool result)."""
    return promote(args, KIND.DEFAULT if kind == KIND.ALWAYS_BOOL else kind)[1]


def elementwise(ctx: LoweringContext, args: Sequence[Any], fn: Callable[..., Expr],
                kind: KIND, out_dtype: torch.dtype | None = None,
                exact: Sequence[int] = ()) -> TensorValue:
    compute, result = promote(args, kind)
    if not any(isinstance(a, TensorValue) for a in args):
        raise LoweringError("no tensor argument")
    return pointwise(ctx, args, fn, compute, out_dtype or result, common_dtype(args, kind),
                     exact)


def _opmath_second(args: Sequence[Any], kind: KIND) -> tuple[int, ...]:
    """Eager's float16/bfloat16 mul and div (true, floor, trunc) read a scalar second
    operand (a Python number or 0-dim tensor) in float32, unconverted
    (`original_scalar_value<opmath_t>`): position 1 skips the common dtype then."""
    return (1,) if common_dtype(args, kind) in (torch.float16, torch.bfloat16) else ()


# ---- table-driven simple ops -----------------------------------------------------

FLOAT_UNARY = {
    aten.exp: "exp", aten.expm1: "expm1", aten.log: "log",
    aten.log2: "log2", aten.log10: "log10", aten.log1p: "log1p", aten.sqrt: "sqrt",
    aten.rsqrt: "rsqrt", aten.sin: "sin", aten.cos: "cos", aten.tan: "tan",
    aten.asin: "asin", aten.acos: "acos", aten.atan: "atan", aten.sinh: "sinh",
    aten.cosh: "cosh", aten.tanh: "tanh", aten.asinh: "asinh", aten.acosh: "acosh",
    aten.atanh: "atanh", aten.erf: "erf", aten.erfc: "erfc", aten.lgamma: "lgamma",
    aten.sigmoid: "sigmoid",
}
SAME_UNARY = {aten.neg: "neg", aten.abs: "abs"}
ROUNDING = {aten.floor: "floor", aten.ceil: "ceil", aten.trunc: "trunc", aten.round: "round"}
COMPARE = {aten.eq: "eq", aten.ne: "ne", aten.lt: "lt", aten.le: "le", aten.gt: "gt",
           aten.ge: "ge"}
LOGICAL = {aten.logical_and: "logical_and", aten.logical_or: "logical_or",
           aten.logical_xor: "ne"}
BITWISE = {aten.bitwise_and: "bitwise_and", aten.bitwise_or: "bitwise_or",
           aten.bitwise_xor: "bitwise_xor", aten.bitwise_left_shift: "lshift",
           aten.bitwise_right_shift: "rshift", aten.__lshift__: "lshift",
           aten.__rshift__: "rshift"}


def _register_unary(table: dict, kind: KIND) -> None:
    for target, name in table.items():
        @register_lowering(target.default)
        def rule(ctx: LoweringContext, x: TensorValue, _name: str = name) -> TensorValue:
            return elementwise(ctx, [x], lambda a: op(_name, a), kind)


_register_unary(FLOAT_UNARY, KIND.INT_TO_FLOAT)
_register_unary(SAME_UNARY, KIND.DEFAULT)


def _register_binary(table: dict, kind: KIND, prim: Callable[[str], Callable] | None = None) -> None:
    for target, name in table.items():
        overloads = [getattr(target, o) for o in target.overloads()
                     if o in ("Tensor", "Scalar", "default", "Tensor_Tensor", "Tensor_Scalar",
                              "Scalar_Tensor", "self")]

        @register_lowering(*overloads)
        def rule(ctx: LoweringContext, a: Any, b: Any, _name: str = name) -> TensorValue:
            return elementwise(ctx, [a, b], lambda x, y: op(_name, x, y), kind)


_register_binary(COMPARE, KIND.ALWAYS_BOOL)
_register_binary(BITWISE, KIND.DEFAULT)


@register_lowering(*ROUNDING.keys())
def rounding(ctx: LoweringContext, x: TensorValue, decimals: int = 0) -> TensorValue:
    name = ROUNDING[_packet(ctx.current_target)]
    if not x.dtype.is_floating_point:
        return elementwise(ctx, [x], lambda a: a, KIND.DEFAULT)
    if decimals:
        scale = 10.0 ** decimals
        return elementwise(ctx, [x], lambda a: op("truediv", op(name, op(
            "mul", a, Const(scale, a.dtype))), Const(scale, a.dtype)), KIND.DEFAULT)
    return elementwise(ctx, [x], lambda a: op(name, a), KIND.DEFAULT)


def _packet(target: Any) -> Any:
    return getattr(torch.ops.aten, target._schema.name.split("::")[1])


@register_lowering(aten.reciprocal.default)
def reciprocal(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    return elementwise(ctx, [x], lambda a: op("truediv", Const(1.0, a.dtype), a),
                       KIND.INT_TO_FLOAT)


@register_lowering(aten.exp2.default)
def exp2(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    # pow(2, x), not exp(x * ln 2): the rounding of x * ln 2 is amplified by |x ln 2|
    # (60 ulp at x = 89 in float32).
    return elementwise(ctx, [x], lambda a: op("pow", Const(2.0, a.dtype), a), KIND.INT_TO_FLOAT)


@register_lowering(aten.sign.default, aten.sgn.default)
def sign(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    def fn(a: Expr) -> Expr:
        if a.dtype == torch.bool:
            return a
        zero, one = Const(0, a.dtype), Const(1, a.dtype)
        neg = Const(-1, a.dtype)
        # as eager: sign(NaN) = 0 and sign(-0.0) = +0.0
        return op("where", op("gt", a, zero), one, op("where", op("lt", a, zero), neg, zero))
    return elementwise(ctx, [x], fn, KIND.DEFAULT)


@register_lowering(aten.logical_not.default)
def logical_not(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    return elementwise(ctx, [x], lambda a: _not(cast(a, torch.bool)), KIND.ALWAYS_BOOL)


def _not(a: Expr) -> Expr:
    return op("eq", a, Const(False, torch.bool))


@register_lowering(aten.bitwise_not.default)
def bitwise_not(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    if x.dtype == torch.bool:
        return elementwise(ctx, [x], _not, KIND.DEFAULT)
    return elementwise(ctx, [x], lambda a: op("bitwise_not", a), KIND.DEFAULT)


@register_lowering(aten.isnan.default, aten.isinf.default)
def isnan_isinf(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    name = "isnan" if ctx.current_target == aten.isnan.default else "isinf"
    if not x.dtype.is_floating_point:
        return pointwise(ctx, [x], lambda a: Const(False, torch.bool), x.dtype, torch.bool)
    return pointwise(ctx, [x], lambda a: op(name, a), opmath(x.dtype), torch.bool)


def opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype a value of `dtype` is computed in: float16/bfloat16 in float32, as eager."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _bool_logic(kind_name: str, x: Expr, y: Expr) -> Expr:
    return op(kind_name, cast(x, torch.bool), cast(y, torch.bool))


for _t, _n in LOGICAL.items():
    @register_lowering(_t.default)
    def _logical(ctx: LoweringContext, a: Any, b: Any, _n: str = _n) -> TensorValue:
        return elementwise(ctx, [a, b], lambda x, y: _bool_logic(_n, x, y), KIND.ALWAYS_BOOL)


@register_lowering(aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar)
def add_sub(ctx: LoweringContext, a: Any, b: Any, alpha: Any = 1) -> TensorValue:
    name = "add" if _packet(ctx.current_target) == aten.add else "sub"
    if name == "sub":
        _no_bool_subtraction(a, b)
    compute, result = promote([a, b], KIND.DEFAULT)
    common = common_dtype([a, b], KIND.DEFAULT)
    if compute == torch.bool:
        return pointwise(ctx, [a, b], lambda x, y: op("logical_or", x, y), compute, result,
                         common)
    scale = _alpha(alpha, common)

    def fn(x: Expr, y: Expr) -> Expr:
        return op(name, x, y) if scale == 1 else _alpha_times(name, x, y, scale)

    return pointwise(ctx, [a, b], fn, compute, result, common)


def _alpha(alpha: Any, common: torch.dtype) -> Any:
    """alpha as eager's kernels read it: converted (checked) to the common dtype, so a
    bfloat16 add scales by bfloat16(alpha)."""
    return alpha if alpha == 1 else scalar_value(_number(alpha), common, wrap=False)


def _alpha_times(name: str, x: Expr, y: Expr, alpha: Any) -> Expr:
    """x + alpha * y (or x - alpha * y) rounded once, as eager's fused multiply-add:
    add(inf, -FLT_MAX, alpha=2) is inf, not NaN. float32 computes in float64, where the
    product is exact (the sum is rounded twice: different from a fused multiply-add only
    when the float64 sum falls on a float32 tie); float64 and integers multiply, then add."""
    if x.dtype != torch.float32:
        return op(name, x, op("mul", y, scalar_expr(alpha, x.dtype)))
    wide = torch.float64
    scale = cast(scalar_expr(alpha, x.dtype), wide)     # alpha: already in the common dtype
    return cast(op(name, cast(x, wide), op("mul", cast(y, wide), scale)), x.dtype)


def _no_bool_subtraction(a: Any, b: Any) -> None:
    """Eager raises for a subtraction with a bool operand (`x - True` too); the fake
    tensors that traced the graph do not, so decline and let the eager op raise."""
    if any(isinstance(v, bool) or (isinstance(v, TensorValue) and v.dtype == torch.bool)
           for v in (a, b)):
        raise LoweringError("subtraction with a bool operand")


@register_lowering(aten.rsub.Tensor, aten.rsub.Scalar)
def rsub(ctx: LoweringContext, a: Any, b: Any, alpha: Any = 1) -> TensorValue:
    _no_bool_subtraction(a, b)
    compute, result = promote([a, b], KIND.DEFAULT)
    common = common_dtype([a, b], KIND.DEFAULT)
    scale = _alpha(alpha, common)
    return pointwise(ctx, [a, b], lambda x, y: op("sub", y, x) if scale == 1 else
                     _alpha_times("sub", y, x, scale), compute, result, common)


@register_lowering(aten.mul.Tensor, aten.mul.Scalar)
def mul(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    compute, result = promote([a, b], KIND.DEFAULT)
    name = "logical_and" if compute == torch.bool else "mul"
    return pointwise(ctx, [a, b], lambda x, y: op(name, x, y), compute, result,
                     common_dtype([a, b], KIND.DEFAULT), _opmath_second([a, b], KIND.DEFAULT))


@register_lowering(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, aten.div.Scalar_mode,
                   aten.true_divide.Tensor)
def div(ctx: LoweringContext, a: Any, b: Any, rounding_mode: str | None = None) -> TensorValue:
    if rounding_mode is None:
        return elementwise(ctx, [a, b], lambda x, y: op("truediv", x, y), KIND.INT_TO_FLOAT,
                           exact=_opmath_second([a, b], KIND.INT_TO_FLOAT))
    compute, result = promote([a, b], KIND.DEFAULT)
    common, exact = _no_bool_division([a, b]), _opmath_second([a, b], KIND.DEFAULT)
    if rounding_mode == "floor":
        return pointwise(ctx, [a, b], lambda x, y: op("floordiv", x, y), compute, result,
                         common, exact)
    if compute.is_floating_point:
        return pointwise(ctx, [a, b], lambda x, y: op("trunc", op("truediv", x, y)),
                         compute, result, common, exact)
    # Integer division truncating toward zero: C's own `/` (the C target) is exact.
    return pointwise(ctx, [a, b], lambda x, y: _int_trunc_div(x, y), compute, result, common)


def _int_trunc_div(x: Expr, y: Expr) -> Expr:
    q = op("floordiv", x, y)
    r = op("remainder", x, y)
    zero = Const(0, x.dtype)
    # floor and trunc differ by one when the remainder is nonzero and signs differ.
    adjust = op("logical_and", op("ne", r, zero),
                op("ne", op("lt", x, zero), op("lt", y, zero)))
    return op("where", adjust, op("add", q, Const(1, x.dtype)), q)


def _no_bool_division(args: Sequence[Any]) -> torch.dtype:
    """The common dtype of an integer-style division; eager has no bool kernel for these
    (it raises), so a bool one is declined."""
    common = common_dtype(args, KIND.DEFAULT)
    if common == torch.bool:
        raise LoweringError("bool division")
    return common


@register_lowering(aten.floor_divide.default, aten.floor_divide.Scalar)
def floor_divide(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    _no_bool_division([a, b])
    return elementwise(ctx, [a, b], lambda x, y: op("floordiv", x, y), KIND.DEFAULT,
                       exact=_opmath_second([a, b], KIND.DEFAULT))


@register_lowering(aten.remainder.Tensor, aten.remainder.Scalar)
def remainder(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    _no_bool_division([a, b])
    return elementwise(ctx, [a, b], lambda x, y: op("remainder", x, y), KIND.DEFAULT)


@register_lowering(aten.fmod.Tensor, aten.fmod.Scalar)
def fmod(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    _no_bool_division([a, b])
    return elementwise(ctx, [a, b], lambda x, y: op("fmod", x, y), KIND.DEFAULT)


@register_lowering(aten.atan2.default)
def atan2(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    return elementwise(ctx, [a, b], lambda x, y: op("atan2", x, y), KIND.INT_TO_FLOAT)


@register_lowering(aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar)
def pow_(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    compute, result = promote([a, b], KIND.BOOL_TO_LONG)
    common = common_dtype([a, b], KIND.BOOL_TO_LONG)
    if not compute.is_floating_point:
        if isinstance(b, (int, float)) and b == 2:
            return pointwise(ctx, [a], lambda x: op("mul", x, x), compute, result, common)
        raise LoweringError("integer pow")
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return _pow_scalar(ctx, a, b, compute, result, common)
    return pointwise(ctx, [a, b], lambda x, y: op("pow", x, y), compute, result, common)


def _pow_scalar(ctx: LoweringContext, a: TensorValue, b: int | float, compute: torch.dtype,
                result: torch.dtype, common: torch.dtype) -> TensorValue:
    """x ** b for a Python number b, as eager's pow_tensor_scalar: sqrt, rsqrt and
    reciprocal for 0.5, -0.5 and -1 (not float16: pow(-inf, 0.5) is inf there); otherwise
    b converted (checked) to the tensor's dtype, so bfloat16 x ** 1.1 is x ** bfloat16(1.1).
    bfloat16 x ** 3 and x ** -2 round x * x to bfloat16 first (eager computes them in
    bfloat16 arithmetic); bfloat16 x ** -3 and x ** -4 use pow."""
    if b in (0.5, -0.5) and common != torch.float16:
        name = "sqrt" if b == 0.5 else "rsqrt"
        return pointwise(ctx, [a], lambda x: op(name, x), compute, result, common)
    if b == -1:
        return pointwise(ctx, [a], lambda x: op("truediv", Const(1.0, x.dtype), x),
                         compute, result, common)
    e = scalar_value(b, common, wrap=False)
    if e == 1:
        return pointwise(ctx, [a], lambda x: x, compute, result, common)
    if common == torch.bfloat16 and e in (3, -2):
        def stepwise(x: Expr) -> Expr:
            sq = cast(cast(op("mul", x, x), common), x.dtype)
            return op("mul", sq, x) if e == 3 else op("truediv", Const(1.0, x.dtype), sq)
        return pointwise(ctx, [a], stepwise, compute, result, common)
    if float(e).is_integer() and 2 <= abs(e) <= 4 and not (common == torch.bfloat16 and e < 0):
        # small integer powers as products: exact enough and they vectorize
        def power(x: Expr, n: int = int(abs(e))) -> Expr:
            out = x
            for _ in range(n - 1):
                out = op("mul", out, x)
            return out if e > 0 else op("truediv", Const(1.0, x.dtype), out)
        return pointwise(ctx, [a], power, compute, result, common)
    return pointwise(ctx, [a, e], lambda x, y: op("pow", x, y), compute, result, common)


@register_lowering(aten.maximum.default, aten.minimum.default, aten.fmax.default,
                   aten.fmin.default)
def max_min(ctx: LoweringContext, a: Any, b: Any) -> TensorValue:
    target = ctx.current_target
    name = "maximum" if target in (aten.maximum.default, aten.fmax.default) else "minimum"
    if target in (aten.fmax.default, aten.fmin.default):
        def fn(x: Expr, y: Expr) -> Expr:   # NaN only when both are NaN
            if not x.dtype.is_floating_point:
                return op(name, x, y)
            # x where they are equal (fmax(0.0, -0.0) is 0.0, as in eager) or y is NaN
            better = op("gt" if name == "maximum" else "lt", y, x)
            return op("where", op("isnan", x), y, op("where", better, y, x))
        return elementwise(ctx, [a, b], fn, KIND.DEFAULT)
    compute, result = promote([a, b], KIND.DEFAULT)
    if compute == torch.bool:
        name = "logical_or" if name == "maximum" else "logical_and"
    return pointwise(ctx, [a, b], lambda x, y: op(name, x, y), compute, result,
                     common_dtype([a, b], KIND.DEFAULT))


@register_lowering(aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default,
                   aten.clamp_max.default, aten.clamp_min.Tensor, aten.clamp_max.Tensor)
def clamp(ctx: LoweringContext, x: TensorValue, lo: Any = None, hi: Any = None) -> TensorValue:
    if ctx.current_target in (aten.clamp_max.default, aten.clamp_max.Tensor):
        lo, hi = None, lo
    args = [x] + [v for v in (lo, hi) if v is not None]
    compute, result = promote(args, KIND.DEFAULT)
    if compute == torch.bool:
        raise LoweringError("bool clamp")
    common = common_dtype(args, KIND.DEFAULT)
    _check_fits(args, common)
    has_lo, has_hi = lo is not None, hi is not None

    def fn(v: Expr, *bounds: Expr) -> Expr:
        b = list(bounds)
        if has_lo:
            v = _clamp_side("maximum", "lt", v, b.pop(0))
        if has_hi:
            v = _clamp_side("minimum", "gt", v, b.pop(0))
        return v

    return pointwise(ctx, args, fn, compute, result, common)


def _check_fits(args: Sequence[Any], dtype: torch.dtype) -> None:
    """Eager converts clamp's and where's scalars with a check (`Scalar::to<T>()`) and
    raises for one that does not fit: decline those, so the eager op raises."""
    for a in args:
        if isinstance(a, (bool, int, float)):
            scalar_value(a, dtype, wrap=False)


def _clamp_side(name: str, beyond: str, v: Expr, bound: Expr) -> Expr:
    """One side of clamp. Eager keeps v where it equals a scalar bound (clamp(-0.0, 0.0)
    is -0.0) and gives the bound where it equals a tensor bound, as maximum/minimum do
    (docs/numerics.md). A NaN scalar bound propagates: maximum/minimum do that."""
    if isinstance(bound, Const) and not (isinstance(bound.value, float) and math.isnan(bound.value)):
        return op("where", op(beyond, v, bound), bound, v)
    return op(name, v, bound)


@register_lowering(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther,
                   aten.where.Scalar)
def where(ctx: LoweringContext, cond: TensorValue, a: Any, b: Any) -> TensorValue:
    compute, result = promote([a, b], KIND.DEFAULT)
    common = common_dtype([a, b], KIND.DEFAULT)
    _check_fits([a, b], common)
    cond_b = pointwise(ctx, [cond], lambda c: c, torch.bool, torch.bool)
    return pointwise(ctx, [cond_b, a, b], lambda c, x, y: op("where", cast(c, torch.bool), x, y),
                     compute, result, common, exact=(0,))


@register_lowering(aten.relu.default)
def relu(ctx: LoweringContext, x: TensorValue) -> TensorValue:
    # relu(NaN) is NaN and relu(-0.0) is -0.0 in eager: only values below zero change.
    return elementwise(ctx, [x], lambda a: op("where", op("lt", a, Const(0, a.dtype)),
                                              Const(0, a.dtype), a), KIND.DEFAULT)


@register_lowering(aten.gelu.default)
def gelu(ctx: LoweringContext, x: TensorValue, approximate: str = "none") -> TensorValue:
    def fn(a: Expr) -> Expr:
        def c(v: float) -> Const:
            return Const(v, a.dtype)
        if approximate == "tanh":
            inner = op("mul", c(math.sqrt(2 / math.pi)),
                       op("add", a, op("mul", c(0.044715), op("mul", a, op("mul", a, a)))))
            return op("mul", op("mul", c(0.5), a), op("add", c(1.0), op("tanh", inner)))
        return op("mul", op("mul", c(0.5), a),
                  op("add", c(1.0), op("erf", op("mul", a, c(math.sqrt(0.5))))))

    return elementwise(ctx, [x], fn, KIND.DEFAULT)


@register_lowering(aten.gelu_backward.default)
def gelu_backward(ctx: LoweringContext, grad: TensorValue, x: TensorValue,
                  approximate: str = "none") -> TensorValue:
    """The steps of torch._decomp's `gelu_backward`, each by its op's rule, in its order
    (the same IR as lowering its decomposed graph; kept whole through AOTAutograd's
    tracing, frontend/decompositions.py, which traced 8-16 ops for each): inputs in the
    op-math dtype, the result rounded to eager's dtype."""
    out = ctx.out_dtype()
    compute = opmath(out)
    grad = to_dtype(ctx, grad, compute)

    def step(users: int, target: Any, *args: Any) -> Any:
        return call_step(ctx, users, target, *args)

    mul, add = aten.mul.Tensor, aten.add.Tensor
    sqrt2, sqrt1_2, two_sqrtpi = 1.41421356237309504880, 0.70710678118654752440, 1.12837916709551257390
    if approximate == "tanh":
        beta, kappa = sqrt2 * two_sqrtpi * 0.5, 0.044715
        x = to_dtype(ctx, x, compute, users=4)
        x_sq = step(2, mul, x, x)
        inner = step(1, mul, step(1, add, x, step(1, mul, step(1, mul, x_sq, x), kappa)), beta)
        tanh_inner = step(2, aten.tanh.default, inner)
        left = step(1, mul, x, 0.5)
        left_derivative = step(1, mul, step(1, add, tanh_inner, 1), 0.5)
        tanh_derivative = step(1, aten.sub.Tensor, 1, step(1, mul, tanh_inner, tanh_inner))
        inner_derivative = step(1, mul, step(1, add, step(1, mul, x_sq, 3 * kappa), 1), beta)
        right_derivative = step(1, mul, step(1, mul, left, tanh_derivative), inner_derivative)
        total = step(1, add, left_derivative, right_derivative)
    else:
        alpha, beta = sqrt1_2, two_sqrtpi * sqrt1_2 * 0.5
        x = to_dtype(ctx, x, compute, users=3)
        cdf = step(1, mul, step(1, add, step(1, aten.erf.default, step(1, mul, x, alpha)), 1), 0.5)
        pdf = step(1, mul, step(1, aten.exp.default, step(1, mul, step(1, mul, x, x), -0.5)), beta)
        total = step(1, add, cdf, step(1, mul, x, pdf))
    return to_dtype(ctx, call_rule(ctx, mul, grad, total), out)


@register_lowering(aten._to_copy.default)
def to_copy(ctx: LoweringContext, x: TensorValue, *, dtype: torch.dtype | None = None,
            layout: Any = None, device: Any = None, pin_memory: Any = None,
            non_blocking: bool = False, memory_format: Any = None) -> TensorValue:
    if device is not None and torch.device(device).type != "cpu":
        raise LoweringError("device transfer")
    target = dtype or x.dtype
    return pointwise(ctx, [x], lambda a: a, x.dtype, target)


@register_lowering(torch.ops.prims.convert_element_type.default)
def convert_element_type(ctx: LoweringContext, x: TensorValue, dtype: torch.dtype) -> TensorValue:
    return pointwise(ctx, [x], lambda a: a, x.dtype, dtype)


@register_lowering(aten.clone.default, aten.lift_fresh_copy.default)
def clone(ctx: LoweringContext, x: TensorValue, *, memory_format: Any = None) -> TensorValue:
    return pointwise(ctx, [x], lambda a: a, x.dtype, x.dtype)


@register_lowering(aten.copy.default)
def copy(ctx: LoweringContext, dst: TensorValue, src: TensorValue,
         non_blocking: bool = False) -> TensorValue:
    src = broadcast_to(src, dst.shape)
    return pointwise(ctx, [src], lambda a: a, src.dtype, dst.dtype)
