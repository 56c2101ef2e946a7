"""Extremal values through every lowered element-wise op, on every target, against eager.

Inputs: NaN, +-inf, +-0, float32 and float64 subnormals, the smallest normal and the
largest finite values, the arguments where exp, expm1, sinh and cosh overflow
(+-88.7, +-89, +-710), the edges of the prelude's inline routines (where tanh and erf
round to 1, sin/cos's 2^17), rounding ties; for integer types the minimum, the maximum,
-1, 0, 1 and their neighbours. Binary ops see every pair of values.

Each (target, dtype, group of ops) is compiled once as one graph that returns every op
of the group (the C compiler runs a few dozen times, not once per op), and the tests
check per op that the graph was lowered (no op fell back to eager) and that each
result equals eager's: NaN equal to NaN, +-0 and +-inf exact, integers exact, and
finite floats bit-exact except for the transcendental functions, which are compared
within the ulp bound in ULPS (eager's own float32 routines are 1-ulp ones, Trebuchet's
are documented in codegen/c/prelude.h). Where eager disagrees with itself (its
vectorized loop and its scalar one), or where Trebuchet chooses differently, the case
and the choice are in docs/numerics.md and in the tables below.

Integer division by -1 of the smallest integer traps in the CPU's divide instruction
(SIGFPE, the process dies), so those cases run in a child process.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

import trebuchet

# the triton target runs on CPU tensors under Triton's interpreter, where triton is installed
HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON:
    os.environ.setdefault("TRITON_INTERPRET", "1")
TARGETS = ["c", "reference", *(["triton"] if HAS_TRITON else [])]
FLOATS = [torch.float32, torch.float64]   # float16/bfloat16 inputs: docs/numerics.md
INTS = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
PAD = 64    # every length a multiple of the widest vector loop: eager's vector path throughout

NAN, INF = math.nan, math.inf


def float_values(dtype: torch.dtype) -> torch.Tensor:
    fi = torch.finfo(dtype)
    v = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -1.5,
         fi.tiny, -fi.tiny, fi.smallest_normal / 3, -fi.smallest_normal / 3,
         fi.tiny * fi.eps, -fi.tiny * fi.eps,                 # the smallest subnormal
         fi.max, -fi.max, 88.7, -88.7, 89.0, -89.0, 710.0, -710.0, 104.0, -104.0,
         9.02, -0.9, 131072.0, -131073.0, 1e30, -1e30, 1e-30, 1e-8, 3e9]
    return torch.tensor(v, dtype=torch.float64).to(dtype)


def int_values(dtype: torch.dtype) -> torch.Tensor:
    ii = torch.iinfo(dtype)
    v = sorted({ii.min, ii.min + 1, -2, -1, 0, 1, 2, 3, 7, ii.max - 1, ii.max} &
               set(range(ii.min, ii.max + 1)) if ii.max < 2 ** 20 else
               {ii.min, ii.min + 1, -2, -1, 0, 1, 2, 3, 7, ii.max - 1, ii.max})
    return torch.tensor(v, dtype=dtype)


def pad(*ts: torch.Tensor) -> list[torch.Tensor]:
    n = -ts[0].numel() % PAD
    return [torch.cat([t, t[-1:].expand(n)]) if n else t for t in ts]


def pairs(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = v.numel()
    a, b = pad(v.repeat_interleave(n), v.repeat(n))
    return a, b


# ---- the ops --------------------------------------------------------------------
# name: (function, ulp bound for finite nonzero float results, or a (float32, float64)
# pair of bounds; 0 = bit-exact)

UNARY_FLOAT: dict[str, tuple[Callable, float | tuple[float, float]]] = {
    "exp": (torch.exp, 2.05), "exp2": (torch.exp2, 2), "expm1": (torch.expm1, 2),
    "log": (torch.log, 2), "log2": (torch.log2, 2), "log10": (torch.log10, 2),
    "log1p": (torch.log1p, 2), "sqrt": (torch.sqrt, 1), "rsqrt": (torch.rsqrt, 0),
    "sin": (torch.sin, 2.8), "cos": (torch.cos, 2.85), "tan": (torch.tan, 2),
    "asin": (torch.asin, 2), "acos": (torch.acos, 2), "atan": (torch.atan, 2),
    "sinh": (torch.sinh, 2), "cosh": (torch.cosh, 2), "tanh": (torch.tanh, 3.5),
    "asinh": (torch.asinh, 2), "acosh": (torch.acosh, 2), "atanh": (torch.atanh, 2),
    "erf": (torch.erf, 2.25), "erfc": (torch.erfc, 2), "lgamma": (torch.lgamma, 2),
    "sigmoid": (torch.sigmoid, 3.5),
    # erf's error is amplified by the cancellation in 1 + erf(x / sqrt 2) for x < 0 (7x at
    # x = -1.5); float64 calls the C library's erf, as eager's scalar loop does
    "gelu": (F.gelu, (16, 1)), "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), 6),
    "silu": (F.silu, 4), "relu": (torch.relu, 0), "abs": (torch.abs, 0),
    "neg": (torch.neg, 0), "sign": (torch.sign, 0), "sgn": (torch.sgn, 0),
    "floor": (torch.floor, 0), "ceil": (torch.ceil, 0), "round": (torch.round, 0),
    "trunc": (torch.trunc, 0), "round_decimals": (lambda x: torch.round(x, decimals=2), 0),
    "reciprocal": (torch.reciprocal, 0), "square": (torch.square, 0),
    "pow3": (lambda x: x ** 3, 0), "pow_neg2": (lambda x: x ** -2, 0),
    "pow_half": (lambda x: x ** 0.5, 1), "pow_1.5": (lambda x: x ** 1.5, 2),
    "pow_neg1": (lambda x: x ** -1, 0), "rpow": (lambda x: 2.0 ** x, 2),
    "isnan": (torch.isnan, 0), "isinf": (torch.isinf, 0),
    "logical_not": (torch.logical_not, 0), "clamp": (lambda x: torch.clamp(x, -1.0, 1.0), 0),
    "clamp_min": (lambda x: torch.clamp_min(x, 0.0), 0),
    "hardtanh": (F.hardtanh, 0), "elu": (F.elu, 2),
    "add_scalar": (lambda x: x + 1.0, 0), "mul_scalar": (lambda x: x * 3.0, 0),
    "div_scalar": (lambda x: x / 3.0, 0), "rsub": (lambda x: 1.0 - x, 0),
    "to_int64": (lambda x: x.to(torch.int64), 0), "to_int32": (lambda x: x.to(torch.int32), 0),
    "to_int8": (lambda x: x.to(torch.int8), 0), "to_uint8": (lambda x: x.to(torch.uint8), 0),
    "to_bool": (lambda x: x.to(torch.bool), 0),
    "to_float16": (lambda x: x.to(torch.float16), 0),
    "to_bfloat16": (lambda x: x.to(torch.bfloat16), 0),
    "to_other_float": (lambda x: x.to(torch.float64 if x.dtype == torch.float32
                                      else torch.float32), 0),
}

BINARY_FLOAT: dict[str, tuple[Callable, float]] = {
    "add": (torch.add, 0), "sub": (torch.sub, 0), "mul": (torch.mul, 0),
    "div": (torch.div, 0), "div_trunc": (lambda a, b: torch.div(a, b, rounding_mode="trunc"), 0),
    "div_floor": (lambda a, b: torch.div(a, b, rounding_mode="floor"), 0),
    "floor_divide": (torch.floor_divide, 0), "remainder": (torch.remainder, 0),
    "fmod": (torch.fmod, 0), "pow": (torch.pow, 2), "atan2": (torch.atan2, 2),
    "maximum": (torch.maximum, 0), "minimum": (torch.minimum, 0),
    "fmax": (torch.fmax, 0), "fmin": (torch.fmin, 0),
    "eq": (torch.eq, 0), "ne": (torch.ne, 0), "lt": (torch.lt, 0), "le": (torch.le, 0),
    "gt": (torch.gt, 0), "ge": (torch.ge, 0),
    "logical_and": (torch.logical_and, 0), "logical_or": (torch.logical_or, 0),
    "logical_xor": (torch.logical_xor, 0),
    "where": (lambda a, b: torch.where(a > b, a, b), 0),
    "clamp_tensor": (lambda a, b: torch.clamp(a, min=b), 0),
    "clamp_max_tensor": (lambda a, b: torch.clamp(a, max=b), 0),
    "add_alpha": (lambda a, b: torch.add(a, b, alpha=2), 0),
}

UNARY_INT: dict[str, Callable] = {
    "abs": torch.abs, "neg": torch.neg, "sign": torch.sign, "bitwise_not": torch.bitwise_not,
    "relu": torch.relu, "square": torch.square, "clone": torch.clone,
    "logical_not": torch.logical_not, "floor": torch.floor, "round": torch.round,
    "add_scalar": lambda x: x + 1, "mul_scalar": lambda x: x * 3, "sub_scalar": lambda x: x - 1,
    "true_div_scalar": lambda x: x / 2, "floordiv_scalar": lambda x: x // 3,
    "floordiv_neg1": lambda x: x // -1, "remainder_neg3": lambda x: x % -3,
    "fmod_neg1": lambda x: torch.fmod(x, -1), "div_trunc_neg2": lambda x: torch.div(
        x, -2, rounding_mode="trunc"),
    "exp": torch.exp, "sqrt": torch.sqrt, "sigmoid": torch.sigmoid,
    "clamp": lambda x: torch.clamp(x, -5, 5), "eq_zero": lambda x: x == 0,
    "lshift3": lambda x: x << 3, "rshift3": lambda x: x >> 3,
    "to_float32": lambda x: x.to(torch.float32), "to_float64": lambda x: x.to(torch.float64),
    "to_float16": lambda x: x.to(torch.float16), "to_bfloat16": lambda x: x.to(torch.bfloat16),
    "to_int8": lambda x: x.to(torch.int8), "to_int64": lambda x: x.to(torch.int64),
    "to_uint8": lambda x: x.to(torch.uint8), "to_bool": lambda x: x.to(torch.bool),
}


def _int_trunc_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # eager's own truncating division of int32/int64 min by -1 dies with SIGFPE (see
    # docs/numerics.md); Trebuchet wraps there as floor division does (min // -1 == min)
    bad = (b == -1) if a.dtype.is_signed else torch.zeros_like(b, dtype=torch.bool)
    return torch.where(bad, -a, torch.div(a, torch.where(bad, 1, b), rounding_mode="trunc"))


BINARY_INT: dict[str, Callable] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "div_trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "div_floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
    "floor_divide": torch.floor_divide, "remainder": torch.remainder, "fmod": torch.fmod,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt,
    "ge": torch.ge, "logical_and": torch.logical_and, "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor, "bitwise_and": torch.bitwise_and,
    "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor,
    "lshift": torch.bitwise_left_shift, "rshift": torch.bitwise_right_shift,
    "where": lambda a, b: torch.where(a > b, a, b), "clamp_tensor": lambda a, b: torch.clamp(
        a, min=b),
}
INT_DIVISIONS = {"div_trunc", "div_floor", "floor_divide", "remainder", "fmod"}
EAGER_ORACLE = {"div_trunc": _int_trunc_div}   # where eager itself cannot be asked

# op -> why eager's vectorized loop is not the oracle: there the oracle is eager on one
# element at a time (its scalar loop). docs/numerics.md gives each case.
SCALAR_PATH: dict[str, str] = {
    "sinh": "vectorized sinh/cosh overflow to inf where the result is finite (89 in float32)",
    "cosh": "vectorized sinh/cosh overflow to inf where the result is finite (89 in float32)",
    "gelu": "vectorized gelu(inf) is NaN and gelu(FLT_MAX) inf (the scalar loop: inf, FLT_MAX)",
    "fmod": "vectorized fmod(a, b) is NaN where a / b overflows (1 by the smallest subnormal); "
            "the scalar loop is exact, as C's fmod",
    "remainder": "vectorized remainder(a, b) is NaN where a / b overflows; the scalar loop is "
                 "exact, as C's fmod",
}


def _float64_rounded(fn: Callable) -> Callable:
    return lambda x: fn(x.double()).to(x.dtype)


def _log1p_tiny(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < torch.finfo(x.dtype).tiny, x, torch.log1p(x))


# (op, dtype) -> oracle where Trebuchet is deliberately more accurate than eager:
# docs/numerics.md gives each case.
ACCURATE: dict[tuple[str, torch.dtype], Callable] = {
    # eager's float32 sigmoid is 1 / (1 + exp(-x)) and gives 0 once exp(-x) overflows
    # (x < -88.7); Trebuchet's keeps the subnormal results (2.2e-39 at -89)
    ("sigmoid", torch.float32): _float64_rounded(torch.sigmoid),
    ("silu", torch.float32): lambda x: x * _float64_rounded(torch.sigmoid)(x),
    # eager's log1p of the smallest subnormal is 0; log1p(x) rounds to x there
    ("log1p", torch.float32): _log1p_tiny, ("log1p", torch.float64): _log1p_tiny,
}
# (group, op, dtype or None for all, target or None for all) -> reason: a known mismatch,
# documented in docs/numerics.md
_REF_EAGER = ("the reference target runs eager's vectorized torch op, which does not follow "
              "the scalar loop / the more accurate result here")
XFAIL: dict[tuple[str, str, torch.dtype | None, str | None], str] = {
    ("unary", "sinh", None, "reference"): _REF_EAGER,
    ("unary", "cosh", None, "reference"): _REF_EAGER,
    ("unary", "log1p", None, "reference"): _REF_EAGER,
    ("unary", "sigmoid", torch.float32, "reference"): _REF_EAGER,
    ("unary", "silu", torch.float32, "reference"): _REF_EAGER,
    ("binary", "fmod", None, "reference"): _REF_EAGER,
    ("binary", "remainder", None, "reference"): _REF_EAGER,
    ("binary", "add_alpha", torch.float64, "reference"): (
        "eager adds alpha * b with a fused multiply-add; in float64 the IR multiplies, then "
        "adds (the C compiler contracts the two into a fused multiply-add, the reference "
        "target does not)"),
    ("unary", "sigmoid", torch.float64, "triton"): (
        "the Triton target's sigmoid is e^x / (1 + e^x) below 0: at -710 it keeps the "
        "subnormal result 4.5e-309 where eager's 1 / (1 + e^-x) gives 0"),
    ("unary", "silu", torch.float64, "triton"): "x * sigmoid(x): as sigmoid",
    ("binary", "add_alpha", torch.float64, "triton"): (
        "eager adds alpha * b with a fused multiply-add; Triton kernels are compiled "
        "without contraction (enable_fp_fusion=False), so they multiply, then add"),
}


# ---- running and comparing --------------------------------------------------------

def run_group(target: str, fns: dict[str, Callable], *args: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], dict]:
    names = list(fns)
    funcs = [fns[n] for n in names]

    def graph(*xs: torch.Tensor) -> list[torch.Tensor]:
        return [f(*xs) for f in funcs]

    trebuchet.reset()
    out = trebuchet.compile(graph, target=target, strict=True)(*args)
    return dict(zip(names, out)), trebuchet.stats()


def eager(name: str, fn: Callable, *args: torch.Tensor) -> torch.Tensor:
    fn = EAGER_ORACLE.get(name, fn) if not args[0].dtype.is_floating_point else fn
    fn = ACCURATE.get((name, args[0].dtype), fn)
    if name in SCALAR_PATH:
        parts = [fn(*(a[i:i + 1] for a in args)) for i in range(args[0].numel())]
        return torch.cat(parts)
    return fn(*args)


def ordered(t: torch.Tensor) -> torch.Tensor:
    """float bits as integers that order like the values (adjacent floats differ by 1)."""
    bits = t.view(torch.int32 if t.dtype == torch.float32 else torch.int64).to(torch.int64)
    mag = bits & (2 ** (8 * t.element_size() - 1) - 1)
    return torch.where(bits < 0, -mag, mag)


def mismatches(got: torch.Tensor, want: torch.Tensor, ulps: float) -> torch.Tensor:
    """Mask of elements that differ: exact for integers, NaN, infinities and zeros (sign
    included); finite nonzero floats within `ulps` units in the last place."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if not want.dtype.is_floating_point:
        return got != want
    if want.dtype in (torch.float16, torch.bfloat16):
        got, want, ulps = got.float(), want.float(), 0
    both_nan = got.isnan() & want.isnan()
    same = (got == want) & (got.signbit() == want.signbit())
    special = ~want.isfinite() | ~got.isfinite() | (want == 0) | (got == 0)
    if ulps == 0:
        return ~(both_nan | same)
    close = (ordered(got) - ordered(want)).abs() <= ulps
    return ~(both_nan | torch.where(special, same, close))


