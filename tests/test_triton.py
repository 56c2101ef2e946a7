"""The Triton target (pointwise kernels) under Triton's interpreter, on CPU tensors.

TRITON_INTERPRET=1 is set here, before triton is imported by this module; Triton reads
it each time a function is decorated with `@triton.jit` (knobs.runtime.interpret), which
happens when the launcher imports a generated module, so the order in which test modules
import triton does not matter.

  * every IR primitive the target generates, in one hand-built graph run through the
    real pipeline, against the reference target (tests/test_ir.py's cases); the
    primitives it does not generate yet fail to compile with a clear error;
  * fused pointwise graphs compiled with target="triton", strict=True, against eager;
  * reductions (rows persistent and looped, columns, scalars; every reduction type, NaN,
    ties, float16/bfloat16, integers, sizes known at run time), normalizations forward and
    backward as one kernel each, and tiny BERT/GPT-2 models against eager;
  * a missing interpreter fails to compile (strict raises, else eager).
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_ir import CASES, F32, _build_graph, _compile_ir, _gen  # noqa: E402

import trebuchet  # noqa: E402
from trebuchet.codegen.target import get_target  # noqa: E402
from trebuchet.codegen.triton import TritonTarget  # noqa: E402
from trebuchet.ir.expr import OPS  # noqa: E402
from trebuchet.ir.nodes import GraphIR  # noqa: E402

GENERATED = sorted(OPS)      # the target generates every primitive


def _graph(names: list[str], keep=lambda name, case: True
           ) -> tuple[GraphIR, list[torch.Tensor], list[tuple[str, int]]]:
    """One Pointwise output per case of each primitive in `names` that `keep` accepts."""
    return _build_graph(names, keep)


@pytest.fixture(scope="module")
def triton_results() -> dict:
    graph, args, labels = _graph(GENERATED)
    out = _compile_ir(graph, "triton")(list(args))
    ref = _compile_ir(graph, "reference")(list(args))
    assert len(out) == len(ref) == len(labels)
    return {label: (o, r) for label, o, r in zip(labels, out, ref)}


@pytest.mark.parametrize("name", GENERATED)
def test_primitive_matches_reference(name: str, triton_results: dict) -> None:
    for k, case in enumerate(CASES[name]):
        val, ref = triton_results[(name, k)]
        assert val.dtype == ref.dtype == case.dtype, (name, k)
        if name == "cast" and case.dtype in (torch.float16, torch.bfloat16):
            assert torch.equal(val, ref), (name, k, val, ref)     # one rounding, to even
        elif case.dtype.is_floating_point:
            tol = {} if case.dtype != F32 else {"rtol": 2e-6, "atol": 1e-6}
            torch.testing.assert_close(val, ref, equal_nan=True, **tol,
                                       msg=lambda m: f"{name} case {k}: {m}")
        else:
            assert torch.equal(val, ref), (name, k, val, ref)


def test_target_capabilities() -> None:
    t = get_target("triton")
    assert t.device == "cuda" and t.float_sum_dtype == torch.float32
    assert t.source_file == "kernels.py" and t.limits["xblock"] >= 128
    assert get_target("auto").name == "c"


# ---- fused graphs through trebuchet.compile -----------------------------------------

def _run(fn, *args: torch.Tensor, dynamic: bool | None = None):
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=dynamic)
    out = compiled(*args)
    stats = trebuchet.stats()
    assert stats["kernels"] >= 1 and not stats["graph_fallbacks"], stats
    return out


def _bias_gelu(x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.gelu(x + b), F.gelu(x - b, approximate="tanh")


def _chain(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    t = torch.exp(x * 0.5) + y
    t = torch.sigmoid(t) * torch.tanh(y) - torch.sqrt(torch.abs(x) + 1)
    t = torch.log1p(torch.abs(t)) / (1 + y * y)
    return torch.maximum(t, torch.rsqrt(torch.abs(y) + 2))


def _where_clamp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(x > y, x.clamp(-0.5, 0.75), y.clamp(min=0.1)) * (x != x).logical_not()


def test_bias_gelu_matches_eager() -> None:
    x, b = torch.randn(12, 40, generator=_gen(1)), torch.randn(40, generator=_gen(2))
    for got, want in zip(_run(_bias_gelu, x, b), _bias_gelu(x, b)):
        torch.testing.assert_close(got, want)


def test_ten_op_chain_matches_eager() -> None:
    x, y = torch.randn(33, 17, generator=_gen(3)), torch.randn(33, 17, generator=_gen(4))
    torch.testing.assert_close(_run(_chain, x, y), _chain(x, y))


def test_where_clamp_with_nan_matches_eager() -> None:
    x, y = torch.randn(9, 31, generator=_gen(5)), torch.randn(9, 31, generator=_gen(6))
    x[0, :3] = float("nan")
    y[1, :3] = float("nan")
    torch.testing.assert_close(_run(_where_clamp, x, y), _where_clamp(x, y), equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_floor_division_and_remainder_with_negatives(dtype: torch.dtype) -> None:
    def fn(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return a // d, a % d, torch.fmod(a, d), a // -3, a % 4

    a = torch.arange(-20, 20, dtype=dtype).reshape(5, 8)
    d = torch.tensor([-7, -3, -2, -1, 1, 2, 3, 7], dtype=dtype).repeat(5, 1)
    a[0, 3] = torch.iinfo(dtype).min                # min // -1 wraps, as in eager
    for got, want in zip(_run(fn, a, d), fn(a, d)):
        assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


def test_integer_division_by_zero_raises_as_eager() -> None:
    def fn(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return a // d + 1

    a, d = torch.arange(8), torch.tensor([1, 2, 3, 0, 5, 6, 7, 8])
    compiled = trebuchet.compile(fn, target="triton", strict=True)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        compiled(a, d)
    d[3] = 4
    assert torch.equal(compiled(a, d), fn(a, d))       # the flag was cleared


def test_index_out_of_range_raises_as_eager() -> None:
    def fn(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, 0, idx) * 2

    x = torch.randn(6, 5, generator=_gen(7))
    good, bad = torch.tensor([0, 5, 2, 2]), torch.tensor([0, 6, 2, 2])
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True)
    torch.testing.assert_close(compiled(x, good), fn(x, good))
    with pytest.raises(IndexError):
        fn(x, bad)
    with pytest.raises(IndexError, match="index out of range"):
        compiled(x, bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_eager(dtype: torch.dtype) -> None:
    def fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * y + 1, torch.sigmoid(x) - y.float()

    x = torch.randn(7, 19, generator=_gen(8)).to(dtype)
    y = torch.randn(7, 19, generator=_gen(9)).to(dtype)
    got, want = _run(fn, x, y), fn(x, y)
    c_target = trebuchet.compile(fn, target="c", strict=True)(x, y)
    for g, w, c in zip(got, want, c_target):
        assert g.dtype == w.dtype
        # eager rounds x * y before adding 1: results a unit of the last place apart
        ulp = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
        torch.testing.assert_close(g, w, atol=4 * ulp, rtol=ulp)
        assert torch.equal(g, c)              # computed in float32 and rounded once, as C


def test_one_kernel_serves_every_size() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 3 - x

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=True)
    for n in (5, 17, 1300):
        x = torch.randn(n, 3, generator=_gen(n))
        torch.testing.assert_close(compiled(x), fn(x))
    assert trebuchet.stats()["graphs"] == 1


def test_kernel_source_names_its_aten_ops(tmp_path) -> None:
    x, b = torch.randn(4, 8), torch.randn(8)
    trebuchet.reset()
    trebuchet.compile(_bias_gelu, target="triton", strict=True, debug=True, debug_dir=tmp_path)(x, b)
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert "@triton.jit" in source and "# kernel0: aten.add.Tensor" in source
    assert "aten.gelu.default" in source and "test_triton.py" in source


# ---- what does not compile falls back --------------------------------------------------

def test_without_the_interpreter_loading_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    trebuchet.reset()
    with pytest.raises(trebuchet.TrebuchetCompileError, match="TRITON_INTERPRET=1"):
        trebuchet.compile(lambda x: x * 2 + 1, target="triton", strict=True)(torch.randn(3))


def test_clear_cache_removes_the_generated_modules_only(tmp_path) -> None:
    from trebuchet.runtime.cache_files import clear

    x = torch.randn(5)
    for foreign in (False, True):
        trebuchet.reset()
        out = trebuchet.compile(lambda t: t * 2 + 1, target="triton", strict=True,
                                cache_dir=tmp_path)(x)
        torch.testing.assert_close(out, x * 2 + 1)
        modules = list((tmp_path / "triton").glob("tb_*.py"))
        assert len(modules) == 1 and "@triton.jit" in modules[0].read_text()
        if foreign:
            (tmp_path / "triton" / "notes.py").write_text("the user's\n")
        report = clear(tmp_path)
        assert report.removed.get("kernels") == 1 and not modules[0].exists()
        assert (tmp_path / "triton").exists() == foreign       # emptied: removed
    assert (tmp_path / "triton" / "notes.py").exists()


WIDE_UNARY = ["atan", "asin", "acos", "asinh", "acosh", "atanh", "tan", "tanh", "sinh", "cosh",
              "expm1", "log1p", "exp", "sigmoid", "round", "trunc", "erf"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_math_helpers_over_wide_ranges_and_special_values(dtype: torch.dtype) -> None:
    """The prelude's helpers on +-0, +-inf, NaN, +-1, tiny and huge arguments and 2000
    values spread over 1e-10..1e10: within 4 units of eager's last place (subnormals: 4
    units of the smallest normal's; any two values below the normal range match), zeros of the
    same sign."""
    special = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1.0, -1.0, 0.5, -0.5,
               1e-30, -1e-30, 1e30, -1e30, 2.0, 1e-8, 3e8, -3e8]
    g = _gen(11)
    spread = torch.randn(2000, dtype=torch.float64, generator=g) * \
        torch.logspace(-10, 10, 2000, dtype=torch.float64)
    x = torch.cat([torch.tensor(special, dtype=torch.float64), spread]).to(dtype)
    y = x.flip(0)

    def fn(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        out = [getattr(torch, name)(x) for name in WIDE_UNARY]
        out.append(torch.atan2(x, y))
        out += [torch.pow(x, y.abs().clamp(max=5)), torch.pow(x, y.round().clamp(-5, 5))]
        return out

    names = WIDE_UNARY + ["atan2", "pow", "pow (integer exponents)"]
    eps = torch.finfo(dtype).eps
    for name, got, want in zip(names, _run(fn, x, y), fn(x, y)):
        tiny = torch.finfo(dtype).tiny
        # eager's vectorized sigmoid flushes results below the normal range to 0
        close = (got == want) | (got.isnan() & want.isnan()) | \
            ((got - want).abs() <= 4 * eps * want.abs().clamp(min=tiny)) | \
            ((got.abs() < tiny) & (want.abs() < tiny))
        close &= ~((got == 0) & (want == 0) & (torch.signbit(got) != torch.signbit(want)))
        assert close.all(), (name, x[~close][:4], got[~close][:4], want[~close][:4])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_integer_constants_wrap_into_their_type(dtype: torch.dtype) -> None:
    """sign() of an unsigned tensor builds the constant -1 in its type (255 for uint8)."""
    def fn(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sign(a), a * 3 - 1

    info = torch.iinfo(dtype)
    a = torch.tensor([info.min, 0, 1, 2, 7, info.max - 1, info.max], dtype=dtype)
    for got, want in zip(_run(fn, a), fn(a)):
        assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


# ---- reductions -------------------------------------------------------------------------

def _reductions(x: torch.Tensor) -> list[torch.Tensor]:
    """Every reduction lowering along rows (dim -1), columns (dim 0) and to a scalar."""
    out = []
    for dim in (-1, 0):
        out += [x.sum(dim), x.mean(dim), x.amax(dim), x.amin(dim), x.argmax(dim),
                x.argmin(dim), *x.max(dim), x.var(dim), x.std(dim, correction=0),
                torch.logsumexp(x, dim), x.prod(dim), (x > 0).any(dim), (x > -1).all(dim),
                torch.linalg.vector_norm(x, dim=dim)]
    return out + [x.sum(), x.amax(), x.argmin(), x.var(), (x > 2).any(), x.prod()]


def _int_reductions(x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for dim in (-1, 0):
        out += [x.sum(dim), x.amax(dim), x.amin(dim), x.prod(dim), x.bool().any(dim),
                x.bool().all(dim)]
        if x.dtype != torch.bool:                       # eager has no argmax of bool
            out += [x.argmax(dim), x.argmin(dim)]
    return out + [x.sum(), x.amax(), x.amin()]


def _check(got: list[torch.Tensor], want: list[torch.Tensor], **tol) -> None:
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g, w)
        if w.dtype.is_floating_point:
            torch.testing.assert_close(g, w, equal_nan=True, msg=lambda m: f"output {k}: {m}",
                                       **tol)
        else:
            assert torch.equal(g, w), (k, g, w)


def _special_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows and columns with NaN, infinities, ties and all-equal values."""
    x = x.clone()
    x[0, 3] = float("nan")                     # a NaN in a row (and in column 3)
    x[1, :] = float("-inf")                    # a row of -inf: argmax 0
    x[2, 5], x[2, 9] = 7.0, 7.0                # a tie: the first index
    x[3, :] = 0.5                              # all equal
    x[4, 2], x[4, 7] = float("nan"), float("inf")
    return x


