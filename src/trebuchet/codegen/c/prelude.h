/* Trebuchet C prelude: types and scalar helpers shared by every generated kernel. */
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* Let the vectorizer call glibc's vector math (libmvec) for these functions;
   glibc only declares them under -ffast-math, which would break NaN semantics. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define T_VEC __attribute__((simd("notinbranch")))
float expf(float) T_VEC; float logf(float) T_VEC; float tanhf(float) T_VEC;
float erff(float) T_VEC; float expm1f(float) T_VEC; float log1pf(float) T_VEC;
float sinf(float) T_VEC; float cosf(float) T_VEC; float powf(float, float) T_VEC;
double exp(double) T_VEC; double log(double) T_VEC;
#endif
#include <tgmath.h>

/* ---- float32 exp, sigmoid, tanh, erf, sin, cos -----------------------------------------
   Inline, branch-free routines that the vectorizer turns into straight-line SIMD code.
   A call into libmvec costs more than the math in a fused kernel: every vector
   register is caller-saved, so live values spill around each call, and the kernel's
   other work cannot overlap the callee's. Each routine gives its method and the
   largest error measured over every float32 input against a float64 reference
   (tests/test_c_math.py checks these bounds through compiled kernels). NaN, +-inf,
   -0.0, overflow and gradual underflow follow the C library. They rely on fmaf being
   a single instruction, so they are used only where FMA is available (and on x86-64
   GCC, which provides the huge-argument path of sin/cos below); elsewhere the same
   names call libm. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__FMA__)
#define T_FAST_MATH 1

static inline uint32_t t_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float t_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer k held in the low
   mantissa bits: bits(x + T_SHIFT) = bits(T_SHIFT) + k. A shifter of T_SHIFT + c
   leaves k + c there (c >= 0), ready to be moved into an exponent field. */
#define T_SHIFT 0x1.8p23f
#define T_LOG2E 0x1.715476p+0f
#define T_LN2_HI 0x1.62e430p-1f   /* ln 2 = T_LN2_HI + T_LN2_LO to 2^-54; T_LN2_HI has 20 */
#define T_LN2_LO -0x1.05c610p-29f /* significant bits, so fmaf(k, -T_LN2_HI, x) is exact */

/* e^r - 1 for |r| <= ln(2)/2: r + r^2 q(r), q minimax of degree 4 (relative error of
   the polynomial 2^-26; coefficients fitted in float), evaluated by Estrin's scheme. */
static inline float t_expm1_reduced(float r) {
    float r2 = r * r;
    float lo = fmaf(0x1.5554b4p-3f, r, 0x1.fffffep-2f);
    float hi = fmaf(0x1.12253ap-7f, r, 0x1.5556f4p-5f);
    float q = fmaf(fmaf(0x1.6b99e4p-10f, r2, hi), r2, lo);
    return fmaf(r2, q, r);
}

/* e^x. x = k ln2 + r (Cody-Waite, two-part ln 2), e^x = 2^k (1 + expm1(r)); 2^k is
   applied as two factors (each a normal float), so results beyond the range become inf
   and small ones underflow gradually, through the subnormals. Max error 1.05 ulp. */
static inline float t_expf(float x) {
    /* e^104 overflows and e^-104 rounds to 0; NaN fails the comparison and passes */
    x = 104.0f < fabsf(x) ? copysignf(104.0f, x) : x;
    float j = fmaf(x, T_LOG2E, T_SHIFT);
    float k = j - T_SHIFT;
    float r = fmaf(k, -T_LN2_LO, fmaf(k, -T_LN2_HI, x));
    int32_t n = (int32_t)(t_f2u(j) - t_f2u(T_SHIFT));
    int32_t n1 = n >> 1, n2 = n - n1;
    float s1 = t_u2f((uint32_t)(n1 + 127) << 23), s2 = t_u2f((uint32_t)(n2 + 127) << 23);
    return fmaf(s1, t_expm1_reduced(r), s1) * s2;
}

/* 1 / (1 + e^-x). With E = 2^32 e^-|x| (never over- or underflows):
   x >= 0: 2^32 / (2^32 + E);  x < 0: E / (2^32 + E), so results down in the
   subnormal range come from one correctly rounded division. The reduction is written
   for rho = |x| + k ln2 = -r (e^r - 1 by t_expm1_reduced's polynomial with the odd
   coefficients negated: the same roundings, one negation fewer). Max error 2.5 ulp. */
