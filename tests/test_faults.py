"""Bad inputs and faults: Trebuchet must give eager's answer (or a clear error) every time.

Inputs: non-contiguous, broadcast, 0-dim and zero-size tensors; NaN/Inf; integer, bool,
half and double dtypes; inputs mutated inside the compiled function; outputs that alias
inputs; shapes and dtypes that change between calls.
Faults: ops without a lowering, a missing C compiler, an unusable or corrupted kernel
cache, two processes filling one cache at once, and a code generator that crashes.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import trebuchet
import trebuchet.codegen.c
from trebuchet.runtime import cbuild

INF, NAN = float("inf"), float("nan")
SRC_DIR = str(pathlib.Path(trebuchet.__file__).resolve().parents[1])


def _clone(x: Any) -> Any:
    """A copy with the same sizes, strides and storage offset (clone() would make sliced
    or expanded tensors contiguous): a copy of the whole storage, viewed the same way."""
    if not isinstance(x, torch.Tensor):
        return x
    out = torch.empty(0, dtype=x.dtype)
    out.set_(x.untyped_storage().clone(), x.storage_offset(), x.size(), x.stride())
    return out


def check(fn: Callable, *args: Any, **options: Any) -> dict:
    """Compile fn (strict), run it and eager on equal copies of args, compare outputs and
    the arguments afterwards (in-place updates). Returns trebuchet.stats()."""
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, **options)
    eager_args = [_clone(a) for a in args]
    comp_args = [_clone(a) for a in args]
    expected = fn(*eager_args)
    actual = compiled(*comp_args)
    torch.testing.assert_close(actual, expected, equal_nan=True)
    for c, e in zip(comp_args, eager_args):
        if isinstance(c, torch.Tensor):
            torch.testing.assert_close(c, e, equal_nan=True)
    return trebuchet.stats()


def trebuchet_error(exc: BaseException) -> BaseException | None:
    """The TrebuchetCompileError in an exception or the chain that wraps it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, trebuchet.TrebuchetCompileError):
            return exc
        exc = (getattr(exc, "inner_exception", None) or exc.__cause__ or exc.__context__)
    return None


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC_DIR, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


# ---- layouts -----------------------------------------------------------------------

def test_transposed_input() -> None:
    stats = check(lambda x, y: torch.sin(x) * 2 + y, torch.randn(8, 6).t(), torch.randn(6, 8))
    assert stats["kernels"] == 1


def test_sliced_with_step_and_offset_input() -> None:
    x = torch.randn(10, 16)[1:9:2, 3::3]
    assert not x.is_contiguous() and x.storage_offset() > 0
    assert _clone(x).stride() == x.stride() and _clone(x).storage_offset() == x.storage_offset()
    check(lambda x: (x * 2).exp().sum(-1), x)


def test_expanded_input() -> None:
    a = torch.randn(4, 1).expand(4, 5)
    assert a.stride() == (1, 0)
    check(lambda a, b: a * b + a, a, torch.randn(4, 5))
    check(lambda a: torch.softmax(a, -1), torch.randn(1, 7).expand(3, 7))


def test_broadcasting_between_inputs() -> None:
    check(lambda a, b, c: a + b * c, torch.randn(3, 1, 5), torch.randn(4, 1), torch.randn(5))


# ---- degenerate shapes -------------------------------------------------------------

def test_zero_dim_inputs() -> None:
    check(lambda a, b: a * b + 1, torch.tensor(3.0), torch.randn(4))
    check(lambda a: (a * 2).sum(), torch.tensor(3.0))
    check(lambda a, b: torch.maximum(a, b), torch.tensor(0.5), torch.tensor(-1.0))


@pytest.mark.parametrize("fn", [
    lambda a: torch.sin(a * 2),
    lambda a: a.sum(0),
    lambda a: a.sum(1),
    lambda a: a.sum(),
    lambda a: torch.softmax(a, -1),
    lambda a: a.amax(1),
], ids=["pointwise", "sum0", "sum1", "sum_all", "softmax", "amax_nonempty_dim"])
def test_zero_size_inputs(fn: Callable) -> None:
    check(fn, torch.randn(0, 4))


# ---- NaN and Inf -------------------------------------------------------------------

