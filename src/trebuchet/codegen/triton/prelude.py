"""The helpers every generated Triton module imports (`from ...prelude import *`):
`@triton.jit` functions for the primitives Triton has no operation for, written with
tl operations only (no libdevice: its functions are stubs under TRITON_INTERPRET=1), and no
`@jit` function of triton.language.standard (tl.zeros, tl.sigmoid, ...): when triton was
imported before TRITON_INTERPRET=1 was set (torch imports it), those stay compiled
functions that the interpreter cannot call.

Imported only by generated modules, never by the rest of the package, so the C target
works without triton installed. Each helper computes in its argument's dtype (the
kernels pass float16/bfloat16 values as float32). A sign is flipped as `r * -1.0`, never
`-r`: Triton 3.6 compiles a float's unary minus as 0 - r, which turns -0.0 into +0.0.
"""
import torch
import triton
import triton.language as tl

__all__ = ["torch", "triton", "tl", "_t_signbit", "_t_sigmoid", "_t_round_bf16", "_t_to_bf16",
           "_t_expm1", "_t_log1p",
           "_t_tanh", "_t_sinh", "_t_cosh", "_t_pow", "_t_pow64", "_t_erfc", "_t_erfc64",
           "_t_lgamma", "_t_lgamma64",
           "_t_round", "_t_trunc", "_t_fmax", "_t_fmin",
           "_t_floordiv_f", "_t_remainder_f", "_t_atan", "_t_asin", "_t_acos", "_t_atan2",
           "_t_asinh", "_t_acosh", "_t_atanh", "_t_tan", "_t_sum", "_t_prod", "_t_max",
           "_t_min", "_t_max_nan", "_t_min_nan", "_t_max_int", "_t_min_int", "_t_first_index",
           "_t_num_warps", "_t_tuned"]


@triton.jit
def _t_signbit(x):
    """The sign bit of a float (true for -0.0 and negative NaNs)."""
    if x.dtype == tl.float64:
        r = x.to(tl.int64, bitcast=True) < 0
    else:
        r = x.to(tl.int32, bitcast=True) < 0
    return r


@triton.jit
def _t_round_bf16(x):
    """float32 rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as float32.
    In bits, because the interpreter's `.to(tl.bfloat16)` truncates (measured with
    Triton 3.9: 502 of 1024 random floats off by one unit), unlike the GPU's."""
    u = x.to(tl.uint32, bitcast=True)
    r = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    r = tl.where((u & 0x7FFFFFFF) > 0x7F800000, u | 0x00400000, r)
    return r.to(tl.float32, bitcast=True)


