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

/* Python-style integer floor division and remainder; division by zero gives 0. */
#define T_IFLOORDIV(a, b) ((b) == 0 ? 0 : ((a) / (b) - ((((a) % (b)) != 0) && (((a) < 0) != ((b) < 0)))))
#define T_IREM(a, b) ((b) == 0 ? 0 : ((((a) % (b)) != 0 && ((((a) % (b)) < 0) != ((b) < 0))) ? ((a) % (b)) + (b) : ((a) % (b))))

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
 * A data-dependent index (gather, index, embedding) outside [0, n): bit 1 (IndexError);
 * element 0 is read instead. An integer divisor of zero: bit 2 (ZeroDivisionError). */
#define TB_INDEX_ERROR 1
#define TB_ZERO_DIVISION 2
#define TB_CHECK_INDEX(i, n) ((tb_bad |= ((uint64_t)(i) >= (uint64_t)(n)) * TB_INDEX_ERROR), \
                              ((uint64_t)(i) < (uint64_t)(n) ? (i) : (int64_t)0))
#define TB_CHECK_DIVISOR(b) (tb_bad |= ((b) == 0) * TB_ZERO_DIVISION)
