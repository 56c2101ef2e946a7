"""Attention through torch.compile: scaled_dot_product_attention stays a library call,
and its gradients match eager (a decomposed forward once fed the flash backward the
attention matrix in place of its log-sum-exp)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import trebuchet


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_forward_and_backward_match_eager(causal: bool, with_mask: bool) -> None:
    if causal and with_mask:
        pytest.skip("sdpa takes either a mask or is_causal")
    torch.manual_seed(0)
    mask = torch.randn(16, 16) if with_mask else None

    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return (torch.tanh(out) * 2).sum()

    inputs = [torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3)]
    ref = [t.detach().clone().requires_grad_() for t in inputs]
    trebuchet.compile(f, strict=True)(*inputs).backward()
    f(*ref).backward()
    for a, b in zip(inputs, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    assert trebuchet.stats()["graph_fallbacks"] == 0
