"""Hugging Face `generate` with the model's forward compiled by Trebuchet.

Small random-initialized GPT-2 and Llama (no downloads), a batch of two prompts (one
left-padded, so the attention mask grows with the cache), greedy, 32 new tokens, with
the default dynamic KV cache (its length grows each step: Dynamo recompiles once with
symbolic sizes) and the static cache (its writes are index_copy_, lowered through
index_put by lowering/scatter.py). The tokens must equal eager's, no graph may fall
back to eager, and each distinct graph compiles at most twice (static, then dynamic);
a second generate compiles nothing.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import trebuchet

transformers = pytest.importorskip("transformers")

NEW_TOKENS = 32


def make_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128,
                                         n_positions=128, bos_token_id=0, eos_token_id=None)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2,
                                          vocab_size=128, max_position_embeddings=128,
                                          bos_token_id=0, eos_token_id=None)
        model = transformers.LlamaForCausalLM(config)
    return model.eval()


def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts, the first left-padded by 3 (pad id 0): token ids and attention mask."""
    ids = torch.randint(1, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0
    return ids, mask


def generate(model: torch.nn.Module, cache: str) -> torch.Tensor:
    ids, mask = prompt()
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, **kwargs)


# Each case takes about 10 s (mostly Dynamo and AOTAutograd tracing): two run by default,
# covering both models and both caches; the other two with --full.
CASES = [("gpt2", "static"), ("llama", "dynamic"),
         pytest.param("gpt2", "dynamic", marks=pytest.mark.slow),
         pytest.param("llama", "static", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("kind", "cache"), CASES)
def test_generate_matches_eager(kind: str, cache: str) -> None:
    model = make_model(kind)
    expected = generate(model, cache)
    model.forward = torch.compile(model.forward, backend="trebuchet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", trebuchet.TrebuchetWarning)
        got = generate(model, cache)
        assert torch.equal(got, expected)
        stats = trebuchet.stats()
        assert stats["graph_fallbacks"] == 0, [str(w.message) for w in caught]
        assert not stats["fallback_ops"], stats["fallback_ops"]
        # prefill and decode: each compiled once static, at most once more with symbolic sizes
        first = stats["graphs"]
        assert first <= 4, first
        if cache == "static":
            assert stats["lowered_ops"].get("aten.index_put.default", 0) > 0
        assert torch.equal(generate(model, cache), expected)
        assert trebuchet.stats()["graphs"] == first     # no recompiles