def check(name: str, got: torch.Tensor, want: torch.Tensor, ulps: float | tuple[float, float],
          *args: torch.Tensor) -> None:
    if isinstance(ulps, tuple):
        ulps = ulps[args[0].dtype == torch.float64]
    bad = mismatches(got, want, ulps)
    if bad.any():
        rows = []
        for i in bad.nonzero().flatten()[:8].tolist():
            ins = ", ".join(repr(a[i].item()) for a in args)
            rows.append(f"  {name}({ins}) = {got[i].item()!r}, eager {want[i].item()!r}")
        pytest.fail(f"{int(bad.sum())} mismatches ({args[0].dtype}):\n" + "\n".join(rows))


def lowered(stats: dict) -> None:
    assert stats["graph_fallbacks"] == 0
    assert not stats["fallback_ops"], f"not lowered: {stats['fallback_ops']}"
    assert not stats["extern_ops"], f"library calls: {stats['extern_ops']}"


def xfail(request: pytest.FixtureRequest, group: str, name: str, dtype: torch.dtype,
          target: str) -> None:
    """Mark the running test as a strict xfail when XFAIL lists its case."""
    for key in [(group, name, d, t) for d in (dtype, None) for t in (target, None)]:
        if key in XFAIL:
            request.applymarker(pytest.mark.xfail(reason=XFAIL[key], strict=True))
            return