@triton.jit
def _t_to_bf16(x):
    """A float32 holding a bfloat16 value (from _t_round_bf16) as bfloat16, through its
    bits (the interpreter's conversion is off by a unit for subnormals)."""
    return (x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _t_sigmoid(x):
    """1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below (no overflow of e^-x: small
    results reach the subnormal range, as eager's)."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1 / (1 + e), e / (1 + e))


@triton.jit
def _t_expm1(x):
    """e^x - 1 without cancellation near 0 (Kahan: (u - 1) * x / log u with u = e^x);
    plain u - 1 for |x| >= 0.5, where nothing cancels (and x * (u - 1) could overflow)."""
    u = tl.exp(x)
    um1 = u - 1
    r = tl.where(u == 1, x, um1 * x / tl.log(u))
    return tl.where(tl.abs(x) < 0.5, r, um1)


@triton.jit
def _t_log1p(x):
    """log(1 + x) without cancellation near 0 (Kahan: log u * x / (u - 1), u = 1 + x);
    plain log u for |x| >= 0.5."""
    u = 1 + x
    r = tl.where(u == 1, x, tl.log(u) * x / (u - 1))
    return tl.where(tl.abs(x) < 0.5, r, tl.log(u))


@triton.jit
def _t_tanh(x):
    """tanh x = sign(x) * -m / (2 + m) with m = expm1(-2|x|)."""
    m = _t_expm1(-2 * tl.abs(x))
    r = -m / (2 + m)
    return tl.where(_t_signbit(x), r * -1.0, r)


@triton.jit
def _t_sinh(x):
    """sinh |x| = (e + e / (e + 1)) / 2 with e = expm1(|x|); large |x| as (h/2) * h with
    h = e^(|x|/2), so it overflows where the result does."""
    a = tl.abs(x)
    e = _t_expm1(a)
    h = tl.exp(a * 0.5)
    r = tl.where(a < 20, (e + e / (e + 1)) * 0.5, (h * 0.5) * h)
    return tl.where(_t_signbit(x), r * -1.0, r)


@triton.jit
def _t_cosh(x):
    """cosh x = (h/2) * h + (1/2) / (h * h) with h = e^(|x|/2)."""
    h = tl.exp(tl.abs(x) * 0.5)
    return (h * 0.5) * h + 0.5 / (h * h)


@triton.jit
def _t_pow_cases(x, y, r):
    """pow's sign and special cases on r = |x| ** y, as C's pow: the sign of an odd
    integer power of a negative base, NaN for a finite negative base and a non-integer
    power, x == 1 or y == 0 give 1, |x| == 1 with y = +-inf gives 1."""
    ax = tl.abs(x)
    is_int = tl.floor(y) == y
    half = y * 0.5
    odd = is_int & (tl.floor(half) != half)
    r = tl.where(_t_signbit(x) & odd, r * -1.0, r)
    r = tl.where((x < 0) & (ax != float("inf")) & (~is_int), float("nan"), r)
    r = tl.where((ax == 1) & (tl.abs(y) == float("inf")), 1.0, r)
    return tl.where((x == 1) | (y == 0), 1.0, r)


@triton.jit
def _t_pow(x, y):
    """x ** y as 2^(y log2 |x|): float32 values computed in float64 (so within half an
    ulp of float32 after rounding)."""
    return _t_pow_cases(x, y, tl.exp2(y * tl.log2(tl.abs(x))))


@triton.jit
def _t_split(a):
    """Veltkamp's split of a float64 into two halves of 26 bits (hi + lo == a exactly)."""
    t = a * 134217729.0
    hi = t - (t - a)
    return hi, a - hi


@triton.jit
def _t_two_prod(a, b):
    """p + e == a * b exactly (Dekker's product: no fused multiply-add needed)."""
    p = a * b
    ah, al = _t_split(a)
    bh, bl = _t_split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@triton.jit
def _t_two_sum(a, b):
    """s + e == a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@triton.jit
def _t_log_dd(a):
    """log(a) for finite a > 0 in float64 as a double-double (hi, lo), to about 2^-100
    relative: a = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) = 2s + 2s^3/3 +
    ..., s = (m-1)/(m+1) held in double-double."""
    sub = a < 2.2250738585072014e-308
    a = tl.where(sub, a * 18014398509481984.0, a)                  # 2^54: normal now
    bits = a.to(tl.int64, bitcast=True)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = ((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).to(tl.float64, bitcast=True)
    big = m > 1.4142135623730951
    m = tl.where(big, m * 0.5, m)
    e = tl.where(big, e + 1, e) - tl.where(sub, 54, 0)
    f = m - 1.0                                                    # exact
    d_hi, d_lo = _t_two_sum(m, 1.0)
    s = f / d_hi
    p, pe = _t_two_prod(s, d_hi)
    s_lo = (((f - p) - pe) - s * d_lo) / d_hi
    # 2s^3/3 (below 1% of 2s) in double-double too; the rest (below 2e-4 of 2s) in float64
    z, z_e = _t_two_prod(s, s)
    c, c_e = _t_two_prod(s, z)
    c_e = c_e + s * z_e
    t3 = (2 * c) / 3
    p3, p3e = _t_two_prod(t3, 3.0)
    t3_lo = ((2 * c - p3) - p3e) / 3 + 2 * c_e / 3 + 2 * z * s_lo
    q = 1.0 / 25
    q = q * z + 1.0 / 23
    q = q * z + 1.0 / 21
    q = q * z + 1.0 / 19
    q = q * z + 1.0 / 17
    q = q * z + 1.0 / 15
    q = q * z + 1.0 / 13
    q = q * z + 1.0 / 11
    q = q * z + 1.0 / 9
    q = q * z + 1.0 / 7
    q = q * z + 1.0 / 5
    rest = 2 * c * z * q
    ef = e.to(tl.float64)
    # ln 2 = 0.6931467056274414 (20 bits: e * it is exact) + 4.7493250390316726e-07
    hi, e1 = _t_two_sum(ef * 0.6931467056274414, 2 * s)
    hi, e2 = _t_two_sum(hi, t3)
    return hi, e1 + e2 + (2 * s_lo + t3_lo + rest + ef * 4.7493250390316726e-07)


@triton.jit
def _t_pow64(x, y):
    """float64 x ** y within about an ulp: e^(y log |x|) with log |x| and its product by y
    held in double-double, e^(hi + lo) = e^hi (1 + lo). Bases 0, inf and NaN, and powers
    beyond 1e290 (whose results are 0, 1 or inf), go the plain way."""
    ax = tl.abs(x)
    plain = (ax == 0) | (ax == float("inf")) | (ax != ax) | (y != y) | (tl.abs(y) > 1e290)
    a = tl.where(plain, 1.0, ax)
    b = tl.where(plain, 1.0, y)
    l_hi, l_lo = _t_log_dd(a)
    p_hi, p_lo = _t_two_prod(b, l_hi)
    p_lo = p_lo + b * l_lo
    h = p_hi + p_lo
    lo = p_lo - (h - p_hi)
    eh = tl.exp(h)
    r = eh + eh * lo
    # near overflow: e^(h - ln 2) * 2, so that results beyond the largest float give inf
    # (h - 0.6931467056274414 is exact; e^c - 1 for the small rest c by its series)
    c = lo - 4.7493250390316726e-07
    eh2 = tl.exp(h - 0.6931467056274414)
    r = tl.where(h > 700, (eh2 + eh2 * (c + c * c * 0.5)) * 2.0, r)
    r = tl.where(h > 710.5, eh, r)             # beyond the largest float: inf
    r = tl.where(plain, tl.exp2(y * tl.log2(ax)), r)
    r = tl.where(y == 1, ax, r)                   # exact (the largest float stays finite)
    return _t_pow_cases(x, y, r)


@triton.jit
def _t_round(x, big):
    """Round half to even (|x| >= big: already an integer, or inf/NaN); zero keeps x's sign."""
    r = tl.floor(x + 0.5)
    tie = (r - x) == 0.5
    half_r = r * 0.5
    r = tl.where(tie & (tl.floor(half_r) != half_r), r - 1, r)
    r = tl.where(r == 0, x * 0, r)
    return tl.where(tl.abs(x) >= big, x, r)


