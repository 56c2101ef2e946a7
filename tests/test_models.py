"""Real models: tiny random-initialized Hugging Face BERT and GPT-2, compiled vs eager.

Nothing is downloaded: the models are built from small configs (hidden 64,
2 layers, 2 heads, vocab 128) with a fixed seed. Attention is the "eager"
implementation (explicit matmul/softmax, no SDPA) so the graphs exercise the
fused row reductions. Dropout is off: compiled and eager draw random numbers
differently, so with dropout no two runs are comparable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

import trebuchet

transformers = pytest.importorskip("transformers")

SEQ, BATCH, VOCAB, STEPS = 16, 2, 128, 10


def _bert() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return transformers.BertForMaskedLM(config)


def _gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return transformers.GPT2LMHeadModel(config)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {"bert": _bert, "gpt2": _gpt2}


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    labels = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    return ids, labels


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def _assert_compiled_cleanly() -> None:
    stats = trebuchet.stats()
    assert stats["graphs"] >= 1, "trebuchet compiled no graph"
    assert stats["graph_fallbacks"] == 0, "a graph failed to compile and ran eagerly"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference(name: str) -> None:
    model = _build(name).eval()
    compiled = trebuchet.compile(model, target="c")
    ids, _ = _batch(1)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        actual = compiled(input_ids=ids).logits
        # A second call reuses the compiled graph.
        again = compiled(input_ids=ids).logits
    # Logits go through 2 layers of matmul + layer norm + softmax: reduction order
    # differs from ATen's, so allow a few float32 ulps of the largest values.
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, actual, rtol=0, atol=0)
    _assert_compiled_cleanly()


def _train(model: torch.nn.Module, step_fn: Callable, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        ids, labels = _batch(100 + step)
        loss = step_fn(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training(name: str) -> None:
    eager_model = _build(name).train()
    compiled_model = copy.deepcopy(eager_model)
    compiled = trebuchet.compile(compiled_model, target="c")

    expected = _train(eager_model, eager_model, STEPS)
    actual = _train(compiled_model, compiled, STEPS)

    # Per-step losses. The first step compares one forward pass; later steps also
    # carry AdamW updates computed from compiled gradients, whose float32 rounding
    # differs from eager's; AdamW's normalization keeps that drift tiny over 10 steps.
    for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a == pytest.approx(e, rel=1e-4, abs=1e-5), f"step {step}: {actual} vs {expected}"
    _assert_compiled_cleanly()


def test_conv_batchnorm_training_and_running_stats() -> None:
    """Batch norm in training mode updates running statistics; both the output, the
    gradients and the running stats must match eager (full OpInfo once found a
    decomposition that left a non-functional op in the graph)."""

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    mod = copy.deepcopy(ref)
    compiled = trebuchet.compile(mod, strict=True)
    x = torch.randn(4, 3, 10, 10)
    y_ref, y = ref(x), compiled(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    y_ref.sum().backward()
    y.sum().backward()
    torch.testing.assert_close(mod[0].weight.grad, ref[0].weight.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(mod[1].running_mean, ref[1].running_mean)
    torch.testing.assert_close(mod[1].running_var, ref[1].running_var)
