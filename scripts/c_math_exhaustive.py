"""Measure the float32 math routines of the C prelude on every float32 input.

    python scripts/c_math_exhaustive.py                 # exp sigmoid tanh erf sin cos, all 2^32 inputs
    python scripts/c_math_exhaustive.py sin --lo 0x3f800000 --hi 0x40000000

Compiles a small C program around codegen/c/prelude.h (the same compiler and flags as
the kernels) in which each routine runs in a vectorized loop, compares every result
with the C library's double-precision function rounded to float, and prints the
largest error in ulp (of the float32 result's binade) with the input where it occurs.
Non-finite results and zeros must match exactly, sign included. A full run takes a few
minutes per routine on two cores; the bounds it reports are the ones stated in the
prelude's comments and asserted by tests/test_c_math.py on a dense sample.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRELUDE = ROOT / "src" / "trebuchet" / "codegen" / "c" / "prelude.h"
sys.path.insert(0, str(ROOT / "src"))

from trebuchet.runtime.cbuild import BASE_FLAGS, LIBS  # noqa: E402

ROUTINES = {  # name: (routine under test, float64 reference)
    "exp": ("t_expf", "exp(x)"),
    "sigmoid": ("t_sigmoidf", "1.0 / (1.0 + exp(-x))"),
    "tanh": ("t_tanhf", "tanh(x)"),
    "erf": ("t_erff", "erf(x)"),
    "sin": ("t_sinf", "sin(x)"),
    "cos": ("t_cosf", "cos(x)"),
}

PROGRAM = r"""
#define T_SINCOS 1
#include "PRELUDE"
#include <stdio.h>
#include <stdlib.h>
#define BLOCK 65536
static double ref(double x) { return REF; }
static double ulp_error(float got, double want) {
    float want32 = (float)want;
    if (isnan(want32) || isnan(got)) return isnan(want32) && isnan(got) ? 0.0 : INFINITY;
    if (isinf(want32) || isinf(got) || want == 0 || got == 0)
        return got == want32 && !signbit(got) == !signbit(want32) ? 0.0 : INFINITY;
    int e;
    frexp(want, &e);
    return fabs((double)got - want) / ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 23);
}
int main(int argc, char **argv) {
    uint64_t lo = strtoull(argv[1], 0, 0), hi = strtoull(argv[2], 0, 0);
    double worst = 0; uint32_t worst_bits = 0; long over1 = 0;
    #pragma omp parallel reduction(+:over1)
    {
        float *xs = malloc(BLOCK * sizeof(float)), *ys = malloc(BLOCK * sizeof(float));
        double w = 0; uint32_t wb = 0;
        #pragma omp for schedule(dynamic)
        for (uint64_t start = lo; start < hi; start += BLOCK) {
            int n = hi - start < BLOCK ? (int)(hi - start) : BLOCK;
            for (int i = 0; i < n; i++) { uint32_t u = (uint32_t)(start + i); memcpy(&xs[i], &u, 4); }
            #pragma omp simd
            for (int i = 0; i < n; i++) ys[i] = FN(xs[i]);
            for (int i = 0; i < n; i++) {
                double err = ulp_error(ys[i], ref((double)xs[i]));
                if (err > 1.0) over1++;
                if (err > w) { w = err; memcpy(&wb, &xs[i], 4); }
            }
        }
        #pragma omp critical
        if (w > worst) { worst = w; worst_bits = wb; }
    }
    float x; memcpy(&x, &worst_bits, 4);
    printf("%.3f ulp at x = %a (%.9g): got %a, float64 %a; %ld inputs above 1 ulp\n",
           worst, x, x, FN(x), ref((double)x), over1);
    return 0;
}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routines", nargs="*", help=f"some of {', '.join(ROUTINES)} (default: all)")
    parser.add_argument("--lo", default="0", help="first input, as float32 bits (default 0)")
    parser.add_argument("--hi", default="0x100000000", help="end of the inputs, as bits")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = parser.parse_args()
    unknown = set(args.routines) - set(ROUTINES)
    if unknown:
        parser.error(f"unknown routine(s): {', '.join(sorted(unknown))}")
    flags = [f for f in BASE_FLAGS if f not in ("-shared", "-fPIC")]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.routines or ROUTINES:
            fn, ref = ROUTINES[name]
            src = pathlib.Path(tmp) / f"{name}.c"
            src.write_text(PROGRAM.replace("PRELUDE", str(PRELUDE)).replace("REF", ref)
                           .replace("FN(", f"{fn}("))
            exe = pathlib.Path(tmp) / name
            subprocess.run([*args.cc.split(), *flags, str(src), "-o", str(exe), *LIBS], check=True)
            out = subprocess.run([str(exe), args.lo, args.hi], check=True, capture_output=True,
                                 text=True).stdout.strip()
            print(f"{name:8s} {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