static inline float t_sigmoidf(float x) {
    float a = fabsf(x);
    a = 104.0f < a ? 104.0f : a;
    float j = fmaf(a, -T_LOG2E, T_SHIFT + 159.0f);        /* low bits: k + 127 + 32 */
    float k = j - (T_SHIFT + 159.0f);
    float rho = fmaf(k, T_LN2_LO, fmaf(k, T_LN2_HI, a));
    float rho2 = rho * rho;
    float lo = fmaf(-0x1.5554b4p-3f, rho, 0x1.fffffep-2f);
    float hi = fmaf(-0x1.12253ap-7f, rho, 0x1.5556f4p-5f);
    float q = fmaf(fmaf(0x1.6b99e4p-10f, rho2, hi), rho2, lo);
    float s = t_u2f(t_f2u(j) << 23);                       /* 2^(k + 32) */
    float e = fmaf(s, fmaf(rho2, q, -rho), s);             /* 2^32 e^-|x| */
    float num = x >= 0.0f ? 0x1p32f : e;
    return num / (0x1p32f + e);
}

/* tanh x = sign(x) * -m / (2 + m) with m = expm1(-2|x|) = 2^k expm1(r) + (2^k - 1)
   (one reduction serves small and large |x|; tanh is exactly 1 beyond 9.01).
   Max error 2.5 ulp. */
static inline float t_tanhf(float x) {
    float a = fabsf(x);
    a = 40.0f < a ? 40.0f : a;
    float j = fmaf(a, -2.0f * T_LOG2E, T_SHIFT + 127.0f);  /* low bits: k + 127 */
    float k = j - (T_SHIFT + 127.0f);
    float r = fmaf(k, -T_LN2_LO, fmaf(k, -T_LN2_HI, -2.0f * a));
    float s = t_u2f(t_f2u(j) << 23);                       /* 2^k */
    float m = fmaf(s, t_expm1_reduced(r), s - 1.0f);
    return copysignf(m / (2.0f + m), x);
}

/* erf. |x| < 0.9: x + x P(x^2), P minimax of degree 5 in x^2 (relative error 2^-26).
   Else erf |x| = 1 - erfc |x| with erfc a = exp(-a^2 + S(a)), S a degree-8 minimax fit of
   log(erfc a) + a^2 on [0.9, 4] (absolute error 2^-26; a is clamped to 4, where erf
   rounds to 1). Max error 1.22 ulp. */
static inline float t_erff(float x) {
    float a = fabsf(x), x2 = x * x;
    float p = fmaf(fmaf(fmaf(fmaf(fmaf(-0x1.3c6124p-11f, x2, 0x1.47c716p-8f), x2, -0x1.b6a24ep-6f),
                               x2, 0x1.ce1bf0p-4f), x2, -0x1.8126eep-2f), x2, 0x1.06eba6p-3f);
    float small = fmaf(x, p, x);
    float c = 4.0f < a ? 4.0f : a;
    float c2 = c * c, c4 = c2 * c2;
    float s01 = fmaf(-0x1.21504cp+0f, c, 0x1.349104p-12f);
    float s23 = fmaf(-0x1.c240e4p-4f, c, 0x1.78d636p-2f);
    float s45 = fmaf(-0x1.3600ecp-8f, c, 0x1.af7b3ap-6f);
    float s67 = fmaf(-0x1.7c75f8p-15f, c, 0x1.35b460p-11f);
    float S = fmaf(fmaf(fmaf(0x1.ae2990p-20f, c2, s67), c2, s45), c4, fmaf(s23, c2, s01));
    float q = fmaf(-c, c, S);                               /* log erfc(c), in [-17, -1.5] */
    float j = fmaf(q, T_LOG2E, T_SHIFT + 127.0f);          /* low bits: k + 127 */
    float k = j - (T_SHIFT + 127.0f);
    float r = fmaf(k, -T_LN2_LO, fmaf(k, -T_LN2_HI, q));
    float s = t_u2f(t_f2u(j) << 23);                       /* 2^k */
    float erfc = fmaf(s, t_expm1_reduced(r), s);
    return a < 0.9f ? small : copysignf(1.0f - erfc, x);
}

