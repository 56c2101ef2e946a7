"""The runtime's buffer recycling: a buffer is reused across calls only when nothing
else refers to it, so results the caller keeps never change under it."""
from __future__ import annotations

import torch

import trebuchet


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x * 2 + 1)


def test_kept_output_is_not_overwritten() -> None:
    f = trebuchet.compile(_fn, strict=True)
    a, b = torch.randn(64, 32), torch.randn(64, 32)
    ya = f(a)
    ya_copy = ya.clone()
    yb = f(b)
    torch.testing.assert_close(ya, ya_copy)
    torch.testing.assert_close(yb, _fn(b))
    assert ya.data_ptr() != yb.data_ptr()


def test_released_output_is_reused() -> None:
    f = trebuchet.compile(_fn, strict=True)
    a = torch.randn(64, 32)
    ptr = f(a).data_ptr()          # dropped at once
    y = f(a)
    torch.testing.assert_close(y, _fn(a))
    assert y.data_ptr() == ptr


def test_views_and_numpy_keep_the_buffer_alive() -> None:
    f = trebuchet.compile(_fn, strict=True)
    a, b = torch.randn(64, 32), torch.randn(64, 32)
    view = f(a)[3:5]
    expected = view.clone()
    arr = f(a).numpy()
    arr_expected = arr.copy()
    for _ in range(3):
        f(b)
    torch.testing.assert_close(view, expected)
    assert (arr == arr_expected).all()


def test_saved_for_backward_is_not_reused() -> None:
    def g(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * 3).exp()

    f = trebuchet.compile(g, strict=True)
    x1 = torch.randn(32, 16, requires_grad=True)
    x2 = torch.randn(32, 16, requires_grad=True)
    y1 = f(x1)
    y2 = f(x2)           # a second forward before the first backward
    y1.sum().backward()
    y2.sum().backward()
    r1 = x1.detach().requires_grad_()
    r2 = x2.detach().requires_grad_()
    g(r1).sum().backward()
    g(r2).sum().backward()
    torch.testing.assert_close(x1.grad, r1.grad)
    torch.testing.assert_close(x2.grad, r2.grad)


def test_output_fed_back_as_input() -> None:
    f = trebuchet.compile(lambda x: x * 0.5 + 1, strict=True)
    x = torch.randn(100)
    ref = x.clone()
    for _ in range(4):
        x = f(x)
        ref = ref * 0.5 + 1
    torch.testing.assert_close(x, ref)


def _source(n: int, bad: int | None = None) -> str:
    """A prelude and n kernels (kernel `bad` does not compile)."""
    from trebuchet.codegen.c import PRELUDE
    kernels = [f"// kernel{i}: test\nvoid kernel{i}(float* out) {{ out[0] = t_expf({i}.0f); }}"
               if i != bad else f"// kernel{i}: test\nvoid kernel{i}(float* out) {{ out[0] = nope; }}"
               for i in range(n)]
    return "\n\n".join([PRELUDE, *kernels]) + "\n"


def test_large_sources_compile_in_parallel_units(tmp_path, monkeypatch) -> None:
    import ctypes
    import math

    from trebuchet.runtime import cbuild

    monkeypatch.setattr(cbuild, "SPLIT_BYTES", 0)
    source = _source(5)
    units = cbuild.split_units(source, 2)
    assert len(units) == 2
    assert sorted(u.count("void kernel") for u in units) == [2, 3]
    lib = cbuild.load(cbuild.build(source, "gcc", (), tmp_path))
    out = (ctypes.c_float * 1)()
    for i in range(5):
        getattr(lib, f"kernel{i}")(out)
        assert math.isclose(out[0], math.exp(i), rel_tol=1e-6)


def test_a_failing_unit_raises(tmp_path, monkeypatch) -> None:
    import pytest

    from trebuchet.errors import TrebuchetCompileError
    from trebuchet.runtime import cbuild

    monkeypatch.setattr(cbuild, "SPLIT_BYTES", 0)
    with pytest.raises(TrebuchetCompileError, match="nope"):
        cbuild.build(_source(4, bad=2), "gcc", (), tmp_path)