def test_every_reduction_matches_eager_float32() -> None:
    x = _special_rows(torch.randn(6, 40, generator=_gen(20)))
    _check(_run(_reductions, x), _reductions(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_reduction_matches_eager_in_other_float_types(dtype: torch.dtype) -> None:
    x = _special_rows(torch.randn(6, 40, generator=_gen(21))).to(dtype)
    # float16/bfloat16: eager sums in float32 and rounds once, as here; prod and the
    # variance's float64 sums round their result once too
    _check(_run(_reductions, x), _reductions(x))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_reductions_match_eager(dtype: torch.dtype) -> None:
    g = _gen(22)
    x = torch.randint(-3, 4, (5, 12), generator=g)
    x[2, 4] = x[2].max()                                   # a tie
    x = x.to(dtype) if dtype != torch.uint8 else (x + 3).to(dtype)
    _check(_run(_int_reductions, x), _int_reductions(x))


def test_large_integer_sums_are_exact_int64() -> None:
    x = torch.full((3, 50), 2 ** 40, dtype=torch.int64)
    x[1, 7] = -(2 ** 62)
    want = [x.sum(-1), x.sum(0), x.sum()]
    _check(_run(lambda t: [t.sum(-1), t.sum(0), t.sum()], x), want)


@pytest.fixture
def small_persistent_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """Rows longer than 16 elements loop over the row (the limit is the target's); no
    graph cache (its key does not hold the target's limits)."""
    monkeypatch.setitem(TritonTarget.limits, "persistent_rblock", 16)
    monkeypatch.setenv("TREBUCHET_GRAPH_CACHE", "0")
    return 16


def test_looped_rows_match_eager(small_persistent_limit: int) -> None:
    """Every reduction with rows of 40 > 16 looped over in chunks, multi-stage kernels
    (variance, logsumexp) one loop per stage."""
    x = _special_rows(torch.randn(6, 40, generator=_gen(23)))
    trebuchet.reset()
    compiled = trebuchet.compile(_reductions, target="triton", strict=True, debug=True,
                                 graph_cache=False)
    _check(compiled(x), _reductions(x))
    y = torch.randint(-3, 4, (5, 20), generator=_gen(24))
    _check(_run(_int_reductions, y), _int_reductions(y))


def test_looped_layer_norm_softmax_match_eager(small_persistent_limit: int, tmp_path) -> None:
    def fn(x, w, b):
        return F.layer_norm(x, (x.shape[-1],), w, b) + torch.softmax(x, -1)

    x, w, b = (torch.randn(5, 37, generator=_gen(25)), torch.randn(37, generator=_gen(26)),
               torch.randn(37, generator=_gen(27)))
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, debug=True,
                                 debug_dir=tmp_path, graph_cache=False)
    torch.testing.assert_close(compiled(x, w, b), fn(x, w, b))
    assert trebuchet.stats()["kernels"] == 1
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert source.count("for roffset in range(0, 37, RBLOCK):") == 3     # 3 stages


def test_symbolic_row_lengths_persistent_and_looped(small_persistent_limit: int) -> None:
    """One compiled graph for every row length: rows up to 16 in one block, longer
    rows looped (the launcher picks at run time)."""
    def fn(x):
        return torch.softmax(x, -1), x.amax(-1), x.argmin(-1), x.sum(0)

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=True,
                                 graph_cache=False)
    for n in (5, 16, 23, 70):
        x = torch.randn(3, n, generator=_gen(n))
        x[1, n // 2] = float("nan")
        _check(compiled(x), fn(x))
    assert trebuchet.stats()["graphs"] == 1


def test_symbolic_sizes_with_default_limit() -> None:
    def fn(x):
        return F.layer_norm(x, (x.shape[-1],)), x.mean(0)

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=True)
    for rows, n in ((3, 9), (7, 33), (2, 130)):
        x = torch.randn(rows, n, generator=_gen(rows * n))
        _check(compiled(x), fn(x))
    stats = trebuchet.stats()
    assert stats["graphs"] == 1 and not stats["graph_fallbacks"]