SPECIAL = torch.tensor([[1.0, NAN, 3.0, -INF], [INF, -1.0, 2.0, 0.0], [-INF, -INF, 1.0, 2.0]])


@pytest.mark.parametrize("fn", [
    torch.relu,
    lambda a: a.amax(-1),
    lambda a: a.amin(0),
    lambda a: a.max(-1),
    lambda a: a.argmax(-1),
    lambda a: torch.softmax(a, -1),
    lambda a: F.log_softmax(a, -1),
    lambda a: a.sum(-1),
    lambda a: a.mean(0),
    lambda a: torch.maximum(a, torch.zeros_like(a)),
    lambda a: a.clamp(-1, 1),
], ids=["relu", "amax", "amin", "max_dim", "argmax", "softmax", "log_softmax", "sum", "mean",
        "maximum", "clamp"])
def test_nan_inf_propagation(fn: Callable) -> None:
    check(fn, SPECIAL)


def test_softmax_of_an_all_minus_inf_row_is_nan() -> None:
    check(lambda a: torch.softmax(a, -1), torch.tensor([[-INF, -INF], [0.0, 1.0]]))


# ---- integer, bool and floating dtypes ----------------------------------------------

def test_int_floor_division_and_remainder_follow_python() -> None:
    a = torch.tensor([-7, 7, -7, 7, -8, 0, -1, 5])
    b = torch.tensor([2, -2, -2, 2, 3, 4, 5, -3])
    expected_div = torch.tensor([x // y for x, y in zip(a.tolist(), b.tolist())])
    expected_rem = torch.tensor([x % y for x, y in zip(a.tolist(), b.tolist())])
    trebuchet.reset()
    compiled = trebuchet.compile(lambda a, b: (a // b, a % b), target="c", strict=True)
    div, rem = compiled(a, b)
    assert torch.equal(div, expected_div) and torch.equal(rem, expected_rem)
    assert trebuchet.stats()["kernels"] >= 1 and not trebuchet.stats()["fallback_ops"]
    check(lambda a: (a // -3, a % -3, a // 3, a % 3), a)
    check(lambda a, b: torch.fmod(a, b), a, b)
    check(lambda a, b: (a // b, a % b), a.to(torch.int32), b.to(torch.int32))


def test_int_trunc_division() -> None:
    a = torch.tensor([-7, 7, -7, 7, -8, 0, -1, 5])
    b = torch.tensor([2, -2, -2, 2, 3, 4, 5, -3])
    check(lambda a, b: torch.div(a, b, rounding_mode="trunc"), a, b)


def test_float_trunc_division() -> None:
    check(lambda a, b: torch.div(a, b, rounding_mode="trunc"), torch.tensor([-7.5, 7.5, -0.5]),
          torch.tensor([2.0, -2.0, 3.0]))


def test_float_floor_division_and_remainder_with_negatives() -> None:
    a = torch.tensor([-7.5, 7.5, -7.0, 7.0, -0.0, 1e-30])
    b = torch.tensor([2.0, -2.0, -2.0, 2.0, 3.0, -1.0])
    check(lambda a, b: (a // b, a % b, torch.fmod(a, b)), a, b)


def test_bool_logic() -> None:
    a = torch.tensor([True, False, True, False])
    b = torch.tensor([True, True, False, False])
    check(lambda a, b: ((a & b) | (~a ^ b), torch.logical_xor(a, b), a + b, a * b), a, b)
    check(lambda a, b: torch.where(a, b.float(), -1.0), a, b)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool])
def test_int_sum_promotes_to_int64(dtype: torch.dtype) -> None:
    x = torch.full((3, 100), 100).to(dtype)
    trebuchet.reset()
    compiled = trebuchet.compile(lambda x: (x.sum(), x.sum(-1)), target="c", strict=True)
    total, rows = compiled(x)
    assert total.dtype == rows.dtype == torch.int64
    assert total.item() == int(x.long().sum()) and rows.tolist() == x.long().sum(-1).tolist()
    assert not trebuchet.stats()["fallback_ops"]


def test_small_int_overflow_wraps_like_eager() -> None:
    check(lambda a: a + a, torch.tensor([100, -100, 127], dtype=torch.int8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_and_double(dtype: torch.dtype) -> None:
    x = torch.randn(4, 32).to(dtype)
    w = torch.randn(32).to(dtype)
    stats = check(lambda x, w: (torch.sin(x * w + 1), torch.softmax(x, -1),
                                F.layer_norm(x, (32,), w, w), x.sum(-1)), x, w)
    assert not stats["fallback_ops"]


def test_mixed_precision_promotion() -> None:
    check(lambda a, b: a + b, torch.randn(4, dtype=torch.float16),
          torch.randn(4, dtype=torch.float64))
    check(lambda a, b: a * b, torch.arange(4), torch.randn(4, dtype=torch.bfloat16))


# ---- mutation and aliasing ---------------------------------------------------------

def test_input_mutated_in_place() -> None:
    def fn(x):
        x.add_(1)
        return x * 2

    x_eager = torch.randn(5)
    x_comp, before = x_eager.clone(), x_eager.clone()
    trebuchet.reset()
    out = trebuchet.compile(fn, target="c", strict=True)(x_comp)
    expected = fn(x_eager)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x_comp, before + 1)
    torch.testing.assert_close(x_comp, x_eager)


@pytest.mark.parametrize("make", [lambda: torch.randn(8, 6).t(), lambda: torch.randn(6, 8)[:, ::2]],
                         ids=["transposed", "strided"])
def test_non_contiguous_input_mutated_in_place(make: Callable) -> None:
    def fn(x):
        x.mul_(2)
        return x + 1

    check(fn, make())


def test_mutated_input_returned() -> None:
    def fn(x):
        x.add_(1)
        return x

    x = torch.randn(4)
    expected = x + 1
    trebuchet.reset()
    out = trebuchet.compile(fn, target="c", strict=True)(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x, expected)
    assert out.data_ptr() == x.data_ptr()


def test_copy_into_an_input() -> None:
    def fn(x, y):
        y.copy_(x * 2)
        return y.sum()

    check(fn, torch.randn(4), torch.zeros(4))


@pytest.mark.parametrize("fn", [lambda x: x.t(), lambda x: x[1:], lambda x: (x.t(), x[1:], x * 2)],
                         ids=["t", "slice", "mixed"])
def test_outputs_alias_inputs(fn: Callable) -> None:
    x = torch.randn(3, 4)
    trebuchet.reset()
    out = trebuchet.compile(fn, target="c", strict=True)(x)
    expected = fn(x)
    torch.testing.assert_close(out, expected)
    outs = out if isinstance(out, tuple) else (out,)
    exps = expected if isinstance(expected, tuple) else (expected,)
    for o, e in zip(outs, exps):
        assert o.stride() == e.stride()
        shares = o.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        assert shares == (e.untyped_storage().data_ptr() == x.untyped_storage().data_ptr())
    # a view output sees later writes to its input, as in eager
    x.fill_(7.0)
    assert bool((outs[0] == 7.0).all())


# ---- changing shapes and dtypes ----------------------------------------------------

CALLS = [((4, 8), torch.float32), ((5, 8), torch.float32), ((6, 3), torch.float32),
         ((6, 3), torch.float64), ((7, 9), torch.float32), ((1, 9), torch.float32),
         ((0, 9), torch.float32), ((3, 5), torch.int64)]


@pytest.mark.parametrize("dynamic", [None, False, True])
def test_changing_shape_and_dtype_between_calls(dynamic: bool | None) -> None:
    def fn(a):
        return (torch.softmax(a.float(), -1) * 2 + 1).sum(0), a * 3

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, dynamic=dynamic)
    for shape, dtype in CALLS:
        a = (torch.randn(shape) * 4).to(dtype)
        torch.testing.assert_close(compiled(a), fn(a))
    stats = trebuchet.stats()
    assert stats["graph_fallbacks"] == 0 and stats["graphs"] >= 2


def test_changing_strides_between_calls() -> None:
    def fn(a):
        return torch.sin(a) * 2

    for dynamic in (None, True):
        trebuchet.reset()
        compiled = trebuchet.compile(fn, target="c", strict=True, dynamic=dynamic)
        for a in (torch.randn(6, 8), torch.randn(8, 6).t(), torch.randn(10, 16)[2:8, 3::2]):
            torch.testing.assert_close(compiled(a), fn(a))


def test_dynamic_shapes_compile_once() -> None:
    trebuchet.reset()
    compiled = trebuchet.compile(lambda a, b: torch.softmax(a * 2 + b, -1), target="c",
                                 strict=True, dynamic=True)
    for rows, cols in ((3, 5), (17, 33), (64, 129)):
        a, b = torch.randn(rows, cols), torch.randn(cols)
        torch.testing.assert_close(compiled(a, b), torch.softmax(a * 2 + b, -1))
    assert trebuchet.stats()["graphs"] == 1


# ---- ops without a lowering, externs -----------------------------------------------

@pytest.mark.parametrize("fn,op", [
    (lambda a: torch.cumsum(a, 0) * 2, "aten.cumsum.default"),
    (lambda a: torch.sort(a)[0] + 1, "aten.sort.default"),
], ids=["cumsum", "sort"])
def test_unsupported_op_runs_as_extern(fn: Callable, op: str) -> None:
    stats = check(fn, torch.randn(7))
    assert stats["fallback_ops"].get(op) == 1, stats["fallback_ops"]
    assert stats["graph_fallbacks"] == 0


def test_matmul_is_an_extern() -> None:
    stats = check(lambda a, b: torch.relu(a @ b), torch.randn(4, 5), torch.randn(5, 3))
    assert any("mm" in op for op in stats["extern_ops"]), stats["extern_ops"]
    assert not stats["fallback_ops"]
    assert stats["kernels"] == 1


def test_tensor_constant_in_the_graph() -> None:
    def fn(x):
        return x + torch.tensor([1.0, 2.0, 3.0])

    stats = check(fn, torch.randn(3))
    assert stats["graph_fallbacks"] == 0 and stats["kernels"] == 1


# ---- no C compiler -----------------------------------------------------------------

@pytest.fixture
def no_cc(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """CC points nowhere; an empty cache, so no kernel can come from an earlier build."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "empty-cache"))


def _fn(a):
    return torch.sin(a * 2) + 1


def _expect_eager_fallback(x: torch.Tensor, match: str) -> None:
    """Compiling _fn warns (message matching `match`) and still gives eager's result."""
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c")
    with pytest.warns(trebuchet.TrebuchetWarning, match=match):
        out = compiled(x)
    torch.testing.assert_close(out, _fn(x))


@pytest.mark.usefixtures("no_cc")
def test_no_c_compiler_falls_back_with_warning() -> None:
    _expect_eager_fallback(torch.randn(5), match="C compiler")
    assert trebuchet.stats()["graph_fallbacks"] == 1


@pytest.mark.usefixtures("no_cc")
def test_no_c_compiler_strict_error_names_the_compiler() -> None:
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c", strict=True)
    with pytest.raises(Exception) as info:
        compiled(torch.randn(5))
    err = trebuchet_error(info.value)
    assert err is not None, repr(info.value)
    assert "C compiler" in str(err) and "/nonexistent/cc" in str(err)


@pytest.mark.usefixtures("no_cc")
def test_no_c_compiler_strict_raises_trebuchet_error() -> None:
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c", strict=True)
    with pytest.raises(trebuchet.TrebuchetCompileError, match="C compiler"):
        compiled(torch.randn(5))


@pytest.mark.usefixtures("no_cc")
def test_reference_target_needs_no_c_compiler() -> None:
    trebuchet.reset()
    x = torch.randn(5)
    out = trebuchet.compile(_fn, target="reference", strict=True)(x)
    torch.testing.assert_close(out, _fn(x))


@pytest.mark.usefixtures("no_cc")
def test_env_strict_and_target_apply_to_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(5)
    monkeypatch.setenv("TREBUCHET_TARGET", "reference")
    trebuchet.reset()
    torch.testing.assert_close(torch.compile(_fn, backend="trebuchet")(x), _fn(x))
    assert trebuchet.stats()["graph_fallbacks"] == 0
    monkeypatch.setenv("TREBUCHET_TARGET", "c")
    monkeypatch.setenv("TREBUCHET_STRICT", "1")
    trebuchet.reset()
    with pytest.raises(Exception) as info:
        torch.compile(_fn, backend="trebuchet")(x)
    assert trebuchet_error(info.value) is not None


@pytest.mark.parametrize("var,value", [("TREBUCHET_TARGET", "reference"),
                                       ("TREBUCHET_STRICT", "1")])
@pytest.mark.usefixtures("no_cc")
def test_env_strict_and_target_apply_to_trebuchet_compile(
        monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    x = torch.randn(5)
    trebuchet.reset()
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out = trebuchet.compile(_fn)(x)
    except Exception as e:  # noqa: BLE001 - strict: the compile error is the right outcome
        assert var == "TREBUCHET_STRICT" and trebuchet_error(e) is not None
        return
    fell_back = [str(w.message) for w in record if issubclass(w.category,
                                                              trebuchet.TrebuchetWarning)]
    assert var == "TREBUCHET_TARGET", "TREBUCHET_STRICT=1 but no error was raised"
    torch.testing.assert_close(out, _fn(x))
    assert not fell_back and trebuchet.stats()["graph_fallbacks"] == 0, fell_back


# ---- compile errors ----------------------------------------------------------------

def _broken_generate(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected codegen failure")


def test_codegen_error_falls_back_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trebuchet.codegen.c, "generate", _broken_generate)
    x = torch.randn(6)
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c")
    with pytest.warns(trebuchet.TrebuchetWarning,
                      match=r"compiling the \w+ graph failed.*injected codegen failure"):
        out = compiled(x)
    torch.testing.assert_close(out, _fn(x))
    assert trebuchet.stats()["graph_fallbacks"] == 1


def test_codegen_error_in_backward_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(6, requires_grad=True)
    x_eager = x.detach().clone().requires_grad_()
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c")
    out = compiled(x)                      # forward compiles normally
    monkeypatch.setattr(trebuchet.codegen.c, "generate", _broken_generate)
    with pytest.warns(trebuchet.TrebuchetWarning, match="backward graph failed"):
        out.sum().backward()
    _fn(x_eager).sum().backward()
    torch.testing.assert_close(x.grad, x_eager.grad)


def test_codegen_error_strict_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trebuchet.codegen.c, "generate", _broken_generate)
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c", strict=True)
    with pytest.raises(Exception) as info:
        compiled(torch.randn(6))
    err = trebuchet_error(info.value)
    assert err is not None and "injected codegen failure" in str(err), repr(info.value)


def test_c_compiler_error_falls_back(monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: pathlib.Path) -> None:
    """A C compiler that exists but fails: the warning carries its message."""
    fake_cc = tmp_path / "badcc"
    fake_cc.write_text("#!/bin/sh\necho 'badcc: internal error' >&2\nexit 1\n")
    fake_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fake_cc))
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "cache"))
    _expect_eager_fallback(torch.randn(6), match="badcc: internal error")


def test_gcc_only_flags_go_to_gcc_alone(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: pathlib.Path) -> None:
    """A compiler that is not GCC (here a clang stand-in that logs its arguments and runs
    gcc) gets the common flags only: clang rejects some of GCC's -fno-* loop options."""
    from trebuchet.runtime import cbuild

    log = tmp_path / "args.txt"
    fake_cc = tmp_path / "clangcc"
    fake_cc.write_text("#!/bin/sh\n"
                       "if [ \"$1\" = --version ]; then echo 'clang version 17.0.6'; exit 0; fi\n"
                       f"echo \"$@\" >> {log}\nexec gcc \"$@\"\n")
    fake_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fake_cc))
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "cache"))
    assert cbuild.is_gcc("gcc") and not cbuild.is_gcc(str(fake_cc))
    trebuchet.reset()
    x = torch.randn(6)
    torch.testing.assert_close(trebuchet.compile(_fn, target="c", strict=True)(x), _fn(x))
    args = log.read_text()
    assert "-O3" in args and not any(flag in args for flag in cbuild.GCC_FLAGS)


# ---- the kernel cache --------------------------------------------------------------

def _unwritable_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A cache folder that cannot be written: chmod 0o500, or (when that does not stop us,
    e.g. as root) a path below a regular file, which cannot be created."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        (ro / "probe").write_bytes(b"")
    except OSError:
        return ro
    (ro / "probe").unlink()
    ro.chmod(0o700)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    return afile / "cache"


def test_read_only_cache_dir_still_correct(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: pathlib.Path) -> None:
    cache = _unwritable_dir(tmp_path)
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(cache))
    monkeypatch.setattr(cbuild, "_fallback_dir", None)   # the warning is given once a process
    x = torch.randn(6)
    trebuchet.reset()
    compiled = trebuchet.compile(_fn, target="c", strict=True)
    try:
        with pytest.warns(trebuchet.TrebuchetWarning, match="not writable"):
            out = compiled(x)
        torch.testing.assert_close(out, _fn(x))
        assert trebuchet.stats()["kernels"] == 1
        assert not cache.exists() or not any(cache.iterdir())
    finally:
        if cbuild._fallback_dir is not None:
            shutil.rmtree(cbuild._fallback_dir, ignore_errors=True)
        if cache.parent.name == "readonly":
            cache.chmod(0o700)


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupted_cache_entry_is_rebuilt(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: pathlib.Path) -> None:
    """An entry corrupted on disk (here: a copy of a good cache, so no process has the
    library loaded) is detected by its checksum and rebuilt."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(good))
    x = torch.randn(6)
    trebuchet.reset()
    torch.testing.assert_close(trebuchet.compile(_fn, target="c", strict=True)(x), _fn(x))
    shutil.copytree(good, bad)
    libs = sorted(bad.glob("**/kernels.so"))
    assert libs
    for lib in libs:
        lib.write_bytes(b"garbage, not a shared library")
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(bad))
    trebuchet.reset()
    torch.testing.assert_close(trebuchet.compile(_fn, target="c", strict=True)(x), _fn(x))
    for lib in libs:
        data = lib.read_bytes()
        assert data.startswith(b"\x7fELF"), data[:32]
        assert _sha(lib) == (lib.parent / "kernels.sha256").read_text().strip()


def test_truncated_cache_entry_is_rebuilt(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: pathlib.Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(good))
    x = torch.randn(6)
    trebuchet.reset()
    trebuchet.compile(_fn, target="c", strict=True)(x)
    shutil.copytree(good, bad)
    for lib in bad.glob("**/kernels.so"):
        lib.write_bytes(lib.read_bytes()[:100])
    for digest in bad.glob("**/kernels.sha256"):
        digest.unlink()                                  # and the checksum is gone too
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(bad))
    trebuchet.reset()
    torch.testing.assert_close(trebuchet.compile(_fn, target="c", strict=True)(x), _fn(x))
    for lib in bad.glob("**/kernels.so"):
        assert _sha(lib) == (lib.parent / "kernels.sha256").read_text().strip()


CORRUPT_IN_PROCESS = textwrap.dedent("""
    import os, pathlib, sys, torch, trebuchet
    cache = pathlib.Path(sys.argv[1])
    fn = lambda a: torch.sin(a * 2) + 1
    x = torch.randn(6)
    torch.testing.assert_close(trebuchet.compile(fn, target="c", strict=True)(x), fn(x))
    libs = sorted(cache.glob("**/kernels.so"))
    assert libs
    for lib in libs:
        lib.write_bytes(b"garbage, not a shared library")
    trebuchet.reset()
    torch.testing.assert_close(trebuchet.compile(fn, target="c", strict=True)(x), fn(x))
    assert all(lib.read_bytes().startswith(b"\\x7fELF") for lib in libs)
    print("ok")