/* sin and cos for finite |x| < 2^17: |x| = k pi + r with |r| <= pi/2 (Cody-Waite,
   three-part pi), sin r by an odd minimax polynomial of degree 9 (relative error
   2^-27), the sign from k's parity; the magnitude is clamped to 1 (the evaluation can
   round 1 ulp above it near r = pi/2). Max error: sin 1.76 ulp, cos 1.81 ulp. Other
   arguments (|x| >= 2^17, inf, NaN) are left to t_sinf_big / t_cosf_big below. */
#define T_PI_A 0x1.921fb6p+1f                /* pi = T_PI_A + T_PI_B + T_PI_C to 2^-72 */
#define T_PI_B -0x1.777a5cp-24f
#define T_PI_C -0x1.ee59dap-49f
#define T_SINCOS_BIG 0x1p17f
/* sin r for |r| <= pi/2, returned with bit 31 flipped when flip has it set */
static inline float t_sin_reduced(float r, uint32_t flip) {
    float r2 = r * r;
    float p = fmaf(fmaf(fmaf(0x1.5dc902p-19f, r2, -0x1.9f70f0p-13f), r2, 0x1.110edap-7f),
                   r2, -0x1.55554cp-3f);
    uint32_t s = t_f2u(fmaf(r * r2, p, r));
    uint32_t mag = s & 0x7fffffffu;
    mag = mag < 0x3f800000u ? mag : 0x3f800000u;                  /* min(|s|, 1.0f) */
    return t_u2f(mag | ((s ^ flip) & 0x80000000u));
}
/* sin |x| with k = round(|x| / pi); the sign flips for odd k and for x < 0. */
static inline float t_sinf_small(float x) {
    float a = fabsf(x);
    float j = fmaf(a, 0x1.45f306p-2f, T_SHIFT);           /* 1/pi */
    float k = j - T_SHIFT;
    float r = fmaf(k, -T_PI_C, fmaf(k, -T_PI_B, fmaf(k, -T_PI_A, a)));
    return t_sin_reduced(r, (t_f2u(j) << 31) ^ t_f2u(x));
}
/* cos |x| = -sin(r) for odd multiples (2k+1) pi/2, sign flipped for odd k. */
static inline float t_cosf_small(float x) {
    float a = fabsf(x);
    float j = fmaf(a, 0x1.45f306p-2f, -0.5f) + T_SHIFT;
    float k = j - T_SHIFT;
    float m = fmaf(k, 2.0f, 1.0f);
    float r = fmaf(m, -0.5f * T_PI_C, fmaf(m, -0.5f * T_PI_B, fmaf(m, -0.5f * T_PI_A, a)));
    return t_sin_reduced(r, (t_f2u(j) + 1u) << 31);
}

/* A loop over many arguments can instead call t_sinf_small, keep the largest
   t_sincos_key of its arguments (a max reduction, one instruction per vector) and,
   when T_SINCOS_HUGE(key), run again with t_sinf: this avoids the call per vector. */
static inline int32_t t_sincos_key(float x) { return (int32_t)t_f2u(fabsf(x)); }
#define T_SINCOS_HUGE(key) ((key) >= 0x48000000)    /* |x| >= 2^17, inf or NaN */

/* t_sinf_big(x, fast): fast where |x| < 2^17, else the library's double-precision
   value (likewise t_cosf_big). The vectorizer calls the SIMD variants
   defined below under their x86-64 vector function ABI names: they test all lanes at
   once and leave the lane-by-lane loop to a cold path, so the common case is a
   compare and a return. Compiled only into translation units that call t_sinf or
   t_cosf (the code generator defines T_SINCOS): they cost compile time. The symbols
   are weak: a large source built as several units defines them in each. */