def test_constant_row_longer_than_the_limit_is_looped(tmp_path) -> None:
    """A row of 9000 > 8192 elements: one program per row looping in chunks."""
    def fn(x):
        return torch.softmax(x, -1), x.argmax(-1)

    x = torch.randn(2, 9000, generator=_gen(28))
    x[1, 8500] = 50.0
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, debug=True,
                                 debug_dir=tmp_path)
    _check(compiled(x), fn(x))
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert "for roffset" in source and "_looped" not in source


def test_reductions_over_several_and_inner_dims() -> None:
    def fn(x):
        return x.sum((0, 2)), x.amax((1, 2)), x.mean(1), x.var((0, 1)), x.sum(1, keepdim=True)

    x = torch.randn(3, 5, 7, generator=_gen(29))
    _check(_run(fn, x), fn(x))


def test_reduction_over_a_dimension_of_one() -> None:
    def fn(x):
        return x.sum(1), x.argmax(1), x.amax(1), x.any(1), x.prod(1)

    x = torch.randn(4, 1, 3, generator=_gen(30))
    _check(_run(fn, x), fn(x))


def test_column_sums_are_deterministic_and_close_to_float64() -> None:
    """Bias-gradient shape: [rows, 96] summed over 300 rows; the same bits every call.
    The target accumulates float32 sums in float32 (as eager on CUDA): the error against
    the float64 sum stays within a few float32 roundings of the sum of magnitudes."""
    x = torch.randn(300, 96, generator=_gen(31)) * 10
    compiled = trebuchet.compile(lambda t: t.sum(0), target="triton", strict=True)
    first = compiled(x)
    error = (first.double() - x.double().sum(0)).abs()
    bound = 8 * torch.finfo(torch.float32).eps * x.double().abs().sum(0)
    assert bool((error <= bound).all()), (error / bound).max()
    assert torch.equal(compiled(x), first)