@triton.jit
def _t_trunc(x):
    return tl.where(x < 0, tl.ceil(x), tl.floor(x))


@triton.jit
def _t_fmax(a, b):
    """max, NaN-propagating (a NaN a, else b when not a > b: as the C target's T_MAX)."""
    return tl.where((a != a) | (a > b), a, b)


@triton.jit
def _t_fmin(a, b):
    return tl.where((a != a) | (a < b), a, b)


@triton.jit
def _t_floordiv_f(a, b):
    """Python's float floor division, as eager: from fmod (Triton's float %), rounded."""
    mod = a % b
    div = (a - mod) / b
    div = tl.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1, div)
    q = a / b
    zero = tl.where(_t_signbit(q), -1.0, 1.0) * 0.0   # 3.6's interpreter gave +0.0 for -0.0
    fl = tl.floor(div)
    fl = tl.where(div - fl > 0.5, fl + 1, fl)
    r = tl.where(div == 0, zero, fl)
    return tl.where(b == 0, q, r)


@triton.jit
def _t_remainder_f(a, b):
    """Python's float remainder (sign of b), from fmod."""
    m = a % b
    return tl.where((m != 0) & ((b < 0) != (m < 0)), m + b, m)


@triton.jit
def _t_atan(x):
    """atan: |x| > 1 reduced by atan a = pi/2 - atan(1/a), then three halvings
    (atan t = 2 atan(t / (1 + sqrt(1 + t^2)))) leave t <= 0.05, where its series to
    t^15 is exact to double precision."""
    a = tl.abs(x)
    inv = a > 1
    t = tl.where(inv, 1 / a, a)
    t = t / (1 + tl.sqrt(1 + t * t))
    t = t / (1 + tl.sqrt(1 + t * t))
    t = t / (1 + tl.sqrt(1 + t * t))
    t2 = t * t
    p = -1.0 / 15
    p = p * t2 + 1.0 / 13
    p = p * t2 - 1.0 / 11
    p = p * t2 + 1.0 / 9
    p = p * t2 - 1.0 / 7
    p = p * t2 + 1.0 / 5
    p = p * t2 - 1.0 / 3
    r = 8 * (t + t * (t2 * p))
    r = tl.where(inv, 1.5707963267948966 - r, r)
    r = tl.where(a < 1e-8, a, r)                 # x - x^3/3 rounds to x (subnormals too)
    return tl.where(_t_signbit(x), r * -1.0, r)


