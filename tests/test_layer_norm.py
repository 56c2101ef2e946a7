"""Layer norm, its backward and GELU's backward kept whole through AOTAutograd's tracing
and lowered by rules written as the steps of PyTorch's decompositions
(lowering/layer_norm.py, lowering/pointwise.py `gelu_backward`): results as eager's, in
float32 and the low-precision types, with and without the affine parameters."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import trebuchet

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# eager's float16/bfloat16 kernels round in other places than the decomposition we follow
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 8e-2},
       torch.float16: {"rtol": 5e-3, "atol": 1e-2}}


def _run(fn, inputs: list[torch.Tensor], grad: torch.Tensor) -> list[torch.Tensor]:
    inputs = [t.clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in inputs]


@pytest.mark.parametrize("dtype,affine", itertools.product(DTYPES, ["both", "weight", "bias", "none"]))
def test_layer_norm_and_gelu_training_lowered_whole(dtype: torch.dtype, affine: str) -> None:
    torch.manual_seed(0)
    hidden = 24
    x = torch.randn(3, 5, hidden).to(dtype)
    params = [torch.empty(hidden).uniform_(0.5, 1.5).to(dtype) if affine in ("both", "weight") else None,
              torch.empty(hidden).uniform_(-1, 1).to(dtype) if affine in ("both", "bias") else None]
    given = [p for p in params if p is not None]

    def fn(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        it = iter(ps)
        w, b = (next(it) if p is not None else None for p in params)
        return F.gelu(F.layer_norm(x * 2, (hidden,), w, b))

    grad = torch.randn(3, 5, hidden).to(dtype)
    trebuchet.reset()
    got = _run(trebuchet.compile(fn, target="c", strict=True), [x, *given], grad)
    want = _run(fn, [x, *given], grad)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, **TOL[dtype])
    stats = trebuchet.stats()
    for op in ("aten.native_layer_norm.default", "aten.native_layer_norm_backward.default",
               "aten.gelu_backward.default"):
        assert stats["lowered_ops"].get(op) == 1, stats["lowered_ops"]
    assert not stats["fallback_ops"] and stats["graph_fallbacks"] == 0


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_as_the_decomposition(approximate: str) -> None:
    """In float64 the lowered GELU backward is eager's to rounding."""
    torch.manual_seed(1)
    x, grad = torch.randn(64, 33, dtype=torch.float64) * 3, torch.randn(64, 33, dtype=torch.float64)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=approximate)

    got = _run(trebuchet.compile(fn, target="c", strict=True), [x], grad)
    want = _run(fn, [x], grad)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-12)


def test_layer_norm_over_no_elements_as_eager() -> None:
    """Normalized over no elements, eager's mean is 0 (a mean of nothing would be NaN):
    the op runs as eager's."""
    x = torch.randn(2, 0)

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.native_layer_norm(x, (0,), None, None, 1e-5)

    got, want = trebuchet.compile(fn, target="c")(x), fn(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, equal_nan=True)


@pytest.mark.parametrize("wanted", ["input", "weight", "weight_and_bias"])
def test_layer_norm_backward_of_some_outputs(wanted: str) -> None:
    """Gradients of only some of the inputs (the backward's output mask): the same values
    as eager's, and only their kernels (a weight gradient alone is one column kernel)."""
    torch.manual_seed(2)
    hidden = 16
    x = torch.randn(6, hidden, requires_grad=wanted == "input")
    w = torch.rand(hidden).add_(0.5).requires_grad_(wanted != "input")
    b = torch.randn(hidden).requires_grad_(wanted == "weight_and_bias")

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (hidden,), w, b)

    grad = torch.randn(6, hidden)
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True)
    out = compiled(x, w, b)
    forward = trebuchet.stats()["kernels"]
    out.backward(grad)
    got = [t.grad for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    fn(x, w, b).backward(grad)
    for g, t in zip(got, (x, w, b), strict=True):
        if t.requires_grad:
            torch.testing.assert_close(g, t.grad)
        else:
            assert g is None
    stats = trebuchet.stats()
    assert stats["lowered_ops"].get("aten.native_layer_norm_backward.default") == 1
    if wanted == "weight":
        assert stats["kernels"] - forward == 1, stats["kernel_ops"]