@functools.lru_cache(maxsize=None)
def unary_float(target: str, dtype: torch.dtype) -> tuple:
    (x,) = pad(float_values(dtype))
    got, stats = run_group(target, {n: f for n, (f, _) in UNARY_FLOAT.items()}, x)
    return x, got, stats


@functools.lru_cache(maxsize=None)
def binary_float(target: str, dtype: torch.dtype) -> tuple:
    a, b = pairs(float_values(dtype))
    got, stats = run_group(target, {n: f for n, (f, _) in BINARY_FLOAT.items()}, a, b)
    return (a, b), got, stats


@functools.lru_cache(maxsize=None)
def unary_int(target: str, dtype: torch.dtype) -> tuple:
    (x,) = pad(int_values(dtype))
    fns = {n: f for n, f in UNARY_INT.items()
           if not (dtype == torch.uint8 and n in ("neg", "floordiv_neg1", "remainder_neg3",
                                                  "fmod_neg1", "div_trunc_neg2"))}
    got, stats = run_group(target, fns, x)
    return x, got, stats


def int_pairs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = pairs(int_values(dtype))
    # the smallest integer by -1 runs in a child process (test_int_min_by_minus_one)
    keep = ~((a == torch.iinfo(dtype).min) & (b == -1) & dtype.is_signed) & (b != 0)
    return a[keep], b[keep]