#ifdef T_SINCOS
#define T_SINCOS_BIG_DECL(F)                                                                \
    float t_##F##f_big(float x, float fast)                                                 \
        __attribute__((simd("notinbranch"), const, nothrow, leaf));                         \
    __attribute__((used)) static float t_##F##f_big_scalar(float x, float fast) {           \
        if (fabsf(x) < T_SINCOS_BIG) return fast;                                           \
        return (float)F((double)x);                                                         \
    }                                                                                       \
    __asm__(".weak t_" #F "f_big\n\t.hidden t_" #F "f_big\n\t"                              \
            ".set t_" #F "f_big, t_" #F "f_big_scalar");
T_SINCOS_BIG_DECL(sin)
T_SINCOS_BIG_DECL(cos)
static inline float t_sinf(float x) { return t_sinf_big(x, t_sinf_small(x)); }
static inline float t_cosf(float x) { return t_cosf_big(x, t_cosf_small(x)); }

typedef float t_v4f __attribute__((vector_size(16)));
typedef float t_v8f __attribute__((vector_size(32)));
typedef float t_v16f __attribute__((vector_size(64)));
typedef int32_t t_v4i __attribute__((vector_size(16)));
typedef int32_t t_v8i __attribute__((vector_size(32)));
typedef int32_t t_v16i __attribute__((vector_size(64)));
#define T_SINCOS_BIG_VEC(NAME, SCALAR, N, ANY)                                               \
    __attribute__((noinline, cold)) static t_v##N##f NAME##_slow(t_v##N##f x, t_v##N##f fast) { \
        for (int i = 0; i < N; i++) fast[i] = SCALAR(x[i], fast[i]);                         \
        return fast;                                                                         \
    }                                                                                        \
    __attribute__((visibility("hidden"), weak)) t_v##N##f NAME(t_v##N##f x, t_v##N##f fast) {\
        t_v##N##i big = ((t_v##N##i)x & 0x7fffffff) >= 0x48000000; /* |x| >= 2^17, NaN */    \
        return __builtin_expect(ANY, 0) ? NAME##_slow(x, fast) : fast;                       \
    }
#define T_SINCOS_BIG_ISA(F)                                                                  \
    T_SINCOS_BIG_VEC(_ZGVbN4vv_t_##F##f_big, t_##F##f_big_scalar, 4,                          \
                     __builtin_ia32_movmskps((t_v4f)big) != 0)                               \
    T_SINCOS_BIG_AVX(_ZGVcN8vv_t_##F##f_big, t_##F##f_big_scalar)                             \
    T_SINCOS_BIG_AVX2(_ZGVdN8vv_t_##F##f_big, t_##F##f_big_scalar)                            \
    T_SINCOS_BIG_AVX512(_ZGVeN16vv_t_##F##f_big, t_##F##f_big_scalar)
#ifdef __AVX__
#define T_SINCOS_BIG_AVX(NAME, SCALAR) \
    T_SINCOS_BIG_VEC(NAME, SCALAR, 8, __builtin_ia32_movmskps256((t_v8f)big) != 0)
#else
#define T_SINCOS_BIG_AVX(NAME, SCALAR)
#endif
#ifdef __AVX2__
#define T_SINCOS_BIG_AVX2(NAME, SCALAR) T_SINCOS_BIG_AVX(NAME, SCALAR)
#else
#define T_SINCOS_BIG_AVX2(NAME, SCALAR)
#endif
#ifdef __AVX512F__
#define T_SINCOS_BIG_AVX512(NAME, SCALAR) \
    T_SINCOS_BIG_VEC(NAME, SCALAR, 16, __builtin_ia32_ptestmd512(big, big, 0xffff) != 0)
#else
#define T_SINCOS_BIG_AVX512(NAME, SCALAR)
#endif
T_SINCOS_BIG_ISA(sin)
T_SINCOS_BIG_ISA(cos)
#endif  /* T_SINCOS */

#else  /* no FMA, or another compiler/target: the C library (libmvec where declared) */
static inline float t_expf(float x) { return expf(x); }
static inline float t_erff(float x) { return erff(x); }
static inline float t_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float t_tanhf(float x) { return tanhf(x); }
static inline float t_sinf(float x) { return sinf(x); }
static inline float t_cosf(float x) { return cosf(x); }
static inline float t_sinf_small(float x) { return sinf(x); }
static inline float t_cosf_small(float x) { return cosf(x); }
static inline int32_t t_sincos_key(float x) { return 0; }
#define T_SINCOS_HUGE(key) 0
#endif

/* float16 / bfloat16 are stored as raw 16-bit words and computed in float. */
static inline float t_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) { bits = sign; }
        else { exp = 127 - 15 + 1; while (!(man & 0x400)) { man <<= 1; exp--; }
               man &= 0x3ff; bits = sign | (exp << 23) | (man << 13); }
    } else if (exp == 31) { bits = sign | 0x7f800000u | (man << 13); }
    else { bits = sign | ((exp + 127 - 15) << 23) | (man << 13); }
    float f; memcpy(&f, &bits, 4); return f;
}
static inline uint16_t t_f2h(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                /* overflow -> inf */
    if (ax < 0x38800000u) {                                                  /* subnormal */
        float af; memcpy(&af, &ax, 4);
        float scaled = af * 16777216.0f;  /* 2^24: units of the smallest subnormal */
        uint32_t m = (uint32_t)nearbyintf(scaled);
        return (uint16_t)(sign | m);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);                            /* round to even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}
static inline float t_b2f(uint16_t b) { uint32_t x = (uint32_t)b << 16; float f; memcpy(&f, &x, 4); return f; }
static inline uint16_t t_f2b(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* NaN-propagating max/min (work for integers too). */
#define T_MAX(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))
#define T_MIN(a, b) (((a) != (a) || (a) < (b)) ? (a) : (b))
/* The same results (but the NaN of b when both are NaN), in a form GCC still vectorizes
   when several are chained in one loop body (column reductions fold rows in groups). */
#define T_MAXC(a, b) (((b) != (b)) ? (b) : (!((a) <= (b)) ? (a) : (b)))
#define T_MINC(a, b) (((b) != (b)) ? (b) : (!((a) >= (b)) ? (a) : (b)))

/* Python-style integer floor division and remainder, and C's truncating remainder (fmod);
   division by zero gives 0 (the kernel flags it, the call raises). A divisor of -1 is
   taken apart: the smallest integer divided by -1 makes the CPU's divide instruction trap
   (SIGFPE). Eager wraps: min // -1 == min, min % -1 == fmod(min, -1) == 0. The negation
   goes through unsigned arithmetic, which wraps without undefined behaviour. A constant
   divisor folds the tests away; a variable one costs a compare next to a scalar divide. */
#define T_INEG(a) ((int64_t)(0 - (uint64_t)(a)))
#define T_IFLOORDIV(a, b) ((b) == 0 ? 0 : (b) == -1 ? T_INEG(a) : \
                           ((a) / (b) - ((((a) % (b)) != 0) && (((a) < 0) != ((b) < 0)))))