@triton.jit
def _t_asin(x):
    return _t_atan(x / tl.sqrt((1 - x) * (1 + x)))


@triton.jit
def _t_acos(x):
    return 2 * _t_atan(tl.sqrt((1 - x) / (1 + x)))


@triton.jit
def _t_atan2(y, x):
    """atan2 from atan of the smaller over the larger magnitude (<= 1), then the octant;
    signed zeros and infinities as C's atan2."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    swap = ay > ax
    num = tl.where(swap, ax, ay)
    den = tl.where(swap, ay, ax)
    t = _t_atan(num / den)
    t = tl.where(num == 0, 0.0, t)                                             # 0/0
    t = tl.where((num == float("inf")) & (den == float("inf")), 0.7853981633974483, t)
    r = tl.where(swap, 1.5707963267948966 - t, t)
    r = tl.where(_t_signbit(x), 3.141592653589793 - r, r)
    r = tl.where(_t_signbit(y), r * -1.0, r)
    return tl.where((x != x) | (y != y), x + y, r)


@triton.jit
def _t_asinh(x):
    a = tl.abs(x)
    r = tl.where(a > 268435456.0, tl.log(a) + 0.6931471805599453,
                 _t_log1p(a + a * a / (1 + tl.sqrt(1 + a * a))))
    return tl.where(_t_signbit(x), r * -1.0, r)


@triton.jit
def _t_acosh(x):
    t = x - 1
    r = tl.where(x > 268435456.0, tl.log(x) + 0.6931471805599453,
                 _t_log1p(t + tl.sqrt(2 * t + t * t)))
    return tl.where(x < 1, float("nan"), r)


@triton.jit
def _t_atanh(x):
    a = tl.abs(x)
    r = 0.5 * _t_log1p(2 * a / (1 - a))
    return tl.where(_t_signbit(x), r * -1.0, r)


@triton.jit
def _t_tan(x):
    return tl.sin(x) / tl.cos(x)


# ---- reductions (codegen/triton/reductions.py) ----
# The combine functions of tl.reduce: Triton's own (core.reduce with them is what tl.sum
# and tl.max do; the interpreter recognises them and reduces with numpy).
_t_sum = tl.standard._sum_combine
_t_prod = tl.standard._prod_combine
_t_max = tl.standard._elementwise_max
_t_min = tl.standard._elementwise_min


@triton.jit
def _t_max_nan(v, AXIS: tl.constexpr):
    """The maximum along AXIS (kept as size 1), NaN if any element is NaN (Triton's max
    drops NaN; eager propagates it): NaNs counted beside, the maximum of the others."""
    isnan = v != v
    m = tl.reduce(tl.where(isnan, float("-inf"), v), AXIS, _t_max, keep_dims=True)
    nan = tl.reduce(isnan.to(tl.int8), AXIS, _t_max, keep_dims=True)
    return tl.where(nan != 0, float("nan"), m)


@triton.jit
def _t_min_nan(v, AXIS: tl.constexpr):
    isnan = v != v
    m = tl.reduce(tl.where(isnan, float("inf"), v), AXIS, _t_min, keep_dims=True)
    nan = tl.reduce(isnan.to(tl.int8), AXIS, _t_max, keep_dims=True)
    return tl.where(nan != 0, float("nan"), m)


@triton.jit
def _t_max_int(v, AXIS: tl.constexpr):
    return tl.reduce(v, AXIS, _t_max, keep_dims=True)


@triton.jit
def _t_min_int(v, AXIS: tl.constexpr):
    return tl.reduce(v, AXIS, _t_min, keep_dims=True)


@triton.jit
def _t_first_index(v, pos, m, AXIS: tl.constexpr):
    """argmax/argmin: the smallest position `pos` (int64) whose value `v` is the extreme
    `m` (when m is NaN: whose value is NaN), as eager's first index."""
    hit = tl.where(m != m, v != v, v == m)
    return tl.reduce(tl.where(hit, pos, 9223372036854775807), AXIS, _t_min, keep_dims=True)