@functools.lru_cache(maxsize=None)
def binary_int(target: str, dtype: torch.dtype) -> tuple:
    a, b = int_pairs(dtype)
    got, stats = run_group(target, BINARY_INT, a, b)
    return (a, b), got, stats


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(UNARY_FLOAT))
def test_unary_float(name: str, dtype: torch.dtype, target: str,
                     request: pytest.FixtureRequest) -> None:
    xfail(request, "unary", name, dtype, target)
    x, got, stats = unary_float(target, dtype)
    lowered(stats)
    fn, ulps = UNARY_FLOAT[name]
    check(name, got[name], eager(name, fn, x), ulps, x)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(BINARY_FLOAT))
def test_binary_float(name: str, dtype: torch.dtype, target: str,
                     request: pytest.FixtureRequest) -> None:
    xfail(request, "binary", name, dtype, target)
    (a, b), got, stats = binary_float(target, dtype)
    lowered(stats)
    fn, ulps = BINARY_FLOAT[name]
    check(name, got[name], eager(name, fn, a, b), ulps, a, b)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("name", list(UNARY_INT))
def test_unary_int(name: str, dtype: torch.dtype, target: str,
                     request: pytest.FixtureRequest) -> None:
    xfail(request, "unary_int", name, dtype, target)
    x, got, stats = unary_int(target, dtype)
    if name not in got:
        pytest.skip(f"{name} of {dtype}: eager rejects it")
    lowered(stats)
    ulps = UNARY_FLOAT[name][1] if got[name].dtype.is_floating_point and name in UNARY_FLOAT else 0
    check(name, got[name], eager(name, UNARY_INT[name], x), ulps, x)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", INTS, ids=str)