#define T_IREM(a, b) (((b) == 0 || (b) == -1) ? 0 : \
                      ((((a) % (b)) != 0 && ((((a) % (b)) < 0) != ((b) < 0))) ? ((a) % (b)) + (b) : ((a) % (b))))
#define T_IFMOD(a, b) (((b) == 0 || (b) == -1) ? 0 : (a) % (b))

static inline double t_floordiv(double a, double b) {
    if (b == 0) return a / b;
    double mod = fmod(a, b), div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0;
    if (div == 0) return copysign(0.0, a / b);
    double fl = floor(div);
    if (div - fl > 0.5) fl += 1.0;
    return fl;
}
static inline float t_floordivf(float a, float b) {
    if (b == 0) return a / b;
    float mod = fmodf(a, b), div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0f;
    if (div == 0) return copysignf(0.0f, a / b);
    float fl = floorf(div);
    if (div - fl > 0.5f) fl += 1.0f;
    return fl;
}
static inline double t_rem(double a, double b) {
    double m = fmod(a, b);
    if (m != 0 && ((b < 0) != (m < 0))) m += b;
    return m;
}
static inline float t_remf(float a, float b) {
    float m = fmodf(a, b);
    if (m != 0 && ((b < 0) != (m < 0))) m += b;
    return m;
}

/* Errors eager raises on set bits of the kernel's tb_bad, OR-reduced over threads and
 * lanes like any reduction; the caller raises after the kernel returns.
 * A data-dependent index outside [0, n): bit 1 where eager raises IndexError (index,
 * index_select, embedding), bit 4 where it raises RuntimeError (gather, scatter);
 * ir/expr.py INDEX_ERRORS maps the bits;
 * element 0 is read instead. An integer divisor of zero: bit 2 (ZeroDivisionError). */
#define TB_INDEX_ERROR 1
#define TB_ZERO_DIVISION 2
#define TB_CHECK_INDEX(i, n, bit) ((tb_bad |= ((uint64_t)(i) >= (uint64_t)(n)) * (bit)), \
                              ((uint64_t)(i) < (uint64_t)(n) ? (i) : (int64_t)0))
#define TB_CHECK_DIVISOR(b) (tb_bad |= ((b) == 0) * TB_ZERO_DIVISION)
