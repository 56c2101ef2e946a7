"""Float32 products through oneDNN (runtime/onednn.py): the same answers as eager's
BLAS within float32 rounding, ATen's own call wherever oneDNN's op does not apply, and
the `matmul` option deciding which the wrapper calls."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import trebuchet
from trebuchet.runtime import onednn, pipeline

needs_onednn = pytest.mark.skipif(not onednn.use_onednn_matmul("onednn"),
                                  reason="no oneDNN in this torch build")


def _routed(monkeypatch: pytest.MonkeyPatch) -> list:
    """The (op, dtype) keys of the routes each wrapper written from now on was given."""
    seen: list = []
    write = pipeline.write_wrapper

    def recording(*args, **kwargs):
        seen.append(sorted(str(k) for k in (kwargs.get("routes") or {})))
        return write(*args, **kwargs)
    monkeypatch.setattr(pipeline, "write_wrapper", recording)
    return seen


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.relu(torch.nn.functional.linear(x, w, b)) @ w


CASES = {
    # (m, k, n): large enough for oneDNN (MIN_FLOPS), small (the BLAS), an empty inner
    # dimension (oneDNN's op fails on it), an empty batch
    "large": (96, 160, 192), "small": (3, 5, 7), "empty_k": (64, 0, 512), "empty_m": (0, 256, 64),
}


@needs_onednn
@pytest.mark.parametrize("case", sorted(CASES))
def test_linear_and_mm_match_eager(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    m, k, n = CASES[case]
    routes = _routed(monkeypatch)
    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    fn = trebuchet.compile(_linear, strict=True, graph_cache=False, matmul="onednn")
    with torch.no_grad():
        out = fn(x, w, b)
    torch.testing.assert_close(out, _linear(x, w, b))
    assert routes and all(r == sorted(str(k) for k in onednn.ROUTES) for r in routes)


@needs_onednn
def test_training_step_gradients_match_eager() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 384), torch.nn.GELU(), torch.nn.Linear(384, 128))
    x = torch.randn(64, 256, requires_grad=True)
    compiled = trebuchet.compile(model, strict=True, graph_cache=False, matmul="onednn")
    compiled(x).square().sum().backward()
    got = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad()
    x.grad = None
    model(x).square().sum().backward()
    want = [p.grad for p in model.parameters()] + [x.grad]
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("bias", ["broadcast_row", "strided", "matrix", "scalar"])
def test_addmm_biases_oneDNN_does_not_take_are_exact(bias: str) -> None:
    a, mat = torch.randn(128, 128), torch.randn(128, 256)
    biases = {"broadcast_row": torch.randn(1, 256).expand(128, 256),
              "strided": torch.randn(512)[::2], "matrix": torch.randn(128, 256),
              "scalar": torch.randn(1)}
    c = biases[bias]
    got = onednn.addmm(c, a, mat)
    torch.testing.assert_close(got, torch.addmm(c, a, mat))


@needs_onednn
def test_addmm_with_beta_and_alpha_keeps_atens_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def fn(c, a, b):
        return torch.addmm(c, a, b, beta=0.5, alpha=2.0)
    c, a, b = torch.randn(256), torch.randn(128, 128), torch.randn(128, 256)
    out = trebuchet.compile(fn, strict=True, graph_cache=False, matmul="onednn")(c, a, b)
    torch.testing.assert_close(out, fn(c, a, b))


@needs_onednn
def test_nan_and_inf_propagate() -> None:
    a, b = torch.randn(128, 128), torch.randn(128, 256)
    a[3, 7] = float("nan")
    a[5, 0] = float("inf")
    b[:, 9] = 0.0
    torch.testing.assert_close(onednn.mm(a, b), torch.mm(a, b), equal_nan=True)


def test_blas_option_writes_no_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = _routed(monkeypatch)
    x, w = torch.randn(96, 160), torch.randn(160, 192)
    out = trebuchet.compile(torch.mm, strict=True, graph_cache=False, matmul="blas")(x, w)
    torch.testing.assert_close(out, torch.mm(x, w))
    assert routes == [[]]


def test_timing_runs_on_real_tensors_inside_a_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    # "auto" decides while TorchDynamo's fake tensor mode is active: a timing of fake
    # tensors would decide on nothing (it once made "auto" always say no).
    timed: list = []

    def best(fn, repeats: int = 5) -> float:
        timed.append(fn())
        return 1.0
    monkeypatch.setattr(onednn, "_best", best)
    with FakeTensorMode():
        onednn.onednn_faster.__wrapped__()
    assert len(timed) == 2 and not any(isinstance(t, FakeTensor) for t in timed)


@needs_onednn
def test_onednn_switched_off_at_call_time_uses_the_blas(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    linear = onednn._linear
    monkeypatch.setattr(onednn, "_linear", lambda *a: calls.append(1) or linear(*a))
    a, b = torch.randn(128, 128), torch.randn(128, 256)
    onednn.mm(a, b)
    assert calls == [1]
    with torch.backends.mkldnn.flags(enabled=False):
        torch.testing.assert_close(onednn.mm(a, b), torch.mm(a, b), rtol=0, atol=0)
    assert calls == [1]


@needs_onednn
@pytest.mark.parametrize("matmul, kernels", [("onednn", 0), ("blas", 1)])
def test_bias_is_added_inside_the_onednn_product(matmul: str, kernels: int) -> None:
    # float32 addmm stays whole when oneDNN computes it (frontend/decompositions.py): the
    # bias goes into the product instead of an add kernel of its own over the result.
    x, w, b = torch.randn(2, 96, 160), torch.randn(192, 160), torch.randn(192)
    fn = trebuchet.compile(torch.nn.functional.linear, strict=True, graph_cache=False,
                           matmul=matmul)
    torch.testing.assert_close(fn(x, w, b), torch.nn.functional.linear(x, w, b))
    assert trebuchet.stats()["kernels"] == kernels