@pytest.mark.parametrize("name", list(BINARY_INT))
def test_binary_int(name: str, dtype: torch.dtype, target: str,
                     request: pytest.FixtureRequest) -> None:
    xfail(request, "binary_int", name, dtype, target)
    (a, b), got, stats = binary_int(target, dtype)
    lowered(stats)
    check(name, got[name], eager(name, BINARY_INT[name], a, b), 0, a, b)


# ---- the smallest integer divided by -1, in a child process ---------------------------

CHILD = r"""
import json, sys, torch, trebuchet
def fn(a, b):
    return [a // b, a % b, torch.fmod(a, b), torch.div(a, b, rounding_mode="trunc"),
            torch.div(a, b, rounding_mode="floor"), a // -1, a % -1, torch.fmod(a, -1),
            torch.div(a, -1, rounding_mode="trunc")]
out = {}
for target in sys.argv[1].split(","):
    for name in sys.argv[2].split(","):
        dtype = getattr(torch, name)
        lo = torch.iinfo(dtype).min
        a = torch.tensor([lo, lo + 1, -7, 7, lo] * 16, dtype=dtype)
        b = torch.tensor([-1, -1, -1, -1, 1] * 16, dtype=dtype)
        trebuchet.reset()
        got = trebuchet.compile(fn, target=target, strict=True)(a, b)
        s = trebuchet.stats()
        assert not s["fallback_ops"] and not s["graph_fallbacks"], s
        out[target + "/" + name] = [t.tolist() for t in got]
print(json.dumps(out))
"""
SIGNED = [torch.int64, torch.int32, torch.int16, torch.int8]


def test_int_min_by_minus_one() -> None:
    """min // -1, min % -1, fmod(min, -1) and truncating division of min by -1: the CPU's
    divide instruction traps there (SIGFPE kills the process); eager wraps (min // -1 is
    min) and gives 0 for the remainders. Eager's own truncating division of int32/int64
    min by -1 dies (docs/numerics.md): Trebuchet gives min, as floor division does."""
    names = [str(d).split(".")[1] for d in SIGNED]
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(TARGETS), ",".join(names)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for dtype, name in zip(SIGNED, names):
        lo = torch.iinfo(dtype).min
        a = torch.tensor([lo, lo + 1, -7, 7, lo] * 16, dtype=dtype)
        b = torch.tensor([-1, -1, -1, -1, 1] * 16, dtype=dtype)
        floor = torch.div(a, b, rounding_mode="floor")     # exact: b is +-1
        want = [floor, a % b, torch.fmod(a, b), floor, floor, a // -1, a % -1,
                torch.fmod(a, -1), floor]
        assert floor[0] == lo and (a % -1 == 0).all()
        for target in TARGETS:
            got = results[f"{target}/{name}"]
            assert got == [w.tolist() for w in want], (target, name)