def test_division_by_zero_inside_a_reduction_raises_as_eager() -> None:
    def fn(a, d):
        return (a // d).sum(-1)

    a = torch.arange(24).reshape(3, 8)
    d = torch.ones(3, 8, dtype=torch.int64)
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True)
    assert torch.equal(compiled(a, d), fn(a, d))        # masked-off lanes set no error
    d[1, 6] = 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        compiled(a, d)


# ---- normalizations: one kernel each, forward and backward ---------------------------------

def _train_step(fn, *tensors: torch.Tensor, tol: dict | None = None) -> tuple[dict, dict]:
    """Forward and backward of fn compiled and eager; the stats of the forward graph
    and of both graphs."""
    eager = [t.clone().requires_grad_(t.is_floating_point()) for t in tensors]
    comp = [t.clone().requires_grad_(t.is_floating_point()) for t in tensors]
    trebuchet.reset()
    y = trebuchet.compile(fn, target="triton", strict=True)(*comp)
    forward = trebuchet.stats()
    grad = torch.randn(y.shape, generator=_gen(40))
    y.backward(grad)
    total = trebuchet.stats()
    y_eager = fn(*eager)
    y_eager.backward(grad)
    torch.testing.assert_close(y, y_eager, **(tol or {}))
    for c, e in zip(comp, eager):
        if c.grad is not None:
            torch.testing.assert_close(c.grad, e.grad, **(tol or {}))
    assert total["graphs"] == 2 and not total["graph_fallbacks"] and not total["fallback_ops"]
    return forward, total


def test_layer_norm_forward_one_kernel_backward_two() -> None:
    x, w, b = torch.randn(8, 64, generator=_gen(41)), torch.randn(64), torch.randn(64)
    forward, total = _train_step(lambda x, w, b: F.layer_norm(x, (64,), w, b), x, w, b)
    assert forward["kernels"] == 1
    # grad_input is one row kernel; grad_weight and grad_bias one column kernel
    assert total["kernels"] - forward["kernels"] == 2, total["kernel_ops"]


def test_softmax_forward_and_backward_one_kernel_each() -> None:
    x = torch.randn(8, 50, generator=_gen(42))
    forward, total = _train_step(lambda x: torch.softmax(x * 0.5, -1), x)
    assert forward["kernels"] == 1 and total["kernels"] == 2, total["kernel_ops"]


def test_rms_norm_forward_and_backward() -> None:
    def fn(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    x, w = torch.randn(8, 64, generator=_gen(43)), torch.randn(64, generator=_gen(44))
    forward, total = _train_step(fn, x, w)
    assert forward["kernels"] == 1
    assert total["kernels"] - forward["kernels"] == 2, total["kernel_ops"]


def test_log_softmax_and_cross_entropy_forward_and_backward() -> None:
    def fn(logits, target):
        return F.cross_entropy(logits, target) + F.log_softmax(logits, -1).mean()

    logits = torch.randn(12, 30, generator=_gen(45))
    target = torch.randint(0, 30, (12,), generator=_gen(46))
    _train_step(fn, logits, target)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_layer_norm_and_softmax_match_eager(dtype: torch.dtype) -> None:
    def fn(x, w, b):
        return F.layer_norm(x, (48,), w, b), torch.softmax(x, -1)

    x, w, b = (torch.randn(6, 48, generator=_gen(47)).to(dtype),
               torch.randn(48, generator=_gen(48)).to(dtype), torch.randn(48).to(dtype))
    got, want = _run(fn, x, w, b), fn(x, w, b)
    ulp = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
    for g, e in zip(got, want):
        # eager rounds some intermediate values to the half type; these are float32
        torch.testing.assert_close(g, e, rtol=2 * ulp, atol=4 * ulp)


# ---- models ------------------------------------------------------------------------------

def _tiny_model(name: str) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = dict(vocab_size=64, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=32, attn_implementation="eager")
    if name == "bert":
        config = transformers.BertConfig(hidden_size=32, intermediate_size=64,
                                         hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, **common)
        return transformers.BertForMaskedLM(config)
    config = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=32,
                                     vocab_size=64, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                                     attn_implementation="eager")
    return transformers.GPT2LMHeadModel(config)


def _ids(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randint(0, 64, (2, 8), generator=g), torch.randint(0, 64, (2, 8), generator=g)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_tiny_model_inference_and_training(name: str, full: bool) -> None:
    """Inference, then training steps (AdamW; 1 by default, 3 with --full: ~1.3 s each
    in the interpreter), compiled strictly (no graph falls back) against eager."""
    import copy

    model = _tiny_model(name)
    trebuchet.reset()
    compiled_model = copy.deepcopy(model)
    compiled = trebuchet.compile(compiled_model, target="triton", strict=True)
    ids, labels = _ids(50)
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, compiled_model)]
    for step in range(3 if full else 1):
        ids, labels = _ids(60 + step)
        losses = []
        for fn, opt in zip((model, compiled), opts):
            loss = fn(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5), (step, losses)
    stats = trebuchet.stats()
    assert stats["graphs"] >= 3 and not stats["graph_fallbacks"]
    # the embedding gradient's index_put accumulating through many entries: a Scatter kernel
    assert not stats["fallback_ops"], stats["fallback_ops"]


# ---- math routines against float64 (as tests/test_c_math.py for the C prelude) ------------

