"""Column (outer-dimension) reductions: eager vs the default backend vs Trebuchet.

    python benchmarks/column_reduce.py                    # every case, median of 41
    python benchmarks/column_reduce.py --cases bias_grad_768 --repeats 101

Bias-gradient shapes (a sum over the leading dims, the reduced axis strided) and a few
others. All backends run in one process with the interleaved timer of `common.py`;
each time is a median, and the ratios are their time / Trebuchet's (> 1: Trebuchet
faster). The machine is noisy: compare ratios, and repeat the run.
"""

from __future__ import annotations

import sys

import torch

from common import case_options, format_text, run_case

CASES = {
    "column_sum": (lambda x: x.sum(dim=0), (8192, 1024), torch.float32),
    "bias_grad_768": (lambda x: x.sum(dim=0), (1024, 768), torch.float32),
    "bias_grad_3072": (lambda x: x.sum(dim=0), (8 * 128, 3072), torch.float32),
    "bias_grad_3d": (lambda x: x.sum(dim=(0, 1)), (8, 128, 768), torch.float32),
    "narrow_sum": (lambda x: x.sum(dim=0), (100000, 3), torch.float32),
    "column_amax": (lambda x: x.amax(dim=0), (8192, 1024), torch.float32),
    "column_argmax": (lambda x: x.argmax(dim=0), (8192, 1024), torch.float32),
    "column_sum_int": (lambda x: x.sum(dim=0), (8192, 1024), torch.int32),
}


def make_input(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    return torch.randint(-1000, 1000, shape, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    args, backends, names = case_options(argv, __doc__.splitlines()[0], CASES, 41)
    header = ["case", "shape"] + [f"{b} ms" for b in backends] + ["vs eager", "vs inductor",
                                                                  "correct"]
    rows, bad = [header], False
    for name in names:
        fn, shape, dtype = CASES[name]
        torch._dynamo.reset()
        torch.manual_seed(0)
        cells, good = run_case(fn, [make_input(shape, dtype)], backends, args.repeats, 3,
                               rtol=1e-4, atol=1e-4)
        bad |= not good
        rows.append([name, "x".join(map(str, shape)) + f" {str(dtype)[6:]}"] + cells)
        print("  " + "  ".join(rows[-1]), flush=True)
    print()
    print(format_text(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