def test_split_units_with_sin_and_cos_link(tmp_path, monkeypatch) -> None:
    """Every unit of a split build includes the prelude; its out-of-line sin/cos helpers
    (defined under their vector-ABI names) must not clash at link time."""
    import torch

    import trebuchet
    from trebuchet.runtime import cbuild

    monkeypatch.setattr(cbuild, "SPLIT_BYTES", 0)
    monkeypatch.setattr(cbuild, "_compile_jobs", lambda: 2)
    split = cbuild.split_units
    units: list[int] = []
    monkeypatch.setattr(cbuild, "split_units", lambda *a: units.append(len(split(*a))) or split(*a))

    def f(x, y):
        a = torch.sin(x) + 1
        b = torch.cos(y).sum(0)
        c = torch.sin(y * 3) * torch.cos(x)
        return a, b, c.amax(1)

    compiled = trebuchet.compile(f, strict=True, graph_cache=False, cache_dir=str(tmp_path))
    x, y = torch.randn(64, 33), torch.randn(64, 33)
    for got, want in zip(compiled(x, y), f(x, y)):
        torch.testing.assert_close(got, want)
    assert units and units[0] >= 2, units


def test_compile_returns_while_the_kernels_build(monkeypatch) -> None:
    """The C build runs on a background thread: compile_graph returns before it ends,
    the first call waits for it; in strict mode the compile builds first."""
    import threading

    from trebuchet.config import Options
    from trebuchet.runtime import pipeline

    gate, started = threading.Event(), threading.Event()
    build = pipeline.instantiate_artifact

    def held_build(artifact, options):
        started.set()
        assert gate.wait(30)
        return build(artifact, options)

    monkeypatch.setattr(pipeline, "instantiate_artifact", held_build)
    from torch.fx.experimental.proxy_tensor import make_fx

    gm = make_fx(lambda x: torch.sin(x) * 2, tracing_mode="fake")(torch.randn(7))
    fn = pipeline.compile_graph(gm, Options.from_env(target="c", graph_cache=False), "inference")
    assert isinstance(fn, pipeline.Building) and started.wait(30)
    gate.set()
    x = torch.randn(7)
    torch.testing.assert_close(fn([x])[0], torch.sin(x) * 2)
    gate.clear()
    threading.Timer(0.2, gate.set).start()
    strict = pipeline.compile_graph(gm, Options.from_env(target="c", graph_cache=False, strict=True),
                                    "inference")
    assert gate.is_set() and not isinstance(strict, pipeline.Building)


def test_a_forked_child_builds_what_the_parent_had_not(monkeypatch) -> None:
    """A process forked while a build runs has no build thread: its first call builds
    the kernels itself instead of waiting forever."""
    import os
    import signal
    import threading
    import time

    from torch.fx.experimental.proxy_tensor import make_fx

    from trebuchet.config import Options
    from trebuchet.runtime import pipeline

    if not hasattr(os, "fork"):
        return
    parent, gate = os.getpid(), threading.Event()
    build = pipeline.instantiate_artifact

    def held_build(artifact, options):
        if os.getpid() == parent:
            assert gate.wait(30)
        return build(artifact, options)

    monkeypatch.setattr(pipeline, "instantiate_artifact", held_build)
    gm = make_fx(lambda x: torch.cos(x) + 3, tracing_mode="fake")(torch.randn(5))
    fn = pipeline.compile_graph(gm, Options.from_env(target="c", graph_cache=False), "inference")
    x = torch.randn(5)
    pid = os.fork()
    if pid == 0:                                  # the child: exit code 0 if right
        code = 2
        try:
            code = 0 if torch.allclose(fn([x])[0], torch.cos(x) + 3) else 1
        finally:
            os._exit(code)
    gate.set()
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    torch.testing.assert_close(fn([x])[0], torch.cos(x) + 3)
