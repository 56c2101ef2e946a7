"""bfloat16 models: casts fuse, library calls run in the low-precision type.

A small random-initialized BERT converted with `.to(torch.bfloat16)` and a float32 one under
`torch.autocast("cpu", torch.bfloat16)`, inference and a training step, against eager; no
kernel is a standalone cast except casts whose result a library call reads (autocast's
casts of the weights and biases for each linear layer); linear layers stay one `addmm`
call in bfloat16, as in eager (not upcast to float32).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import trebuchet

transformers = pytest.importorskip("transformers")

CAST = "aten._to_copy.default"


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=512,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     attn_implementation="sdpa")
    return transformers.BertModel(config)


def _cast_only_kernels(stats: dict) -> int:
    return sum(1 for ops in stats["kernel_ops"] if set(ops) == {CAST})


@pytest.mark.parametrize("mode", ["bf16", "autocast"])
def test_bert_bf16_inference(mode: str) -> None:
    model = _bert().eval()
    if mode == "bf16":
        model = model.to(torch.bfloat16)
    ctx = (lambda: torch.autocast("cpu", torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext
    ids = torch.randint(0, 512, (2, 16))
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="c", strict=True)
    with torch.no_grad(), ctx():
        out = compiled(ids).last_hidden_state
        ref = model(ids).last_hidden_state
    assert out.dtype == ref.dtype
    # bfloat16's tolerance (autocast's output is float32 after bfloat16 matmuls)
    torch.testing.assert_close(out.float(), ref.float(), rtol=1.6e-2, atol=1e-2)
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["extern_ops"].get("aten.addmm.default") == 13      # 6 per layer + pooler
    assert "aten.mm.default" not in stats["extern_ops"]
    if mode == "bf16":
        assert _cast_only_kernels(stats) == 0, stats["kernel_ops"]
    else:   # each linear layer's weight and bias cast to bfloat16 for its addmm, as in eager
        assert _cast_only_kernels(stats) <= 2 * 13, stats["kernel_ops"]


@pytest.mark.parametrize("mode", ["bf16", "autocast"])
def test_bert_bf16_training_step(mode: str) -> None:
    model = _bert().train()
    if mode == "bf16":
        model = model.to(torch.bfloat16)
    ref = _bert().train()
    if mode == "bf16":
        ref = ref.to(torch.bfloat16)
    ref.load_state_dict(model.state_dict())
    ctx = (lambda: torch.autocast("cpu", torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext
    ids = torch.randint(0, 512, (2, 16))
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="c", strict=True)
    for m, fn in ((model, compiled), (ref, ref)):
        with ctx():
            loss = fn(ids).last_hidden_state.float().square().mean()
        loss.backward()
    # the key bias's gradient is zero but for rounding (softmax ignores a shift per row):
    # each gradient is compared relative to its scale, floored at 1% of the largest one
    floor = 1e-2 * max(q.grad.float().abs().max().item() for q in ref.parameters()
                       if q.grad is not None)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        if q.grad is None:   # the pooler, not in the loss (compiled: zeros, as any backend)
            assert p.grad is None or not p.grad.any(), name
            continue
        scale = max(q.grad.float().abs().max().item(), floor)
        err = (p.grad.float() - q.grad.float()).abs().max().item() / scale
        assert err <= 2e-2, (name, err)       # bfloat16 rounding of sums taken in another order
    stats = trebuchet.stats()
    # the embeddings' backward (index_put accumulating many entries) is a Scatter kernel
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["graph_fallbacks"] == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_rounded_result_is_stored_rounding_once(dtype: torch.dtype, tmp_path) -> None:
    """A low-precision result is computed in float32 and rounded to its type once, by the
    store: the stored value is the float, not a float already rounded (rounding twice gives
    the same bits, at about a fifth of a GELU kernel's time). Results as eager's, NaN and
    infinities included."""
    import re

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * 3 + 1

    x = torch.tensor([0.5, -2.0, 300.0, -1e4, float("nan"), -0.0, 1e-30, 7.0] * 8).to(dtype)
    out = trebuchet.compile(fn, target="c", strict=True, debug=True, debug_dir=str(tmp_path))(x)
    torch.testing.assert_close(out, fn(x), equal_nan=True, rtol=0, atol=0)
    (source,) = [p.read_text() for p in tmp_path.rglob("kernels.c")]
    (stored,) = re.findall(r"buf\d+\[[^\]]+\] = t_f2[bh]\((t\d+)\);", source)
    declared = re.search(rf"const float {stored} = (.*);", source).group(1)
    assert not declared.startswith(("t_b2f(t_f2b(", "t_h2f(t_f2h(")), declared
