"""The Triton target (pointwise kernels) under Triton's interpreter, on CPU tensors.

TRITON_INTERPRET=1 is set here, before triton is imported by this module; Triton reads
it each time a function is decorated with `@triton.jit` (knobs.runtime.interpret), which
happens when the launcher imports a generated module, so the order in which test modules
import triton does not matter.

  * every IR primitive the target generates, in one hand-built graph run through the
    real pipeline, against the reference target (tests/test_ir.py's cases); the
    primitives it does not generate yet fail to compile with a clear error;
  * fused pointwise graphs compiled with target="triton", strict=True, against eager;
  * reductions and a missing interpreter fail to compile (strict raises, else eager).
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
from trebuchet.codegen.triton import NOT_YET, TritonUnsupported  # noqa: E402
from trebuchet.ir.expr import OPS  # noqa: E402
from trebuchet.ir.nodes import GraphIR  # noqa: E402

GENERATED = sorted(set(OPS) - NOT_YET)


def generated(name: str, case) -> bool:
    """Whether the target generates this case (float64 pow is not generated yet)."""
    return name not in NOT_YET and not (name == "pow" and case.dtype == torch.float64)


def _graph(names: list[str], keep=lambda name, case: True
           ) -> tuple[GraphIR, list[torch.Tensor], list[tuple[str, int]]]:
    """One Pointwise output per case of each primitive in `names` that `keep` accepts."""
    return _build_graph(names, keep)


@pytest.fixture(scope="module")
def triton_results() -> dict:
    graph, args, labels = _graph(GENERATED, generated)
    out = _compile_ir(graph, "triton")(list(args))
    ref = _compile_ir(graph, "reference")(list(args))
    assert len(out) == len(ref) == len(labels)
    return {label: (o, r) for label, o, r in zip(labels, out, ref)}


@pytest.mark.parametrize("name", GENERATED)
def test_primitive_matches_reference(name: str, triton_results: dict) -> None:
    for k, case in enumerate(CASES[name]):
        if not generated(name, case):
            continue
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


@pytest.mark.parametrize("name", [*sorted(NOT_YET), "pow"])
def test_primitive_not_generated_yet_fails_to_compile(name: str) -> None:
    graph, _, _ = _graph([name], lambda name, case: not generated(name, case))
    with pytest.raises(TritonUnsupported, match=f"does not implement the {name} primitive"):
        _compile_ir(graph, "triton")


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


# ---- what does not compile yet falls back ---------------------------------------------

def test_reduction_fails_to_compile_with_a_clear_error() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1) + 1

    x = torch.randn(4, 8)
    trebuchet.reset()
    with pytest.raises(trebuchet.TrebuchetCompileError,
                       match="the Triton target does not handle row reduction kernels yet"):
        trebuchet.compile(fn, target="triton", strict=True)(x)
    trebuchet.reset()
    with pytest.warns(trebuchet.TrebuchetWarning, match="does not handle row reduction"):
        out = trebuchet.compile(fn, target="triton")(x)
    torch.testing.assert_close(out, fn(x))
    assert trebuchet.stats()["graph_fallbacks"] == 1


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
    same sign (float64 pow is left out: 2^(y log2 x) is off by up to |y log2 x| ulp)."""
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
        if dtype == torch.float32:
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
