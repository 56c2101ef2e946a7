"""Accuracy of the C target's float32 exp, sigmoid, tanh, erf, sin and cos.

The C prelude implements these inline (range reduction and polynomials that the
vectorizer turns into SIMD code, see codegen/c/prelude.h). Each test compiles the
function through Trebuchet, runs it on a dense sweep of float32 inputs (every binade of
the range that matters: evenly spaced bit patterns and random ones) plus the special
values (NaN, +-inf, +-0.0, subnormals, the largest float), and compares with torch in
float64. Non-finite results and zeros must match exactly, sign included. The bounds
asserted are the ones documented in the prelude: the largest error over all 2^32
inputs, measured with scripts/c_math_exhaustive.py, rounded up.
"""

from __future__ import annotations

import math
import pathlib
from typing import Callable

import pytest
import torch

import trebuchet

F32_MAX = torch.finfo(torch.float32).max
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, -1e-45, 1e-40, -1e-40, 1.2e-38,
           -1.2e-38, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, F32_MAX, -F32_MAX]


def bits_of(x: float) -> int:
    return int(torch.tensor([x], dtype=torch.float32).view(torch.int32)[0])


def sweep(hi: float, n: int, seed: int = 0) -> torch.Tensor:
    """float32 values in [-hi, hi]: n evenly spaced bit patterns of [0, hi] (so every
    binade from the subnormals up gets its share), as many random ones, both signs."""
    top = bits_of(hi)
    even = torch.linspace(0, top, n, dtype=torch.float64).round().to(torch.int32)
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randint(0, top + 1, (n,), generator=gen, dtype=torch.int32)
    pos = torch.cat([even, rand]).view(torch.float32)
    return torch.cat([pos, -pos, torch.tensor(SPECIAL, dtype=torch.float32)])


def ulp_error(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|got - ref| in units of the float32 ulp at ref (ref in float64). Results that are
    not finite, and zeros, must match exactly (sign included): otherwise the error is inf."""
    ref32 = ref.float()
    _, e = torch.frexp(ref)                          # |ref| = m 2^e, 0.5 <= m < 1
    e = torch.where(ref == 0, torch.full_like(e, -1000), e)
    ulp = torch.ldexp(torch.ones_like(ref), (e - 1).clamp(min=-126) - 23)
    err = (got.double() - ref).abs() / ulp
    exact = ~torch.isfinite(ref32) | ~torch.isfinite(got) | (ref == 0) | (got == 0)
    same = ((got == ref32) & (torch.signbit(got) == torch.signbit(ref32))) | (
        got.isnan() & ref32.isnan())
    return torch.where(exact, torch.where(same, 0.0, math.inf), err)


def compiled(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    trebuchet.reset()
    return trebuchet.compile(fn, target="c", strict=True)


# name: (function, max ulp error, range swept)
CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float, float]] = {
    "exp": (torch.exp, 1.05, 110.0),
    "sigmoid": (torch.sigmoid, 2.5, 120.0),
    "tanh": (torch.tanh, 2.5, 50.0),
    "erf": (torch.erf, 1.25, 10.0),
    "sin": (torch.sin, 1.8, 2.0 ** 17),      # Cody-Waite range; beyond: the next test
    "cos": (torch.cos, 1.85, 2.0 ** 17),
}


@pytest.mark.parametrize("name", CASES)
def test_max_ulp_error(name: str) -> None:
    fn, bound, hi = CASES[name]
    x = sweep(hi, 600_000)
    got = compiled(fn)(x)
    err = ulp_error(got, fn(x.double()))
    worst = int(err.argmax())
    assert err[worst] <= bound, (
        f"{name}({x[worst].item()!r}) = {got[worst].item()!r}, float64 reference "
        f"{fn(x[worst:worst + 1].double()).item()!r}: {err[worst].item():.3f} ulp > {bound}")


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_huge_arguments(name: str) -> None:
    """|x| >= 2^17 goes through the double-precision path: within 1 ulp up to FLT_MAX."""
    fn = CASES[name][0]
    lo, top = bits_of(2.0 ** 17), bits_of(F32_MAX)
    gen = torch.Generator().manual_seed(1)
    pos = torch.cat([torch.randint(lo, top + 1, (200_000,), generator=gen, dtype=torch.int32),
                     torch.tensor([lo, lo + 1, lo - 1, top], dtype=torch.int32)])
    x = torch.cat([pos.view(torch.float32), -pos.view(torch.float32)])
    # huge lanes mixed with ordinary ones in the same vectors
    x = torch.stack([x, torch.linspace(-10, 10, x.numel())], 1).flatten()
    err = ulp_error(compiled(fn)(x), fn(x.double()))
    huge = x.abs() >= 2.0 ** 17
    assert err[huge].max() <= 1.0, x[huge][int(err[huge].argmax())].item()
    assert err[~huge].max() <= CASES[name][1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_use_float_math(dtype: torch.dtype) -> None:
    names = list(CASES)
    x = sweep(20.0, 20_000).to(dtype)
    got = compiled(lambda x: [CASES[name][0](x) for name in names])(x)
    for name, value in zip(names, got):
        want = CASES[name][0](x.float()).to(dtype)
        # float32 results within a few float32 ulp round to the same half value, or
        # to a neighbour when the exact value is near a rounding boundary
        torch.testing.assert_close(value, want, equal_nan=True, rtol=2 ** -7, atol=1e-45)


def test_chain_of_calls_runs_in_stages(tmp_path: pathlib.Path) -> None:
    """Several transcendental calls in one pointwise kernel: each gets its own loop over
    a block of elements (a stored stage), with eager's results."""
    def fn(x):
        y = x * 1.5 + 0.5
        y = torch.tanh(torch.sin(y) * y) - 0.25
        return torch.sigmoid(torch.relu(y) + x) * 2.0

    # the last: a 50 x 7 slice of a wider tensor, whose rows do not merge into one loop
    for i, x in enumerate([sweep(30.0, 50_000), torch.randn(3, 1000), torch.randn(50, 9)[:, :7]]):
        trebuchet.reset()
        folder = tmp_path / str(i)
        got = trebuchet.compile(fn, target="c", strict=True, debug=True, debug_dir=str(folder))(x)
        torch.testing.assert_close(got, fn(x), equal_nan=True, rtol=1e-5, atol=1e-6)
        code = "\n".join(p.read_text() for p in folder.rglob("kernels.c"))
        assert "t_sinf_small(" in code and "t_tanhf(" in code and "t_sigmoidf(" in code
        # an innermost dimension of 7 is too short for blocks: one loop
        assert ("stage1[" in code) == (x.shape[-1] > 7)


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_staged_sin_cos_redo_huge_arguments(name: str, tmp_path: pathlib.Path) -> None:
    """A staged sin/cos runs the Cody-Waite path over a block and redoes the block with
    the full routine when an argument is huge or not finite."""
    fn = CASES[name][0]
    x = sweep(1e30, 20_000)[torch.randperm(80_021, generator=torch.Generator().manual_seed(2))]
    trebuchet.reset()
    compiled = trebuchet.compile(lambda x: (fn(x), torch.exp(x)), target="c", strict=True,
                                 debug=True, debug_dir=str(tmp_path))
    err = ulp_error(compiled(x)[0], fn(x.double()))
    code = "\n".join(p.read_text() for p in tmp_path.rglob("kernels.c"))
    assert f"stage0[x0 - x0_b] = t_{name}f_small(" in code
    assert err.max() <= CASES[name][1], x[int(err.argmax())].item()