def _ulp_error(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    from test_c_math import ulp_error
    return ulp_error(got, ref)


def _sweep(*ranges: tuple[float, float, int]) -> torch.Tensor:
    special = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1.0, 2.0, -1.0, -2.0,
               3e38, -3e38, 1e-40, -1e-40]
    parts = [torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi, n in ranges]
    return torch.cat([*parts, torch.tensor(special, dtype=torch.float64)]).float()


# name: (function, stated max error in float32 ulp, the sweep (dense ranges))
MATH = {
    "erfc": (torch.erfc, 1.0, _sweep((-10, 11, 60000), (0, 0.01, 5000), (3.5, 4.5, 20000))),
    "lgamma": (torch.lgamma, 1.0, _sweep((-30, 30, 60000), (0.9, 1.1, 20000), (1.9, 2.1, 20000),
                                         (-3.5, -2, 20000), (1e-38, 1e-30, 2000),
                                         (1e30, 3e38, 2000), (-1e7, -1e6, 2000))),
}


@pytest.mark.parametrize("name", sorted(MATH))
def test_float32_math_against_float64(name: str) -> None:
    """erfc and lgamma (computed in float64 routines of the prelude) within their stated
    bound over dense sweeps, special values exact (measured max: 0.53 ulp for erfc, 0.5
    for lgamma)."""
    fn, bound, x = MATH[name]
    err = _ulp_error(_run(fn, x), fn(x.double()))
    worst = int(err.argmax())
    assert err.max() <= bound, (name, x[worst].item(), err[worst].item())


