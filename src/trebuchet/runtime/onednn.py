"""Float32 matrix products through oneDNN where it is the faster library on this CPU.

The wrapper (runtime/wrapper.py) calls `mm` and `addmm` below in place of ATen's
`mm`/`addmm` for float32 CPU tensors, when `use_onednn_matmul` says so at compile time.
Both are ATen's own ops: eager's `mm` calls the BLAS (MKL in PyTorch's x86 builds), and
`mkldnn::_linear_pointwise` runs oneDNN's inner product, a library op of the same CPU
build. On the AMD EPYC (Zen 4) we measure on, MKL does not use its AVX-512 kernels and
oneDNN's are about twice as fast: ViT-Tiny's four GEMM shapes 1.7/0.6/2.3/2.3 ms with
`torch.addmm` against 0.9/0.3/1.0/1.1 ms (batch 8 x 197 tokens, width 192); BERT's
(1024 x 768 x 3072) 23.5 ms against 11.1 ms. Elsewhere the two may be even, so "auto"
times one product both ways once per process and keeps oneDNN only where it is clearly
faster.

The results are the same products summed in another order: within float32 rounding of
eager's (as another BLAS's would be), not bit-identical to them. Products under
`MIN_FLOPS` stay with the BLAS, where oneDNN's fixed cost per call (primitive lookup,
about 10 us) outweighs its speed; so do the cases `_linear_pointwise` does not cover:
an empty inner dimension (it fails), a bias that is not one contiguous value per output
column (a strided one gave wrong sums in our probe), `beta`/`alpha` other than 1.
"""
from __future__ import annotations

import functools
import time

import torch
from torch.utils._python_dispatch import _disable_current_modes

# The product of the three sizes below which the BLAS stays faster (the 2-core EPYC:
# (64 x 256 x 256) 58 us BLAS vs 44 us oneDNN, (16 x 128 x 128) 12 us vs 19 us).
MIN_FLOPS = 1 << 21

_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_mkldnn_enabled = getattr(torch._C, "_get_mkldnn_enabled", lambda: True)


def _use(a: torch.Tensor, b: torch.Tensor) -> bool:
    m, k = a.shape
    # oneDNN switched off at call time (`torch.backends.mkldnn.flags(enabled=False)`):
    # the BLAS, as eager would.
    return k > 0 and m * k * b.shape[1] >= MIN_FLOPS and _mkldnn_enabled()


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`torch.mm(a, b)` for float32 matrices, by oneDNN where it pays."""
    if _use(a, b):
        return _linear(a, b.t(), None, "none", [], "")
    return torch.mm(a, b)


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`torch.addmm(bias, a, b)` (beta = alpha = 1) for float32, by oneDNN where it pays:
    a bias of one contiguous value per column is oneDNN's own bias; others go to the BLAS."""
    if bias.dim() == 1 and bias.shape[0] == b.shape[1] and bias.stride(0) == 1 and _use(a, b):
        return _linear(a, b.t(), bias, "none", [], "")
    return torch.addmm(bias, a, b)


# What the wrapper calls in place of an ATen op, by (op, result dtype), on CPU tensors
# (calls with keyword arguments, addmm's beta/alpha, keep ATen's own op).
ROUTES = {(torch.ops.aten.mm.default, torch.float32): mm,
          (torch.ops.aten.addmm.default, torch.float32): addmm}


def applies(device_type: str, choice: str) -> bool:
    """Whether a graph on `device_type` sends its float32 products to oneDNN (`ROUTES`):
    CPU graphs, when `use_onednn_matmul(choice)`."""
    return device_type == "cpu" and use_onednn_matmul(choice)


def use_onednn_matmul(choice: str) -> bool:
    """Whether compiled CPU graphs send float32 products to oneDNN: the `matmul` option
    ("onednn", "blas", or "auto": when oneDNN is enabled in torch and measured faster)."""
    if choice == "blas" or _linear is None or not torch.backends.mkldnn.is_available():
        return False
    if choice == "onednn":
        return True
    return torch.backends.mkldnn.enabled and onednn_faster()


@functools.cache
def onednn_faster() -> bool:
    """One (256 x 512 x 512) float32 product timed both ways (best of 5, after a warm-up);
    True when oneDNN takes under 0.8x the BLAS's time. Once per process (~10 ms)."""
    try:
        # Compiles run under TorchDynamo's fake tensor mode: time real tensors.
        with _disable_current_modes(), torch.no_grad():
            g = torch.Generator().manual_seed(0)
            a = torch.randn(256, 512, generator=g)
            b = torch.randn(512, 512, generator=g)
            blas = _best(lambda: torch.mm(a, b))
            onednn = _best(lambda: _linear(a, b.t(), None, "none", [], ""))
    except Exception:  # noqa: BLE001 - a library that fails here is not used
        return False
    return onednn < 0.8 * blas


def _best(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
