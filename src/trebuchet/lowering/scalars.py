"""Python scalars in element-wise ops: the value eager gives them.

Eager wraps a Python number in a 0-dim tensor. It takes part in type promotion only across
categories (`torch._prims_common.elementwise_dtypes`: a float scalar makes an integer
tensor's op float, but does not widen a bfloat16 one), and TensorIterator then converts
every operand, scalars included, to the promoted ("common") dtype before the kernel computes
in its opmath type (float32 for float16/bfloat16). So `x == 3.14` on bfloat16 compares with
bfloat16(3.14) = 3.140625, and `x_int8 + 1000` adds int8(1000) = -24. A few kernels read a
scalar second operand unconverted (mul and div of float16/bfloat16, in float32); the rules
in `pointwise.py` say which. `scalar_value` is that conversion, done in Python at compile
time. See docs/numerics.md, "Python scalars".
"""
from __future__ import annotations

import functools
import math

import torch

from .registry import LoweringError

Number = bool | int | float


def scalar_value(value: Number, dtype: torch.dtype, *, wrap: bool) -> Number:
    """`value` converted to `dtype` as eager converts it.

    wrap=True: TensorIterator's unchecked conversion of a wrapped number (comparisons and
    arithmetic): integers wrap, floats round to nearest (to inf past the largest finite).
    wrap=False: `Scalar::to<T>()`, checked by `c10::overflows` (fill, clamp bounds, where,
    pow's exponent, alpha): eager raises for a value outside the type's range (an unsigned
    type also takes -max..-1, wrapped), so we raise LoweringError and the op runs eagerly
    (and raises there).
    A float into an integer type truncates toward zero; NaN, inf or out of range declines.
    """
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        raise LoweringError(f"unsupported scalar {value!r}")
    if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 63:
        raise LoweringError(f"scalar {value} is outside int64")
    if dtype == torch.bool:
        return bool(value)
    if dtype.is_floating_point:
        if not wrap and math.isfinite(value) and abs(value) > torch.finfo(dtype).max:
            raise LoweringError(f"{value} overflows {dtype}")
        return _converted(value.hex() if isinstance(value, float) else value, dtype)
    info = torch.iinfo(dtype)
    if isinstance(value, float):
        if not math.isfinite(value) or not info.min <= value <= info.max:
            raise LoweringError(f"{value} does not convert to {dtype}")
        return int(value)
    if info.min <= value <= info.max:
        return value
    if not wrap and not (not dtype.is_signed and -info.max <= value < 0):
        raise LoweringError(f"{value} overflows {dtype}")
    span = info.max - info.min + 1
    return (value - info.min) % span + info.min


@functools.lru_cache(maxsize=4096)
def _converted(value: str | int, dtype: torch.dtype) -> float:
    """torch's own conversion (float64/int64 -> dtype), the one TensorIterator runs, double
    rounding through float32 included. A float comes as its hex text, so -0.0 and 0.0 are
    different keys. Cached: a tensor per call made it a third of a ResNet's lowering time."""
    if isinstance(value, str):
        return float(torch.tensor(float.fromhex(value), dtype=torch.float64).to(dtype).item())
    return float(torch.tensor(value, dtype=torch.int64).to(dtype).item())