def test_float64_pow_within_an_ulp() -> None:
    """float64 pow from double-double logarithms: within 1 ulp of eager (libm's pow) over
    bases 1e-300..1e300 and powers up to 1e3, and results near overflow and underflow."""
    g = _gen(60)
    n = 4000
    x = torch.randn(n, dtype=torch.float64, generator=g) * \
        torch.logspace(-300, 300, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    y = torch.randn(n, dtype=torch.float64, generator=g) * \
        torch.logspace(-5, 3, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    x = torch.cat([x, torch.rand(n, dtype=torch.float64, generator=g) * 4,
                   torch.tensor([2.0, 2.0, 0.5, 10.0, 1e-310, 5e-324, 1e308, -8.0, -0.0])])
    y = torch.cat([y, torch.randn(n, dtype=torch.float64, generator=g) * 300,
                   torch.tensor([1023.0, 1024.0, 1074.0, -307.5, 0.5, 2.0, 1.0, 1 / 3, -3.0])])
    got, want = _run(torch.pow, x, y), torch.pow(x, y)
    eps, tiny = torch.finfo(torch.float64).eps, torch.finfo(torch.float64).tiny
    err = (got - want).abs() / (eps * want.abs().clamp(min=tiny))
    err[(got == want) | (got.isnan() & want.isnan())] = 0
    worst = int(err.argmax())
    assert err.max() <= 1.0, (x[worst].item(), y[worst].item(), got[worst].item(),
                              want[worst].item())


# ---- scalar reductions split over programs -------------------------------------------------

def _scalars(x: torch.Tensor) -> list[torch.Tensor]:
    return [x.sum(), x.amax(), x.amin(), x.argmax(), x.argmin(), (x > 2).any(), (x > -5).all(),
            x.mean() * 2, x.prod(), torch.linalg.vector_norm(x)]


@pytest.fixture
def small_scalar_split(monkeypatch: pytest.MonkeyPatch) -> int:
    """Scalar reductions over more than 64 elements split into chunks of 16."""
    monkeypatch.setitem(TritonTarget.limits, "scalar_split", 64)
    monkeypatch.setenv("TREBUCHET_GRAPH_CACHE", "0")
    return 64


def test_split_scalar_reductions_match_eager(small_scalar_split: int, tmp_path) -> None:
    """400 elements in 25 chunks: extremes tied across chunks (the first position wins),
    then a NaN (it wins); the same bits on every call."""
    x = torch.randn(400, generator=_gen(70)) * 0.9 + 1.0 / 400
    x[300], x[390], x[50], x[51] = 5.0, 5.0, -4.0, -4.0
    trebuchet.reset()
    compiled = trebuchet.compile(_scalars, target="triton", strict=True, debug=True,
                                 debug_dir=tmp_path, graph_cache=False)
    first = compiled(x)
    _check(first, _scalars(x))
    assert all(torch.equal(a, b) for a, b in zip(compiled(x), first))
    x[200] = float("nan")
    _check(compiled(x), _scalars(x))
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert "_kernel0_partial[(triton.cdiv(xnumel, xblock), nparts)]" in source
    assert "_kernel0_combine[" in source
    small = torch.randn(40, generator=_gen(71))         # below the limit: one program
    _check(compiled(small), _scalars(small))


def test_split_scalar_reductions_of_integers_and_symbolic_sizes(small_scalar_split: int) -> None:
    def fn(a):
        return a.sum(), a.amax(), a.argmin(), (a != 0).all()

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=True,
                                 graph_cache=False)
    for n in (30, 64, 65, 999):
        a = torch.randint(-2 ** 40, 2 ** 40, (n,), generator=_gen(n))
        _check(compiled(a), fn(a))
    assert trebuchet.stats()["graphs"] == 1


def test_split_scalar_division_by_zero_raises(small_scalar_split: int) -> None:
    def fn(a, d):
        return (a // d).sum()

    a, d = torch.arange(300), torch.ones(300, dtype=torch.int64)
    compiled = trebuchet.compile(fn, target="triton", strict=True, graph_cache=False)
    assert torch.equal(compiled(a, d), fn(a, d))
    d[250] = 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        compiled(a, d)


def test_large_scalar_sum_with_the_default_limit() -> None:
    """70000 > 65536 elements: split in 5 chunks (16384 each), close to the float64 sum."""
    x = torch.randn(70000, generator=_gen(72))
    got = _run(lambda t: (t.sum(), t.abs().amax()), x)
    torch.testing.assert_close(got[0], x.double().sum().float(), rtol=1e-6, atol=1e-5)
    assert torch.equal(got[1], x.abs().amax())


def _columns(x: torch.Tensor) -> list[torch.Tensor]:
    return [x.sum(0), x.amax(0), x.amin(0), x.argmax(0), x.argmin(0), (x > 2).any(0),
            (x > -3).all(0), x.mean(0) * 2, torch.linalg.vector_norm(x, dim=0)]


def test_split_column_reductions_match_eager(tmp_path) -> None:
    """600 rows of 40 outputs (one tile): the rows split in 3 chunks, combined in order;
    extremes tied across chunks (the first row wins), NaNs; the same bits every call."""
    x = torch.randn(600, 40, generator=_gen(73))
    x[100, 3], x[500, 3] = 9.0, 9.0                    # a tie across chunks
    x[10, 4], x[590, 4] = -9.0, -9.0
    x[550, 6] = float("nan")
    x[:, 7] = float("-inf")
    trebuchet.reset()
    compiled = trebuchet.compile(_columns, target="triton", strict=True, debug=True,
                                 debug_dir=tmp_path)
    first = compiled(x)
    _check(first, _columns(x))
    for again, was in zip(compiled(x), first, strict=True):
        torch.testing.assert_close(again, was, rtol=0, atol=0, equal_nan=True)
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert "_partial[(triton.cdiv(xnumel, xblock), nparts)]" in source
    y = torch.randint(-2 ** 40, 2 ** 40, (530, 3), generator=_gen(74))
    _check(_run(lambda t: [t.sum(0), t.amax(0), t.argmin(0)], y),
           [y.sum(0), y.amax(0), y.argmin(0)])


def test_layer_norm_backward_with_split_bias_gradients() -> None:
    """520 rows: grad_weight and grad_bias are column sums split over the rows."""
    x, w, b = torch.randn(520, 32, generator=_gen(75)), torch.randn(32), torch.randn(32)
    forward, total = _train_step(lambda x, w, b: F.layer_norm(x, (32,), w, b), x, w, b,
                                 tol={"rtol": 1e-5, "atol": 1e-5})
    assert total["kernels"] - forward["kernels"] == 2, total["kernel_ops"]


def test_min_and_max_in_indices_are_elementwise() -> None:
    """An index clamped with min (GPT-2's KV-cache concatenation at symbolic lengths) is
    tl.minimum in a kernel (Python's min of two blocks compares them as a whole)."""
    import sympy

    from trebuchet.codegen.triton.kernels import index_code, launch_code
    x, s = sympy.Symbol("x0", integer=True, nonnegative=True), sympy.Symbol("s0", positive=True)
    assert index_code(sympy.Min(x, s - 1)).startswith("tl.minimum(")
    assert launch_code(sympy.Max(s, 3)).startswith("max(")


def test_tiny_gpt2_inference_at_symbolic_sequence_lengths() -> None:
    model = _tiny_model("gpt2").eval()
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="triton", strict=True, dynamic=True)
    for seq in (5, 11):
        ids = torch.randint(0, 64, (2, seq), generator=_gen(seq))
        with torch.no_grad():
            torch.testing.assert_close(compiled(input_ids=ids).logits,
                                       model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    stats = trebuchet.stats()
    assert stats["graphs"] == 1 and not stats["graph_fallbacks"]


def test_batch_norm_training_at_symbolic_sizes() -> None:
    """Batch norm's float expressions of sizes (n / (n - 1), 1 / n) in Triton arithmetic."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    ref.load_state_dict(model.state_dict())
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="triton", strict=True, dynamic=True)
    for n in (9, 12):
        x = torch.randn(2, 3, n, n + 1, generator=_gen(n))
        out, want = compiled(x), ref(x)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
        g = torch.randn(out.shape, generator=_gen(n + 1))
        out.backward(g)
        want.backward(g)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
            p.grad = q.grad = None
        for b, c in zip(model.buffers(), ref.buffers()):
            torch.testing.assert_close(b, c)
    assert not trebuchet.stats()["graph_fallbacks"]


def test_column_reductions_over_two_dims_split() -> None:
    """[4, 150, 24] reduced over (0, 1): 600 rows of 24 outputs in two reduced dims (split
    in chunks), and over dim 1 alone."""
    def fn(x):
        return x.sum(1), x.sum((0, 1)), x.amax((0, 1)), x.argmax(1), x.mean((0, 1)) * 3

    x = torch.randn(4, 150, 24, generator=_gen(76))
    _check(_run(fn, x), fn(x))


def test_float64_lgamma() -> None:
    """float64 lgamma (series at 2, recurrence, Stirling): within 5 ulp of eager for x > 0
    (measured 4.2, where lgamma(x + 1) - log x cancels near 1.4); for x < 0, by
    reflection, within 4 eps * (|lgamma x| + |lgamma(1 - x)|) (measured 1.8): near its
    zeros there the result is small and its relative error large, as any reflection's."""
    x = torch.cat([torch.linspace(-30, 30, 6001, dtype=torch.float64),
                   torch.linspace(0.9, 1.1, 501, dtype=torch.float64),
                   torch.linspace(1.9, 2.1, 501, dtype=torch.float64),
                   torch.logspace(-300, 300, 601, dtype=torch.float64),
                   -torch.logspace(-300, 15, 601, dtype=torch.float64),
                   torch.tensor([0.0, -0.0, 1.0, 2.0, float("inf"), -float("inf"), float("nan"),
                                 1e308, 5e-324, -5e-324, 12.0, -3.0])])
    got, want = _run(torch.lgamma, x), torch.lgamma(x)
    eps = torch.finfo(torch.float64).eps
    same = (got == want) | (got.isnan() & want.isnan())
    pos = (x > 0) & ~same
    ulps = (got - want).abs() / (eps * want.abs())
    assert (ulps[pos] <= 5).all(), (x[pos][ulps[pos].argmax()].item(), ulps[pos].max().item())
    neg = (x < 0) & ~same
    scale = eps * (want.abs() + torch.lgamma(1 - x).abs())
    assert ((got - want).abs()[neg] <= 4 * scale[neg]).all()


def test_float64_erfc_within_four_ulp() -> None:
    """float64 erfc (1 - erf below 1/2, Taylor series at 1, continued fraction from 3/2):
    within 4 ulp of eager over -6..27 (measured 3.5, at the Taylor series' edge)."""
    x = torch.cat([torch.linspace(-6, 27, 8001, dtype=torch.float64),
                   torch.linspace(0.45, 1.6, 1001, dtype=torch.float64),
                   torch.logspace(-300, 1.43, 601, dtype=torch.float64),
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 26.5,
                                 27.2, 5e-324, 1.5, 0.5])])
    got, want = _run(torch.erfc, x), torch.erfc(x)
    eps, tiny = torch.finfo(torch.float64).eps, torch.finfo(torch.float64).tiny
    err = (got - want).abs() / (eps * want.abs().clamp(min=tiny))
    err[(got == want) | (got.isnan() & want.isnan())] = 0
    worst = int(err.argmax())
    assert err.max() <= 4, (x[worst].item(), err[worst].item())


