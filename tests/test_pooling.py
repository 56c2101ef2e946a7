"""Pooling (lowering/pooling.py, avg_pooling.py) and eval-mode batch norm (lowering/norms.py)
against eager.

Max pool with and without indices and its backward, avg pool 2d/3d and adaptive avg/max
pool 1-3d with their backwards, on the C and reference targets, contiguous and
channels_last, float32/float64/bfloat16/float16, with padding, dilation, ceil_mode,
count_include_pad, divisor_override, NaN and -inf in windows; each op must be lowered (no
fallback). The average pools and every backward match eager bit for bit (also on the
Triton target, under its interpreter, for a bfloat16 sample); a small CNN's training step
with each kind of pool runs with no op left to eager.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

import trebuchet

TARGETS = ["c", "reference"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (kernel, stride, padding, dilation, ceil_mode)
WINDOWS = [(3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 2, False), (3, 2, 1, 1, True),
           ((3, 2), (2, 1), (1, 0), 1, True)]


def _input(dtype: torch.dtype, channels_last: bool, special: bool = True) -> torch.Tensor:
    x = torch.randn(2, 5, 11, 9, dtype=dtype)
    if special:
        x[0, 0, 3, 3] = float("nan")
        x[1, 1, 2, 2] = float("-inf")
        x[1, 2, 0:3, 0:3] = float("-inf")       # a whole window of -inf: its first index
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _input3d(dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    x = torch.randn(2, 3, 7, 6, 5, dtype=dtype)
    return x.to(memory_format=torch.channels_last_3d) if channels_last else x


def _check(fn, target: str, *xs: torch.Tensor, grad: bool = False, op: str, exact: bool = False) -> None:
    """fn compiled (strict) against eager: values, the gradient and its strides if `grad`
    (bit for bit if `exact`), `op` lowered and nothing left to eager."""
    tol = {"rtol": 0, "atol": 0} if exact else {}
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target=target, strict=True)
    if grad:
        xs_e = [x.detach().clone().requires_grad_() for x in xs]
        xs_c = [x.detach().clone().requires_grad_() for x in xs]
        out_e, out_c = fn(*xs_e), compiled(*xs_c)
        g = torch.randn_like(out_e)
        out_e.backward(g)
        out_c.backward(g)
        torch.testing.assert_close(xs_c[0].grad, xs_e[0].grad, **tol)
        assert xs_c[0].grad.stride() == xs_e[0].grad.stride()
    else:
        out_e, out_c = fn(*xs), compiled(*xs)
    torch.testing.assert_close(out_c, out_e, equal_nan=True, **tol)
    for o_c, o_e in zip(*(o if isinstance(o, tuple) else (o,) for o in (out_c, out_e))):
        assert o_c.stride() == o_e.stride()
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["lowered_ops"].get(op, 0) >= 1, stats["lowered_ops"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_with_indices(target: str, dtype: torch.dtype, channels_last: bool, full: bool) -> None:
    if target == "reference" and dtype in (torch.float64, torch.float16) and not full:
        pytest.skip("the reference target's float64/float16 sweep runs with --full")
    x = _input(dtype, channels_last)
    for k, s, p, d, c in WINDOWS:
        _check(lambda a: F.max_pool2d(a, k, s, p, d, ceil_mode=c, return_indices=True), target, x,
               op="aten.max_pool2d_with_indices.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_backward(target: str, dtype: torch.dtype, channels_last: bool) -> None:
    x = _input(dtype, channels_last, special=False)
    x[0, 0, 1:3, 1:3] = 1.0                  # ties: the first maximum takes the gradient
    for k, s, p, d, c in WINDOWS:
        _check(lambda a: F.max_pool2d(a, k, s, p, d, ceil_mode=c), target, x, grad=True,
               op="aten.max_pool2d_with_indices_backward.default")


@pytest.mark.parametrize("target", TARGETS)
def test_max_pool3d_and_unbatched(target: str) -> None:
    x = torch.randn(2, 3, 5, 6, 7)
    _check(lambda a: F.max_pool3d(a, 3, 2, 1, return_indices=True), target, x,
           op="aten.max_pool3d_with_indices.default")
    _check(lambda a: F.max_pool3d(a, 2), target, x, grad=True,
           op="aten.max_pool3d_with_indices_backward.default")
    _check(lambda a: F.max_pool2d(a, 3, 2, 1, return_indices=True), target, torch.randn(4, 9, 8),
           op="aten.max_pool2d_with_indices.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool2d(target: str, dtype: torch.dtype, channels_last: bool) -> None:
    x = _input(dtype, channels_last, special=False)
    for (k, s, p, d, c), include_pad in itertools.product(WINDOWS, [True, False]):
        if d == 1:
            _check(lambda a: F.avg_pool2d(a, k, s, p, ceil_mode=c, count_include_pad=include_pad),
                   target, x, op="aten.avg_pool2d.default")
    _check(lambda a: F.avg_pool2d(a, 3, 2, 1, divisor_override=5), target, x,
           op="aten.avg_pool2d.default")


def test_large_window_runs_eagerly() -> None:
    """A forward over more than MAX_WINDOW positions runs eagerly; its backward, where each
    input is covered by one output, is still lowered."""
    x = torch.randn(1, 2, 20, 20)
    for fn, fwd, bwd in [(lambda a: F.max_pool2d(a, 8) + 1, "aten.max_pool2d_with_indices.default",
                          "aten.max_pool2d_with_indices_backward.default"),
                         (lambda a: F.avg_pool2d(a, 8, 6, 2, ceil_mode=True) + 1, "aten.avg_pool2d.default",
                          "aten.avg_pool2d_backward.default")]:
        trebuchet.reset()
        a_e, a_c = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = trebuchet.compile(fn, target="c")(a_c)
        ref = fn(a_e)
        torch.testing.assert_close(out, ref)
        g = torch.randn_like(ref)
        out.backward(g)
        ref.backward(g)
        torch.testing.assert_close(a_c.grad, a_e.grad, rtol=0, atol=0)
        stats = trebuchet.stats()
        assert fwd in stats["fallback_ops"] and bwd in stats["lowered_ops"], stats


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_eval(target: str, dtype: torch.dtype, channels_last: bool, affine: bool) -> None:
    bn = torch.nn.BatchNorm2d(5, affine=affine).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if affine:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    x = _input(torch.float32, channels_last, special=False).to(dtype)
    bn = bn.to(dtype) if dtype == torch.float64 else bn     # bfloat16 input, float32 params
    with torch.no_grad():
        _check(lambda a: torch.relu(bn(a)), target, x,
               op="aten._native_batch_norm_legit_no_training.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_avg_pool2d(target: str, dtype: torch.dtype, channels_last: bool) -> None:
    x = _input(dtype, channels_last, special=False)         # 11 x 9
    for size in [(3, 4), (7, 7), (11, 9), (4, 3), (5, 2)]:
        _check(lambda a: F.adaptive_avg_pool2d(a, size), target, x,
               op="aten._adaptive_avg_pool2d.default")


# avg pool windows (kernel, stride, padding, ceil_mode): odd sizes, overlapping and
# disjoint windows, windows that start in the padding or run past the input (ceil_mode)
AVG_WINDOWS = [(3, 2, 1, False), (2, 2, 0, False), (3, 1, 1, False), (3, 2, 1, True),
               ((3, 2), (2, 1), (1, 0), True), (2, 3, 1, True)]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool2d_backward(target: str, dtype: torch.dtype, channels_last: bool, full: bool) -> None:
    x = _input(dtype, channels_last, special=False)       # 11 x 9
    cases = list(itertools.product(AVG_WINDOWS, [True, False]))
    for i, ((k, s, p, c), include_pad) in enumerate(cases):
        if full or i % 3 == 0:
            _check(lambda a: F.avg_pool2d(a, k, s, p, ceil_mode=c, count_include_pad=include_pad),
                   target, x, grad=True, exact=True, op="aten.avg_pool2d_backward.default")
    # 257 is not a bfloat16: eager's backward divides by it rounded to 256, its forward by 257
    for divisor in [5, 257]:
        _check(lambda a: F.avg_pool2d(a, 3, 2, 1, ceil_mode=True, divisor_override=divisor), target, x,
               grad=True, exact=True, op="aten.avg_pool2d_backward.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool1d_3d(target: str, channels_last: bool) -> None:
    # eager has no bfloat16 avg_pool3d on CPU
    x = torch.randn(2, 3, 7, 6, 5)
    x = x.to(memory_format=torch.channels_last_3d) if channels_last else x
    for k, s, p, c, include_pad in [(3, 2, 1, True, False), ((2, 3, 2), (1, 2, 2), (1, 1, 0), False, True)]:
        _check(lambda a: F.avg_pool3d(a, k, s, p, ceil_mode=c, count_include_pad=include_pad), target, x,
               grad=True, exact=True, op="aten.avg_pool3d_backward.default")
    _check(lambda a: F.avg_pool3d(a, 3, 2, 1, divisor_override=7), target, x, exact=True,
           op="aten.avg_pool3d.default")
    if not channels_last:           # avg_pool1d arrives as avg_pool2d
        _check(lambda a: F.avg_pool1d(a, 3, 2, 1, ceil_mode=True), target, torch.randn(3, 4, 13),
               grad=True, exact=True, op="aten.avg_pool2d_backward.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_avg_pool_backward(target: str, dtype: torch.dtype, channels_last: bool, full: bool) -> None:
    x = _input(dtype, channels_last, special=False)         # 11 x 9
    # smaller and larger than the input (windows overlapping, inputs read by 3 outputs)
    for size in [(3, 4), (4, 3), (5, 2), (13, 17)] if full else [(4, 3), (13, 17)]:
        _check(lambda a: F.adaptive_avg_pool2d(a, size), target, x, grad=True, exact=True,
               op="aten._adaptive_avg_pool2d_backward.default")
    x3 = _input3d(dtype, channels_last)
    _check(lambda a: F.adaptive_avg_pool3d(a, (3, 4, 2)), target, x3, grad=True, exact=True,
           op="aten._adaptive_avg_pool3d_backward.default")
    if not channels_last:           # 1d arrives as 2d
        _check(lambda a: F.adaptive_avg_pool1d(a, 5), target, torch.randn(3, 4, 13, dtype=dtype),
               grad=True, exact=True, op="aten._adaptive_avg_pool2d_backward.default")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_max_pool(target: str, dtype: torch.dtype, channels_last: bool) -> None:
    x = _input(dtype, channels_last)          # NaN, -inf and a window of -inf
    for size in [(4, 3), (13, 17)]:
        _check(lambda a: F.adaptive_max_pool2d(a, size, return_indices=True), target, x, exact=True,
               op="aten.adaptive_max_pool2d.default")
    x = _input(dtype, channels_last, special=False)
    x[0, 0, 1:3, 1:3] = 1.0                  # ties: the first maximum takes the gradient
    for size in [(4, 3), (5, 2), (13, 17)]:
        _check(lambda a: F.adaptive_max_pool2d(a, size), target, x, grad=True, exact=True,
               op="aten.adaptive_max_pool2d_backward.default")
    x3 = _input3d(dtype, channels_last)
    _check(lambda a: F.adaptive_max_pool3d(a, (3, 4, 2)), target, x3, grad=True, exact=True,
           op="aten.adaptive_max_pool3d_backward.default")


POOLS = {"avg": lambda: torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True),
         "adaptive_avg": lambda: torch.nn.AdaptiveAvgPool2d((3, 2)),
         "global_avg": lambda: torch.nn.AdaptiveAvgPool2d(1),
         "adaptive_max": lambda: torch.nn.AdaptiveMaxPool2d((3, 2)),
         "max": lambda: torch.nn.MaxPool2d(3, 2, 1)}


@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_cnn_training_step_lowers_pools(pool: str, channels_last: bool) -> None:
    """conv -> bn -> relu -> pool -> linear: a training step with no op left to eager;
    a global average pool's backward (grad / (H*W) broadcast) fuses into relu's backward."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), POOLS[pool](), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    x = torch.randn(2, 3, 9, 9)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    model(x)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    eager = copy.deepcopy(model)
    trebuchet.reset()
    out = trebuchet.compile(model, strict=True)(x)
    out.sum().backward()
    ref = eager(x)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    if pool == "global_avg":        # the mean's backward: no kernel of its own
        kernels = [ops for ops in stats["kernel_ops"] if "aten.div.Scalar" in ops]
        assert kernels and all("aten.where.self" in ops for ops in kernels), stats["kernel_ops"]


@pytest.mark.parametrize("channels_last", [False, True])
def test_triton_pool_backwards(channels_last: bool) -> None:
    """The Triton target (CPU tensors under its interpreter) gives the same bits."""
    pytest.importorskip("triton")
    x = _input(torch.bfloat16, channels_last, special=False)
    _check(lambda a: F.avg_pool2d(a, 3, 2, 1, ceil_mode=True, divisor_override=257), "triton", x,
           grad=True, exact=True, op="aten.avg_pool2d_backward.default")
    _check(lambda a: F.adaptive_avg_pool2d(a, (13, 4)), "triton", x, grad=True, exact=True,
           op="aten._adaptive_avg_pool2d_backward.default")
    _check(lambda a: F.adaptive_max_pool2d(a, (4, 3)), "triton", x, grad=True, exact=True,
           op="aten.adaptive_max_pool2d_backward.default")