def _t_num_warps(elements: int) -> int:
    """Warps of a program working on a block of `elements` (launch heuristic: 8 to 32
    elements per thread, e.g. a persistent row of 4096 float32 on 8 warps)."""
    return 2 if elements <= 512 else 4 if elements <= 2048 else 8 if elements <= 8192 else 16


def _t_tuned(blocks: tuple, config: tuple) -> tuple:
    """A pointwise launch's block sizes and warps under an autotuned `config` ((one scale
    per block: the block is the heuristic's times 2**scale, within 16..4096), warps);
    codegen/triton/autotune.py chooses it."""
    scales, warps = config
    return tuple(min(4096, max(16, b << s if s >= 0 else b >> -s))
                 for b, s in zip(blocks, scales)), warps


# ---- erfc and lgamma: float64 routines accurate to ~1e-13 relative; float32 (and half)
# values are computed in them (ops.py), which rounds to within an ulp of float32. ----

@triton.jit
def _t_erfc(x):
    """erfc x: 1 - erf|x| below 4 (its cancellation costs at most 4e8 ulp of float64 at 4,
    i.e. 1e-8 relative), above 4 e^(-x^2) / sqrt(pi) times Laplace's continued fraction
    1 / (x + (1/2) / (x + 1 / (x + (3/2) / ...))), 40 terms from the tail (converged to
    float64 there); erfc(-x) = 2 - erfc(x)."""
    a = tl.abs(x)
    big = tl.where(a >= 4, a, 4.0)
    f = big
    for k in range(40, 0, -1):
        f = big + (k * 0.5) / f
    cf = tl.exp(-big * big) / f * 0.5641895835477563            # 1 / sqrt(pi)
    r = tl.where(a < 4, 1 - tl.math.erf(a), cf)
    r = tl.where(a == float("inf"), 0.0, r)
    r = tl.where(_t_signbit(x) & (x != 0), 2 - r, r)
    return tl.where(x != x, x, r)


@triton.jit
def _t_lgamma_pos(x):
    """log Gamma(x) for x > 0: Stirling's series from x + 8 on, shifted down by
    log(x (x+1) ... (x+7))."""
    z = x + 8
    w = 1 / (z * z)
    s = 691.0 / 360360
    s = s * w - 1.0 / 1188
    s = s * w + 1.0 / 1680
    s = s * w - 1.0 / 1260
    s = s * w + 1.0 / 360
    s = s * w - 1.0 / 12
    st = (z - 0.5) * tl.log(z) - z + 0.9189385332046728 - s / z      # log sqrt(2 pi)
    p = x * (x + 1) * (x + 2) * (x + 3)
    q = (x + 4) * (x + 5) * (x + 6) * (x + 7)
    return st - tl.log(p) - tl.log(q)