# ---- pointwise kernels with a transposed load: 2-D tiles --------------------------------

def _sources(fn, *args: torch.Tensor, tmp_path, dynamic: bool | None = None):
    """The compiled outputs and the generated Triton source (debug folder)."""
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="triton", strict=True, dynamic=dynamic,
                                 debug=True, debug_dir=tmp_path)
    out = compiled(*args)
    assert not trebuchet.stats()["graph_fallbacks"]
    return out, "".join(p.read_text() for p in sorted(tmp_path.glob("graph*/kernels.py")))


def _same(got, want) -> None:
    for g, w in zip(got if isinstance(got, (tuple, list)) else [got],
                    want if isinstance(want, (tuple, list)) else [want]):
        assert g.dtype == w.dtype and g.shape == w.shape and g.stride() == w.stride()
        assert torch.equal(g, w) or torch.equal(g.isnan(), w.isnan()) and torch.equal(
            g[~g.isnan()], w[~w.isnan()]), (g, w)


def _transposed(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.t().contiguous(), x * 2 + y.t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.int64,
                                   torch.bool])
def test_transposed_copy_and_add_are_tiled_and_exact(dtype: torch.dtype, tmp_path) -> None:
    x = (torch.randn(37, 70, generator=_gen(31)) * 50).to(dtype)
    y = (torch.randn(70, 37, generator=_gen(32)) * 50).to(dtype)
    got, source = _sources(_transposed, x, y, tmp_path=tmp_path)
    _same(got, _transposed(x, y))
    assert source.count("# tiled:") == 2
    assert "tl.arange(0, YBLOCK).to(tl.int64)[:, None]" in source


@pytest.mark.parametrize("perm", [(2, 0, 1), (1, 2, 0), (0, 2, 1)])
def test_three_dimensional_permutes_are_tiled(perm: tuple[int, ...], tmp_path) -> None:
    x = torch.randn(20, 19, 33, generator=_gen(33))
    got, source = _sources(lambda t: t.permute(*perm).contiguous() + 1, x, tmp_path=tmp_path)
    _same(got, x.permute(*perm).contiguous() + 1)
    assert "# tiled:" in source


@pytest.mark.parametrize("perm", [(0, 3, 1, 2), (0, 2, 3, 1), (3, 1, 0, 2)])
def test_four_dimensional_permutes_are_tiled(perm: tuple[int, ...], tmp_path) -> None:
    x = torch.randn(2, 17, 16, 20, generator=_gen(34)).to(torch.bfloat16)
    fn = lambda t: torch.sigmoid(t.permute(*perm).contiguous())   # noqa: E731
    got, source = _sources(fn, x, tmp_path=tmp_path)
    _same(got, fn(x))
    assert "# tiled:" in source and "zindex" in source


def test_untransposed_kernels_stay_flattened(tmp_path) -> None:
    """Attention heads' permute(0, 2, 1, 3) keeps the last dimension contiguous, and a
    transposed axis of 3 elements would leave most of a tile masked: not tiled."""
    x = torch.randn(2, 3, 5, 8, generator=_gen(35))
    fn = lambda t: (t.permute(0, 2, 1, 3).contiguous() * 2, t + 1,   # noqa: E731
                    t.reshape(30, 8)[:, :3].t().contiguous())
    got, source = _sources(fn, x, tmp_path=tmp_path)
    _same(got, fn(x))
    assert "# tiled:" not in source and "YBLOCK" not in source and "xindex" in source


def test_tiles_with_symbolic_sizes(tmp_path) -> None:
    trebuchet.reset()
    compiled = trebuchet.compile(_transposed, target="triton", strict=True, dynamic=True,
                                 debug=True, debug_dir=tmp_path)
    for n, m in ((3, 17), (40, 66), (65, 2)):
        x = torch.randn(n, m, generator=_gen(n))
        y = torch.randn(m, n, generator=_gen(m))
        _same(compiled(x, y), _transposed(x, y))
    source = "".join(p.read_text() for p in tmp_path.glob("graph*/kernels.py"))
    assert trebuchet.stats()["graphs"] == 1 and "# tiled:" in source
    assert "do_not_specialize" in source


