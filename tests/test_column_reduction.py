"""Column (outer-dimension) reductions: the reduced axis is strided, the outputs contiguous.

The C kernel splits the work into tiles of adjacent outputs and, when there are few
tiles, chunks of rows whose partial results a second pass combines in chunk order
(codegen/c/kernels.py, `_column_kernel`). These tests compare with eager over shapes that
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
    assert sources and any(COLUMN_KERNEL in s for s in sources), sources


# The comment heading a column kernel (the C prelude mentions column reductions too).
COLUMN_KERNEL = "// column reduction: work items"


# Float sums accumulate in float64, more precisely than eager's float32 sums over
# many rows: compare with eager loosely, and with the float64 sum tightly.
LOOSE = {"rtol": 1e-5, "atol": 1e-4}


# (rows, columns): one row, few rows, sizes not a multiple of the tile (or of 16),
# few columns and many rows (row chunks), many columns and few rows (many tiles).
SHAPES_2D = [(1, 7), (1, 1500), (2, 3), (3, 5), (5, 1000), (129, 1031), (1000, 37),
             (100000, 3), (4099, 1100), (300, 2049), (2, 70000), (8192, 17)]
# Fewer, for the reductions that are checked with more dtypes or functions.
SOME_2D = [(1, 7), (5, 1000), (300, 2049), (4099, 1100), (100000, 3)]


def compare(got: Any, expected: Any, exact: bool, tol: dict | None = None) -> None:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape, (g, e)
        if exact:
            torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)
        else:
            torch.testing.assert_close(g, e, equal_nan=True, **(tol or {}))


def check_shapes(fn: Callable, make: Callable[[tuple[int, ...]], torch.Tensor],
                 shapes: list[tuple[int, ...]], tmp_path: pathlib.Path, exact: bool = False,
                 tol: dict | None = None, dynamic: bool = True) -> Callable:
    """Compile fn once (sizes symbolic: the split is chosen at run time) and compare
    with eager on every shape."""
    compiled = compile_column(fn, tmp_path, dynamic=dynamic)
    for shape in shapes:
        x = make(shape)
        compare(compiled(x), fn(x), exact, tol)
    assert_column_kernel(tmp_path)
    return compiled


def randn(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    torch.manual_seed(sum(shape))
    return torch.randn(shape).to(dtype)


def test_sum_dim0_float32_shapes(tmp_path: pathlib.Path) -> None:
    compiled = check_shapes(lambda t: t.sum(dim=0), randn, SHAPES_2D, tmp_path, tol=LOOSE)
    for shape in SHAPES_2D:
        # accumulated in float64 as before: close to the float64 sum rounded once
        x = randn(shape)
        torch.testing.assert_close(compiled(x), x.double().sum(0).float(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5), (4099, 1100), (100000, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_sum_dim0_static_shape(shape: tuple[int, int], tmp_path: pathlib.Path) -> None:
    check_shapes(lambda t: t.sum(dim=0), randn, [shape], tmp_path, tol=LOOSE, dynamic=False)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8, torch.uint8])
def test_integer_sum_is_exact(dtype: torch.dtype, tmp_path: pathlib.Path) -> None:
    """Integer sums are exact: a partial counted twice or lost shows."""
    def make(shape):
        torch.manual_seed(sum(shape))
        return torch.randint(0 if dtype == torch.uint8 else -100, 100, shape, dtype=dtype)

    check_shapes(lambda t: t.sum(dim=0), make, SHAPES_2D, tmp_path, exact=True)


@pytest.mark.parametrize("shape,dims", [
    ((8, 128, 768), (0, 1)),         # a bias gradient of a [batch, seq, hidden] activation
    ((4, 33, 50), (1,)),             # several outer points (one per batch)
    ((3, 3000, 17), (1,)),           # few columns per outer point, rows in chunks
    ((6, 7, 300, 5), (0, 2)),        # two reduced dims: chunks start inside a dim
    ((2, 3, 40, 5, 6), (0, 2, 3)),
    ((5, 1, 9), (0, 1)),
], ids=str)
def test_sum_over_outer_dims(shape: tuple[int, ...], dims: tuple[int, ...],
                             tmp_path: pathlib.Path) -> None:
    def fn(t):
        return t.sum(dim=dims), t.to(torch.int64).sum(dim=dims)

    def make(shape):
        return torch.randint(-50, 50, shape).float() + randn(shape) * 1e-3

    x = make(shape)
    # values up to 50: eager's float32 sums are off by more than LOOSE's atol
    compiled = check_shapes(fn, make, [shape], tmp_path, tol={"rtol": 1e-5, "atol": 1e-3},
                            dynamic=False)
    got, got_int = compiled(x)
    torch.testing.assert_close(got, x.double().sum(dims).float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(got_int, x.to(torch.int64).sum(dims))


def _with_specials(shape: tuple[int, ...]) -> torch.Tensor:
    """randn with NaNs in a few columns at the first, a middle and the last row, NaNs
    in the second half of a column (the first of them counts), and infinities."""
    x = randn(shape)
    rows, cols = shape
    x[0, 0] = float("nan")
    x[rows // 2, cols // 2] = float("nan")
    x[rows - 1, cols - 1] = float("nan")
    x[(rows + 1) // 2:, cols // 3] = float("nan")
    x[rows // 3, (2 * cols) // 3] = float("inf")
    x[(2 * rows) // 3, (2 * cols) // 3] = float("-inf")
    if cols > 4:
        x[:, 1] = float("-inf")     # a column of -inf only
        x[:, 2] = float("inf")
    return x


@pytest.mark.parametrize("kind", ["amax", "amin", "max", "min", "argmax", "argmin"])
def test_max_min_and_indices_with_nan(kind: str, tmp_path: pathlib.Path) -> None:
    """NaN propagates; indices are of the first extreme (the first NaN wins)."""
    fn = {"amax": lambda t: t.amax(dim=0), "amin": lambda t: t.amin(dim=0),
          "max": lambda t: tuple(t.max(dim=0)), "min": lambda t: tuple(t.min(dim=0)),
          "argmax": lambda t: t.argmax(dim=0), "argmin": lambda t: t.argmin(dim=0)}[kind]
    check_shapes(fn, _with_specials, SOME_2D, tmp_path, exact=True)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int16, torch.uint8])
def test_integer_max_min_and_ties(dtype: torch.dtype, tmp_path: pathlib.Path) -> None:
    info = torch.iinfo(dtype)

    def make(shape):
        torch.manual_seed(sum(shape))
        rows, cols = shape
        x = torch.randint(0, 3, shape, dtype=dtype)      # many ties, in every chunk
        x[rows // 2, :] = info.min                      # ties of the extremes, far apart
        x[rows - 1, :] = info.min
        x[rows // 4, : cols // 2] = info.max
        x[rows - 1, : cols // 2] = info.max
        return x

    def fn(t):
        return t.amax(dim=0), t.amin(dim=0), t.argmax(dim=0), t.argmin(dim=0)

    check_shapes(fn, make, SOME_2D, tmp_path, exact=True)


def test_any_all(tmp_path: pathlib.Path) -> None:
    def make(shape):
        torch.manual_seed(sum(shape))
        x = torch.rand(shape) < 0.9995          # mostly True; some columns all True
        x[:, 0] = False
        x[:, -1] = True
        x[shape[0] - 1, shape[1] // 2] = False   # the only False of its column, in the last chunk
        return x

    # amax/amin of booleans lower to any/all
    check_shapes(lambda t: (t.amax(dim=0), t.amin(dim=0)), make, SOME_2D + [(3, 40), (5000, 300)],
                 tmp_path, exact=True)


def test_prod(tmp_path: pathlib.Path) -> None:
    def make(shape):
        x = 1 + randn(shape, torch.float64) * 1e-3
        x[shape[0] // 2, 0] = 0.0
        return x

    def fn(t):
        return t.prod(dim=0), torch.where(t > 1.002, -1, 1).prod(dim=0)

    check_shapes(fn, make, [(2, 9), (3000, 100), (100000, 3)], tmp_path)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes(dtype: torch.dtype, tmp_path: pathlib.Path) -> None:
    check_shapes(lambda t: (t.sum(dim=0), t.amax(dim=0)), lambda s: randn(s, dtype),
                 [(7, 33), (4099, 300)], tmp_path)


def test_fused_prologue_epilogue_and_keepdim(tmp_path: pathlib.Path) -> None:
    b = randn((300,))

    def fn(t):
        return (torch.tanh(t + b) * 2).mean(dim=0, keepdim=True) - b

    check_shapes(fn, randn, [(6, 300), (4099, 300)], tmp_path, dynamic=False)


def test_large_body_folds_fewer_rows_per_pass(tmp_path: pathlib.Path) -> None:
    """A body of more than COLUMN_LARGE_BODY nodes folds COLUMN_UNROLL_LARGE rows per pass
    (row counts that leave a remainder, chunked or not); small ones (the other tests)
    COLUMN_UNROLL."""
    from trebuchet.codegen.c.kernels import KernelWriter
    b, c = randn((300,)), randn((300,)) + 2

    def fn(t):
        y = torch.sigmoid(t * c + b) * torch.tanh(t - b) / (t.abs() + c.abs()) + torch.exp(-t * t)
        return (y * (t - b)).sum(dim=0), t.sum(dim=0)

    check_shapes(fn, randn, [(7, 300), (4099, 300), (1, 300)], tmp_path, tol=LOOSE, dynamic=False)
    sources = "\n".join(p.read_text() for p in tmp_path.rglob("kernels.c"))
    assert f"rr += {KernelWriter.COLUMN_UNROLL_LARGE})" in sources
    assert f"rr += {KernelWriter.COLUMN_UNROLL})" not in sources


def test_sum_and_max_share_one_kernel(tmp_path: pathlib.Path) -> None:
    x = _with_specials((4099, 300))

    def fn(t):
        return t.sum(dim=0), t.amax(dim=0), t.amin(dim=0)

    compiled = compile_column(fn, tmp_path)
    compare(compiled(x), fn(x), exact=False, tol=LOOSE)
    assert_column_kernel(tmp_path)
    assert trebuchet.stats()["kernels"] == 1


def test_deterministic_bits(tmp_path: pathlib.Path) -> None:
    compiled = compile_column(lambda t: t.sum(dim=0), tmp_path, dynamic=True)
    for shape in [(8192, 1024), (100000, 3), (1024, 768)]:
        x = randn(shape) * 1e3 + 1e-3
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
    for threads in ("1", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(proc.stdout)
    torch.manual_seed(11)
    x = torch.randn(4099, 1100) * 1e3
    here = trebuchet.compile(lambda t: t.sum(dim=0), target="c", strict=True)(x)
    assert out[0] and out[0] == out[1] == here.numpy().tobytes().hex()


def test_per_row_scale_keeps_the_column_kernel(tmp_path: pathlib.Path) -> None:
    """A value that varies only along the reduced rows (a softmax denominator of a
    cross-entropy gradient) does not make the rows contiguous: still a column kernel."""
    def fn(x, s):
        return (torch.exp(x) * s[:, None]).sum(0)

    x, s = torch.randn(300, 2049), torch.randn(300)
    out = compile_column(fn, tmp_path)(x, s)
    torch.testing.assert_close(out, fn(x, s), **LOOSE)
    assert_column_kernel(tmp_path)


def test_stored_gradient_and_its_column_sum(tmp_path: pathlib.Path) -> None:
    """A linear layer's backward: the output gradient feeds a matmul (so it is stored)
    and the bias gradient, a column sum, which reads the stored gradient instead of
    recomputing it, in a column kernel (not a row kernel striding down the columns)."""
    def fn(logits, s, x):
        grad = torch.exp(logits) * s[:, None] - 1
        return grad.t() @ x, grad.sum(0)

    logits, s, x = torch.randn(512, 1000), torch.rand(512), torch.randn(512, 64)
    trebuchet.reset()
    out = compile_column(fn, tmp_path)(logits, s, x)
    for got, want in zip(out, fn(logits, s, x)):
        torch.testing.assert_close(got, want, **LOOSE)
    assert_column_kernel(tmp_path)
    (source,) = [p.read_text() for p in tmp_path.rglob("kernels.c")]
    column = source[source.index(COLUMN_KERNEL):]
    assert "t_expf" not in column.split("\n}\n")[0]       # the sum loads the gradient
    assert trebuchet.stats()["kernels"] == 2


# (rows, columns), whether the rows are split in chunks (more than 32768 elements and
# at least two chunks of COLUMN_CHUNK_ROWS rows), whether a remainder of rows is left
# over the groups of COLUMN_UNROLL (8) rows each pass folds.
KNOWN_SPLITS = [((100000, 3), True, False), ((100003, 3), True, True), ((64, 5), False, False),
                ((4099, 3), False, True)]


@pytest.mark.parametrize("shape,chunks,remainder", KNOWN_SPLITS)
def test_known_sizes_write_only_the_split_they_take(shape: tuple[int, int], chunks: bool,
                                                     remainder: bool, tmp_path: pathlib.Path) -> None:
    """With every size known, the kernel holds only the code of its split: one chunk
    without partial results, or chunks whose partial results are on the stack (no
    allocation), and no remainder loop when the row count is a multiple of the rows
    folded per pass (the chunks start at multiples of it)."""
    check_shapes(lambda t: t.sum(dim=0), randn, [shape], tmp_path, tol=LOOSE, dynamic=False)
    (kernel,) = [s[s.index(COLUMN_KERNEL):] for s in
                 (p.read_text() for p in tmp_path.rglob("kernels.c")) if COLUMN_KERNEL in s]
    assert "malloc(" not in kernel and "if (n_chunk == 1)" not in kernel
    assert ("part_" in kernel) == chunks
    assert ("for (; rr < r_e; ++rr)" in kernel) == remainder


def test_symbolic_sizes_keep_every_split(tmp_path: pathlib.Path) -> None:
    """Sizes known only at run time: both epilogues, the allocation and its fallback."""
    check_shapes(lambda t: t.sum(dim=0), randn, [(4096, 3), (64, 5)], tmp_path, tol=LOOSE)
    sources = "\n".join(p.read_text() for p in tmp_path.rglob("kernels.c"))
    assert "malloc(" in sources and "if (n_chunk == 1)" in sources


@pytest.mark.parametrize("rows,specialized", [((100000, 200000), True), ((100000, 64), False)])
def test_known_splits_only_where_kernels_keep_sharing(rows: tuple[int, int], specialized: bool,
                                                      tmp_path: pathlib.Path) -> None:
    """Two column sums that differ only in their sizes share one body (their sizes passed
    as constants). Written for their own splits, sums that both split in chunks still
    share; a chunked sum and a one-chunk sum would not, so both keep the code of every
    split (the allocation, both epilogues) and share."""
    def fn(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a.sum(dim=0), b.sum(dim=0)

    a, b = randn((rows[0], 3)), randn((rows[1], 3))
    compiled = compile_column(fn, tmp_path, dynamic=False)
    compare(compiled(a, b), fn(a, b), False, LOOSE)
    (source,) = [p.read_text() for p in tmp_path.rglob("kernels.c")]
    assert "differ only in" in source                     # one body for both sums
    assert ("malloc(" not in source) == specialized