""")


def test_corrupted_cache_entry_rebuilt_in_the_same_process(tmp_path: pathlib.Path) -> None:
    # In a subprocess: the failure mode is a crash that would take the test worker down.
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", CORRUPT_IN_PROCESS, str(cache)],
                          env=subprocess_env(TREBUCHET_CACHE_DIR=str(cache)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        proc.returncode, proc.stderr[-2000:])


CONCURRENT = textwrap.dedent("""
    import pathlib, sys, time, torch, trebuchet
    ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    def fn(x, w):
        return torch.nn.functional.layer_norm(x, (64,), w, w) * 2 + torch.softmax(x, -1)
    x, w = torch.randn(16, 64), torch.randn(64)
    compiled = trebuchet.compile(fn, target="c", strict=True)
    ready.write_text("")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    torch.testing.assert_close(compiled(x, w), fn(x, w))
    assert trebuchet.stats()["kernels"] >= 1
    print("ok")
""")


def test_two_processes_fill_one_cache_at_once(tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    env = subprocess_env(TREBUCHET_CACHE_DIR=str(cache))
    procs, readies = [], []
    for k in range(2):
        ready = tmp_path / f"ready{k}"
        readies.append(ready)
        procs.append(subprocess.Popen([sys.executable, "-c", CONCURRENT, str(ready), str(go)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        deadline = time.monotonic() + 240
        while not all(r.exists() for r in readies) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        go.write_text("")                                  # both start compiling now
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out.strip().endswith("ok"), (p.returncode, err[-2000:])
    libs = list(cache.glob("**/kernels.so"))
    assert len(libs) == 1, libs                             # one entry, not two
    assert _sha(libs[0]) == (libs[0].parent / "kernels.sha256").read_text().strip()
    leftovers = [p for p in cache.rglob("*") if p.is_dir() and p.name.startswith("tmp")]
    assert not leftovers, leftovers


# ---------------------------------------------------------------- out-of-range indices

_WEIGHT = torch.randn(10, 4)
INDEXING = {
    "embedding": lambda w, i: F.embedding(i, w) * 2.0,
    "gather": lambda w, i: torch.gather(w, 0, i.reshape(-1, 1).expand(-1, 4)).sum(1),
    "index_select": lambda w, i: torch.index_select(w, 0, i.reshape(-1)).relu(),
    "advanced_index": lambda w, i: w[i] + 1.0,
}


@pytest.mark.parametrize("target", ["c", "reference"])
@pytest.mark.parametrize("name", sorted(INDEXING))
def test_out_of_range_index_raises_like_eager(name: str, target: str) -> None:
    """Eager raises on an index outside [-size, size); so must the compiled graph (never
    a clamped, silently wrong result), and it keeps working for good indices after."""
    fn = INDEXING[name]
    compiled = trebuchet.compile(fn, target=target, strict=True)
    negative_ok = name == "advanced_index"                  # w[-1] is the last row
    good = torch.tensor([[1, -1 if negative_ok else 3], [9, 0]])
    torch.testing.assert_close(compiled(_WEIGHT, good), fn(_WEIGHT, good))
    for bad_value in (10, -11 if negative_ok else -1, 1 << 40):
        bad = good.clone()
        bad[1, 0] = bad_value
        with pytest.raises((IndexError, RuntimeError)) as eager:
            fn(_WEIGHT, bad)                                # eager's behaviour
        with pytest.raises(eager.type, match="index out of range") as ours:
            compiled(_WEIGHT, bad)
        assert ours.type is eager.type      # code catching eager's exception type works
    torch.testing.assert_close(compiled(_WEIGHT, good), fn(_WEIGHT, good))


INT_DIVISION = {
    "floor_divide": lambda a, b: (a // b) + 1,
    "remainder": lambda a, b: (a % b) * 2,
    "fmod": lambda a, b: torch.fmod(a, b) - 1,
    "trunc_div": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
}


@pytest.mark.parametrize("target", ["c", "reference"])
@pytest.mark.parametrize("name", sorted(INT_DIVISION))
def test_integer_division_by_zero_raises_like_eager(name: str, target: str) -> None:
    fn = INT_DIVISION[name]
    compiled = trebuchet.compile(fn, target=target, strict=True)
    a, b = torch.tensor([7, -7, 5, 0]), torch.tensor([2, 3, -4, 1])
    torch.testing.assert_close(compiled(a, b), fn(a, b))
    zero = torch.tensor([2, 0, -4, 1])
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        fn(a, zero)                                          # eager's behaviour
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        compiled(a, zero)
    torch.testing.assert_close(compiled(a, b), fn(a, b))
    fa, fz = a.float(), zero.float()                         # float: inf/nan, no error
    torch.testing.assert_close(trebuchet.compile(fn, target=target, strict=True)(fa, fz), fn(fa, fz),
                               equal_nan=True)