@triton.jit
def _t_lgamma(x):
    """log |Gamma(x)|: 0 at 1 and 2, +inf at the poles (0 and the negative integers) and
    at +-inf; x < 0 by reflection, log(pi / |sin(pi x)|) - lgamma(1 - x), with |sin(pi x)|
    from x less its nearest integer (exact), so it keeps its precision near the poles."""
    a = tl.where(x > 0, x, 1 - x)
    big = a > 1e15
    lg = _t_lgamma_pos(tl.where(big, 1.0, a))
    lg = tl.where(big, a * (tl.log(a) - 1), lg)                 # only the magnitude matters
    d = x - tl.floor(x + 0.5)                  # x less its nearest integer (exact): |d| <= 1/2
    sn = tl.abs(tl.sin(3.141592653589793 * d))  # |sin(pi x)|
    neg = tl.log(3.141592653589793 / sn) - lg
    r = tl.where(x > 0, lg, neg)
    r = tl.where((x <= 0) & (tl.floor(x) == x), float("inf"), r)
    r = tl.where((x == 1) | (x == 2), 0.0, r)
    return tl.where(tl.abs(x) == float("inf"), float("inf"), r)


@triton.jit
def _t_lgamma2(e):
    """log Gamma(2 + e) for |e| <= 1/2 (float64): its Taylor series at 2,
    (1 - euler_gamma) e + sum over k >= 2 of (-1)^k (zeta(k) - 1) / k e^k, to k = 31
    (the coefficients shrink as 2^-k: the rest is below 1e-20)."""
    s = -1.5021384080754142e-11
    s = s * e + 3.1044247747322276e-11
    s = s * e - 6.4229645638381e-11
    s = s * e + 1.330476437424449e-10
    s = s * e - 2.7595228851242334e-10
    s = s * e + 5.731367241678862e-10
    s = s * e - 1.1921401405860912e-09
    s = s * e + 2.4836745438024785e-09
    s = s * e - 5.183475041970047e-09
    s = s * e + 1.0838659214896955e-08
    s = s * e - 2.2711094608943164e-08
    s = s * e + 4.7698101693639804e-08
    s = s * e - 1.0043224823968099e-07
    s = s * e + 2.1207184805554665e-07
    s = s * e - 4.492469198764566e-07
    s = s * e + 9.55141213040742e-07
    s = s * e - 2.039215753801366e-06
    s = s * e + 4.374866789907488e-06
    s = s * e - 9.439488275268397e-06
    s = s * e + 2.050721277567069e-05
    s = s * e - 4.492623673813314e-05
    s = s * e + 9.945751278180853e-05
    s = s * e - 0.00022315475845357939
    s = s * e + 0.0005096695247430425
    s = s * e - 0.001192753911703261
    s = s * e + 0.0028905103307415234
    s = s * e - 0.007385551028673986
    s = s * e + 0.020580808427784546
    s = s * e - 0.0673523010531981
    s = s * e + 0.3224670334241132
    s = s * e + 0.42278433509846713
    return s * e


@triton.jit
def _t_lgamma64(x):
    """log |Gamma(x)| in float64: the series at 2 on [1.5, 2.5), lgamma(x) = lgamma(x + 1)
    - log x below (x - 1 and the series variable exact), log of the product
    (x - 1)(x - 2)...(x - n) plus the series from 2.5 to 12, Stirling's series from 12
    (terms to x^-13), reflection for x < 0; 0 at 1 and 2, +inf at the poles and +-inf."""
    a = tl.where(x > 0, x, 1 - x)
    # [0, 0.5): S(a) - log1p(a) - log(a); [0.5, 1.5): S(a - 1) - log1p(a - 1)
    small = a < 1.5
    e1 = tl.where(a < 0.5, a, a - 1)
    low = _t_lgamma2(tl.where(small, e1, 0.0)) - _t_log1p(tl.where(small, e1, 0.0))
    low = tl.where(a < 0.5, low - tl.log(a), low)
    # [1.5, 12): n = floor(a - 1.5) steps down to [1.5, 2.5)
    mid = (a >= 1.5) & (a < 12)
    n = tl.where(mid, tl.floor(a - 1.5), 0.0)
    y = tl.where(mid, a - n, 2.0)
    p = a * 0 + 1.0                              # a block of a's shape (the loop keeps it)
    for k in range(10):
        p = p * tl.where(k < n, a - 1 - k, 1.0)
    midv = _t_lgamma2(y - 2) + tl.log(p)
    # [12, inf): Stirling
    z = tl.where(a >= 12, a, 12.0)
    w = 1 / (z * z)
    s = 3617.0 / 122400
    s = s * w - 1.0 / 156
    s = s * w + 691.0 / 360360
    s = s * w - 1.0 / 1188
    s = s * w + 1.0 / 1680
    s = s * w - 1.0 / 1260
    s = s * w + 1.0 / 360
    s = s * w - 1.0 / 12
    big = (z - 0.5) * tl.log(z) - z + 0.9189385332046728 - s / z
    big = tl.where(z > 1e17, z * (tl.log(z) - 1), big)
    lg = tl.where(small, low, tl.where(mid, midv, big))
    d = x - tl.floor(x + 0.5)
    sn = tl.abs(tl.sin(3.141592653589793 * d))
    refl = tl.where(tl.abs(d) < 1e-300, -tl.log(tl.abs(d)), tl.log(3.141592653589793 / sn))
    r = tl.where(x > 0, lg, refl - lg)              # pi x would lose bits among subnormals
    r = tl.where((x <= 0) & (tl.floor(x) == x), float("inf"), r)
    r = tl.where((x == 1) | (x == 2), 0.0, r)
    r = tl.where(tl.abs(x) == float("inf"), float("inf"), r)
    return tl.where(x != x, x, r)