def test_tiled_integer_division_by_zero_raises(tmp_path) -> None:
    def fn(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return a // d.t() + 1

    a = torch.arange(-170, 170).reshape(20, 17)
    d = torch.arange(1, 341).reshape(17, 20)
    got, source = _sources(fn, a, d, tmp_path=tmp_path)
    _same(got, fn(a, d))
    assert "# tiled:" in source and "tb_bad" in source
    compiled = trebuchet.compile(fn, target="triton", strict=True)
    d[7, 14] = 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        compiled(a, d)


# ---- autotune=True: declined under the interpreter; choices, configurations, cache file ----

def test_autotune_option_is_checked_and_read_from_the_environment(monkeypatch) -> None:
    from trebuchet.config import Options
    with pytest.raises(TypeError, match="autotune must be True or False"):
        trebuchet.compile(lambda x: x + 1, autotune=1)
    assert not Options.from_env().autotune
    monkeypatch.setenv("TREBUCHET_AUTOTUNE", "1")
    assert Options.from_env().autotune and not Options.from_env(autotune=False).autotune


def test_autotune_under_the_interpreter_warns_once_and_uses_the_heuristic(monkeypatch,
                                                                          tmp_path) -> None:
    from trebuchet.codegen.triton import launch
    monkeypatch.setattr(launch, "_AUTOTUNE_DECLINED", False)
    x = torch.randn(6, 9, generator=_gen(40))
    fn = lambda t: t.t().contiguous() * 3   # noqa: E731
    trebuchet.reset()
    with pytest.warns(UserWarning, match="autotune=True needs a GPU"):
        out = trebuchet.compile(fn, target="triton", strict=True, autotune=True,
                                cache_dir=tmp_path)(x)
    _same(out, fn(x))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # once per process
        trebuchet.reset()
        out = trebuchet.compile(lambda t: t * 3, target="triton", strict=True, autotune=True,
                                cache_dir=tmp_path)(x)
    _same(out, x * 3)
    assert list((tmp_path / "triton").glob("tb_*.py")) and not list(tmp_path.rglob("*.json"))


def test_autotune_configurations_surround_the_heuristic() -> None:
    from trebuchet.codegen.triton.autotune import CONFIGS
    from trebuchet.codegen.triton.prelude import _t_tuned
    for shape, blocks in (("pointwise", 1), ("tile", 2)):
        configs = CONFIGS[shape]
        assert configs[0] == ((0,) * blocks, 4) and len(set(configs)) == len(configs) >= 4
        assert all(len(s) == blocks and all(-1 <= v <= 1 for v in s) and w in (4, 8)
                   for s, w in configs)
    assert _t_tuned((1024,), ((1,), 8)) == ((2048,), 8)
    assert _t_tuned((16, 64), ((-1, 0), 4)) == ((16, 64), 4)          # clamped at 16
    assert _t_tuned((4096,), ((1,), 4)) == ((4096,), 4)               # and at 4096


def _tuned_module(tmp_path, fn, *args: torch.Tensor):
    """The generated module of `fn` (one kernel), imported from the debug folder."""
    import importlib.util
    _, source = _sources(fn, *args, tmp_path=tmp_path)
    path = tmp_path / "tuned_kernels.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tuned_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_autotune_keeps_the_fastest_and_caches_it_on_disk(tmp_path) -> None:
    """With a stand-in timer (every configuration really runs, under the interpreter, on
    clones of the arguments): the fastest is kept, launched, written, read back by a new
    tuner without timing; a corrupt or foreign file is ignored."""
    from trebuchet.codegen.triton.autotune import CONFIGS, AutoTuner, read_choices, tune_path
    x = torch.randn(40, 70, generator=_gen(41))
    module = _tuned_module(tmp_path, lambda t: t.t().contiguous() * 2, x)
    assert module.kernel0.tb_shape == "tile"
    fast = ((-1, 0), 4)
    timed = []

    def timer(run) -> float:
        run()
        timed.append(1)
        return 1.0 if run.__defaults__[0] == fast else 2.0

    path = tune_path(tmp_path / "tb_0123.py")
    assert path.name == "tb_0123.tune.json"
    out = torch.full((70, 40), -1.0)
    launch = AutoTuner(path, timer=timer, capturing=lambda: False).wrap("kernel0", module.kernel0)
    launch(x, out)
    assert len(timed) == len(CONFIGS["tile"]) and torch.equal(out, x.t() * 2)
    assert list(read_choices(path).values()) == [fast]
    # a new process: the choice is read back, nothing is timed
    out2 = torch.zeros(70, 40)
    AutoTuner(path, timer=lambda run: pytest.fail("timed again"),
              capturing=lambda: False).wrap("kernel0", module.kernel0)(x, out2)
    assert torch.equal(out2, x.t() * 2)
    # a corrupt file, an unknown configuration: ignored, timed again and rewritten
    for text in ("{not json", '{"version": 1, "choices": {"kernel0|(40, 70)float32;(70, 40)'
                 'float32": [[7, 7], 3]}}'):
        path.write_text(text)
        assert read_choices(path) == {}
        timed.clear()
        AutoTuner(path, timer=timer, capturing=lambda: False).wrap("kernel0", module.kernel0)(
            x, out2)
        assert len(timed) == len(CONFIGS["tile"]) and list(read_choices(path).values()) == [fast]


def test_autotune_skips_failing_configurations_and_reductions(tmp_path) -> None:
    from trebuchet.codegen.triton.autotune import AutoTuner, tune_path
    calls = []

    def launch_fn(a, tb_config=None):
        calls.append(tb_config)
    launch_fn.tb_shape = "pointwise"

    def timer(run) -> float:
        if run.__defaults__[0][1] == 8:
            raise RuntimeError("out of resources")
        return {0: 3.0, -1: 2.0, 1: 5.0}[run.__defaults__[0][0][0]]

    tuner = AutoTuner(tune_path(tmp_path / "tb_x.py"), timer=timer, capturing=lambda: False)
    tuner.wrap("k", launch_fn)(torch.ones(3))
    assert calls == [((-1,), 4)]
    reduction = lambda a: None   # noqa: E731 - no tb_shape: not tuned
    assert tuner.wrap("r", reduction) is reduction
    capturing = AutoTuner(tune_path(tmp_path / "tb_y.py"), timer=timer, capturing=lambda: True)
    calls.clear()
    capturing.wrap("k", launch_fn)(torch.ones(3))
    assert calls == [None]                 # under a CUDA graph capture: the heuristic


def test_autotune_times_on_copies_with_the_arguments_layout() -> None:
    from trebuchet.codegen.triton.autotune import layout_copy
    base = torch.arange(60.0).reshape(6, 10)
    for t in (base, base[1:, 2::3], base.t(), base[:, :1].expand(6, 4), base[:0]):
        c = layout_copy(t)
        assert c.shape == t.shape and c.stride() == t.stride() and torch.equal(c, t)
        assert t.numel() == 0 or c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()


def test_clear_cache_removes_autotune_choices(tmp_path) -> None:
    from trebuchet.codegen.triton.autotune import tune_path, write_choices
    from trebuchet.runtime.cache_files import clear
    folder = tmp_path / "triton"
    folder.mkdir()
    module = folder / ("tb_" + "0" * 24 + ".py")
    module.write_text("# a module\n")
    write_choices(tune_path(module), {"kernel0|": ((0,), 8)})
    (folder / "tb_notours.tune.json").write_text("{}")
    report = clear(tmp_path)
    assert report.removed.get("kernels") == 2 and not tune_path(module).exists()
    assert (folder / "tb_notours.tune.json").exists()
