"""Column (outer-dimension) reductions: the reduced axis is strided, the outputs contiguous.

The C kernel splits the work into tiles of adjacent outputs and, when there are few
tiles, chunks of rows whose partial results a second pass combines in chunk order
(codegen/c.py, `_column_kernel`). These tests compare with eager over shapes that
hit both paths (one row, odd sizes, few columns and many rows, many columns and few
rows, several reduced dims, chunk boundaries inside a reduced dim), every reduction
type the kernel takes, NaNs, integer and boolean dtypes, and check that the result
is the same bits on every call and with any number of threads.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any, Callable

import pytest
import torch

import trebuchet

SRC = pathlib.Path(trebuchet.__file__).resolve().parent.parent


def compile_column(fn: Callable, tmp_path: pathlib.Path, **options: Any) -> Callable:
    return trebuchet.compile(fn, target="c", strict=True, debug=True, debug_dir=tmp_path, **options)


def assert_column_kernel(tmp_path: pathlib.Path) -> None:
    """The compiled graph used the column kernel (so the test exercises it)."""
    sources = [p.read_text() for p in sorted(tmp_path.rglob("kernels.c"))]
    assert sources and any("column reduction" in s for s in sources), sources


def check(fn: Callable, x: torch.Tensor, tmp_path: pathlib.Path, exact: bool = False,
          tol: dict | None = None, **options: Any) -> torch.Tensor:
    compiled = compile_column(fn, tmp_path, **options)
    got, expected = compiled(x), fn(x)
    assert_column_kernel(tmp_path)
    if exact:
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got, expected) or torch.allclose(got, expected, rtol=0, atol=0,
                                                            equal_nan=True), (got, expected)
    else:
        torch.testing.assert_close(got, expected, equal_nan=True, **(tol or {}))
    return got


# Float sums accumulate in float64, more precisely than eager's float32 sums over
# many rows: compare with eager loosely, and with the float64 sum tightly.
LOOSE = {"rtol": 1e-5, "atol": 1e-4}


# (rows, columns): one row, few rows, sizes not a multiple of the tile (or of 16),
# few columns and many rows (row chunks), many columns and few rows (many tiles).
SHAPES_2D = [(1, 7), (1, 1500), (2, 3), (3, 5), (5, 1000), (129, 1031), (1000, 37),
             (100000, 3), (4099, 1100), (300, 2049), (2, 70000), (8192, 17)]


@pytest.mark.parametrize("shape", SHAPES_2D, ids=lambda s: "x".join(map(str, s)))
def test_sum_dim0_float32(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    got = check(lambda t: t.sum(dim=0), x, tmp_path, tol=LOOSE)
    # accumulated in float64 as before: close to the float64 sum rounded once
    torch.testing.assert_close(got, x.double().sum(0).float(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 9), (7, 130), (1000, 37), (100000, 3), (4099, 1100)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8, torch.uint8])
def test_integer_sum_is_exact(shape: tuple[int, int], dtype: torch.dtype,
                              tmp_path: pathlib.Path) -> None:
    """Integer sums are exact: a partial counted twice or lost shows."""
    torch.manual_seed(1)
    lo = 0 if dtype == torch.uint8 else -100
    x = torch.randint(lo, 100, shape, dtype=dtype)
    check(lambda t: t.sum(dim=0), x, tmp_path, exact=True)


@pytest.mark.parametrize("shape,dims", [
    ((8, 128, 768), (0, 1)),         # a bias gradient of a [batch, seq, hidden] activation
    ((4, 33, 50), (1,)),             # several outer points (one per batch)
    ((3, 3000, 17), (1,)),           # few columns per outer point, rows in chunks
    ((6, 7, 300, 5), (0, 2)),        # two reduced dims: chunks start inside a dim
    ((2, 3, 4, 5, 6), (0, 2, 3)),
    ((5, 1, 9), (0, 1)),
], ids=str)
def test_sum_over_outer_dims(shape: tuple[int, ...], dims: tuple[int, ...],
                             tmp_path: pathlib.Path) -> None:
    torch.manual_seed(2)
    x = torch.randn(shape)
    got = check(lambda t: t.sum(dim=dims), x, tmp_path, tol=LOOSE)
    torch.testing.assert_close(got, x.double().sum(dims).float(), rtol=1e-6, atol=1e-6)
    xi = torch.randint(-50, 50, shape, dtype=torch.int64)
    torch._dynamo.reset()
    check(lambda t: t.sum(dim=dims), xi, tmp_path / "int", exact=True)


def _with_specials(shape: tuple[int, int]) -> torch.Tensor:
    """randn with NaNs in a few columns at the first, a middle and the last row, and
    infinities elsewhere."""
    torch.manual_seed(3)
    x = torch.randn(shape)
    rows, cols = shape
    x[0, 0] = float("nan")
    x[rows // 2, cols // 2] = float("nan")
    x[rows - 1, cols - 1] = float("nan")
    x[rows // 3, (cols // 3) % cols] = float("inf")
    x[(2 * rows) // 3, (2 * cols) // 3 % cols] = float("-inf")
    if cols > 4:
        x[:, 1] = float("-inf")     # a column of -inf only
        x[:, 2] = float("inf")
    return x


@pytest.mark.parametrize("shape", [(1, 7), (5, 1000), (300, 2049), (4099, 1100), (100000, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["amax", "amin"])
def test_max_min_propagate_nan(shape: tuple[int, int], kind: str, tmp_path: pathlib.Path) -> None:
    fns = {"amax": lambda t: t.amax(dim=0), "amin": lambda t: t.amin(dim=0)}
    x = _with_specials(shape)
    got = check(fns[kind], x, tmp_path, exact=True)
    assert torch.isnan(got).sum() == torch.isnan(x).any(0).sum()


@pytest.mark.parametrize("shape", [(1, 7), (5, 1000), (300, 2049), (4099, 1100), (100000, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["max", "min", "argmax", "argmin"])
def test_arg_max_min_first_position_nan_wins(shape: tuple[int, int], kind: str,
                                             tmp_path: pathlib.Path) -> None:
    """Indices of the first extreme (ties: the first row), the first NaN before all."""
    fns = {"max": lambda t: tuple(t.max(dim=0)), "min": lambda t: tuple(t.min(dim=0)),
           "argmax": lambda t: t.argmax(dim=0), "argmin": lambda t: t.argmin(dim=0)}
    x = _with_specials(shape)
    x[shape[0] // 2:, shape[1] // 2] = float("nan")   # the first NaN of the column wins
    compiled = compile_column(fns[kind], tmp_path)
    got, expected = compiled(x), fns[kind](x)
    assert_column_kernel(tmp_path)
    for g, e in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)
    # integers with many ties
    torch._dynamo.reset()
    xi = torch.randint(0, 3, shape, dtype=torch.int32)
    compiled = compile_column(fns[kind], tmp_path / "int")
    got, expected = compiled(xi), fns[kind](xi)
    for g, e in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        assert torch.equal(g, e)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int16, torch.uint8])
def test_integer_max_min(dtype: torch.dtype, tmp_path: pathlib.Path) -> None:
    torch.manual_seed(4)
    info = torch.iinfo(dtype)
    x = torch.randint(max(info.min, -(2 ** 40)), min(info.max, 2 ** 40), (3000, 333), dtype=dtype)
    x[5, :] = info.min
    x[2999, :10] = info.max
    check(lambda t: t.amax(dim=0), x, tmp_path / "max", exact=True)
    torch._dynamo.reset()
    check(lambda t: t.amin(dim=0), x, tmp_path / "min", exact=True)
    torch._dynamo.reset()
    check(lambda t: t.argmin(dim=0), x, tmp_path / "argmin", exact=True)


@pytest.mark.parametrize("shape", [(3, 40), (5000, 300), (100000, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_any_all(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    torch.manual_seed(5)
    x = torch.rand(shape) < 0.9995          # mostly True; some columns all True
    x[:, 0] = False
    x[:, -1] = True
    x[shape[0] - 1, shape[1] // 2] = False   # the only False of its column, in the last chunk
    # amax/amin of booleans lower to any/all
    check(lambda t: t.amax(dim=0), x, tmp_path / "any", exact=True)
    torch._dynamo.reset()
    check(lambda t: t.amin(dim=0), x, tmp_path / "all", exact=True)


@pytest.mark.parametrize("shape", [(2, 9), (3000, 100), (100000, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_prod(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    torch.manual_seed(6)
    x = 1 + torch.randn(shape, dtype=torch.float64) * 1e-3
    x[shape[0] // 2, 0] = 0.0
    check(lambda t: t.prod(dim=0), x, tmp_path)
    xi = torch.where(torch.rand(shape) < 0.001, -1, 1).to(torch.int64)
    torch._dynamo.reset()
    check(lambda t: t.prod(dim=0), xi, tmp_path / "int", exact=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes(dtype: torch.dtype, tmp_path: pathlib.Path) -> None:
    torch.manual_seed(7)
    x = torch.randn(4099, 300).to(dtype)
    got = check(lambda t: t.sum(dim=0), x, tmp_path / "sum")
    assert got.dtype == dtype
    torch._dynamo.reset()
    check(lambda t: t.amax(dim=0), x, tmp_path / "amax", exact=True)


@pytest.mark.parametrize("shape", [(6, 50), (4099, 300)], ids=lambda s: "x".join(map(str, s)))
def test_fused_prologue_epilogue_and_keepdim(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    torch.manual_seed(8)
    x, b = torch.randn(shape), torch.randn(shape[1])

    def fn(t):
        return (torch.tanh(t + b) * 2).mean(dim=0, keepdim=True) - b

    check(fn, x, tmp_path)


def test_sum_and_max_share_one_kernel(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(9)
    x = _with_specials((4099, 300))

    def fn(t):
        return t.sum(dim=0), t.amax(dim=0), t.amin(dim=0)

    compiled = compile_column(fn, tmp_path)
    for got, expected in zip(compiled(x), fn(x)):
        torch.testing.assert_close(got, expected, equal_nan=True, **LOOSE)
    assert_column_kernel(tmp_path)
    assert trebuchet.stats()["kernels"] == 1


def test_dynamic_shapes(tmp_path: pathlib.Path) -> None:
    """Sizes are symbols: the split is chosen in C at run time."""
    compiled = compile_column(lambda t: t.sum(dim=0), tmp_path, dynamic=True)
    for shape in [(5, 40), (4099, 33), (100000, 3), (70, 3000), (1, 1)]:
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), x.sum(0), **LOOSE)
        xi = torch.randint(-9, 9, shape)
        assert torch.equal(compiled(xi), xi.sum(0))
    assert_column_kernel(tmp_path)


@pytest.mark.parametrize("shape", [(8192, 1024), (100000, 3), (1024, 768)],
                         ids=lambda s: "x".join(map(str, s)))
def test_deterministic_bits(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    torch.manual_seed(10)
    x = torch.randn(shape) * 1e3 + 1e-3
    compiled = compile_column(lambda t: t.sum(dim=0), tmp_path)
    first = compiled(x)
    for _ in range(5):
        assert torch.equal(compiled(x), first)
    assert_column_kernel(tmp_path)


_THREADS_SCRIPT = """
import sys, torch, trebuchet
torch.manual_seed(11)
x = torch.randn(4099, 1100) * 1e3
y = trebuchet.compile(lambda t: t.sum(dim=0), target="c", strict=True)(x)
sys.stdout.write(y.numpy().tobytes().hex())
"""


def test_same_bits_with_any_thread_count() -> None:
    """The split depends only on the sizes, not on the number of threads."""
    out = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(proc.stdout)
    assert out[0] and out[0] == out[1] == out[2]