@triton.jit
def _t_erfc_near1(h):
    """erfc(1 + h) for |h| <= 1/2 (float64): its Taylor series at 1 to h^27 (the rest is
    below 1e-20 relative)."""
    s = 2.2964662043673654e-12
    s = s * h + 1.1469726123674406e-11
    s = s * h - 4.417090067793919e-11
    s = s * h - 1.0930785305190424e-10
    s = s * h + 6.902025511577156e-10
    s = s * h + 6.497413075317325e-10
    s = s * h - 8.995978771838103e-09
    s = s * h + 1.941265608438499e-09
    s = s * h + 9.738580157459114e-08
    s = s * h - 1.2328726086225257e-07
    s = s * h - 8.490471396314434e-07
    s = s * h + 2.081047017853699e-06
    s = s * h + 5.478243913614475e-06
    s = s * h - 2.3707092917618642e-05
    s = s * h - 1.871663923714299e-05
    s = s * h + 0.0002000551471321796
    s = s * h - 8.552399137172747e-05
    s = s * h - 0.0012262875805634853
    s = s * h + 0.0018851883701199847
    s = s * h + 0.004777030724284622
    s = s * h - 0.015154718159799489
    s = s * h - 0.0046123055268954966
    s = s * h + 0.06918458290343245
    s = s * h - 0.06918458290343245
    s = s * h - 0.1383691658068649
    s = s * h + 0.4151074974205947
    s = s * h - 0.4151074974205947
    s = s * h + 0.15729920705028513
    return s


@triton.jit
def _t_erfc64(x):
    """float64 erfc: 1 - erf x below 1/2; erfc(1 + h) by its Taylor series on [1/2, 3/2);
    from 3/2 e^(-x^2) / sqrt(pi) times Laplace's continued fraction, 100 terms (converged
    to 2e-17 at 3/2), with e^(-x^2) = e^(-u^2) e^(-(x - u)(x + u)) for u = x with its low
    27 bits cleared (u^2 exact); erfc(-x) = 2 - erfc(x)."""
    a = tl.abs(x)
    near = _t_erfc_near1(tl.where((a >= 0.5) & (a < 1.5), a - 1, 0.0))
    big = tl.where(a >= 1.5, a, 1.5)
    f = big
    for k in range(100, 0, -1):
        f = big + (k * 0.5) / f
    u = (big.to(tl.int64, bitcast=True) & -134217728).to(tl.float64, bitcast=True)
    g = tl.exp(-u * u) * tl.exp(-(big - u) * (big + u))
    far = g / f * 0.5641895835477563                                    # 1 / sqrt(pi)
    r = tl.where(a < 0.5, 1 - tl.math.erf(a), tl.where(a < 1.5, near, far))
    r = tl.where(a == float("inf"), 0.0, r)
    r = tl.where(_t_signbit(x) & (x != 0), 2 - r, r)
    return tl.where(x != x, x, r)
