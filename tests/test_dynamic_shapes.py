"""Varying sequence lengths: every form of symbolic input AOTAutograd produces lowers.

With default `torch.compile` settings the second distinct input shape makes TorchDynamo
recompile with symbolic sizes; with `dynamic=True` the first compile is symbolic. The
graphs then take sizes as inputs: a plain symbol, the same symbol again (two inputs of
one length), or an expression (`2*s27`, a size saved for the backward). Each must lower:
a graph that does not runs eagerly, slower than eager itself.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import trebuchet

transformers = pytest.importorskip("transformers")

LENGTHS = (16, 37, 64, 128, 129, 255, 512)
VOCAB = 128


def _strict_compile(fn, **kw):
    """Compile so that any graph fallback is a test failure, not a warning."""
    return trebuchet.compile(fn, strict=True, **kw)


# -- the small forms, one graph each -------------------------------------------------

def test_repeated_symbol_input() -> None:
    """Two inputs of one length: the size symbol arrives twice."""
    def f(x, y):
        return x * torch.arange(x.shape[1]) + y

    cf = _strict_compile(f)
    for n in (16, 37, 50):
        x, y = torch.randn(2, n), torch.randn(2, n)
        torch.testing.assert_close(cf(x, y), f(x, y))
    assert trebuchet.stats()["graphs"] == 2


@pytest.mark.parametrize("target", ["c", "reference"])
def test_expression_input_in_backward(target: str) -> None:
    """The backward graph receives `2*s1` (a saved size) and a tangent of size 2*s0*s1."""
    x0 = torch.randn(3, 5, requires_grad=True)
    cf = _strict_compile(lambda x: torch.cat([x, x], 1).view(-1) * 2, dynamic=True, target=target)
    for n in (5, 7):
        x = x0[:, :1].expand(3, n).clone().detach().requires_grad_()
        cf(x).sum().backward()
        assert torch.equal(x.grad, torch.full_like(x, 4.0))


@pytest.mark.parametrize("target", ["c", "reference"])
def test_batch_norm_training_at_several_sizes(target: str) -> None:
    """Batch norm's training graphs hold float expressions of sizes (the running variance's
    n / (n - 1), the backward's 1 / n): computed in double, not truncated to integers."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    ref = copy.deepcopy(model)
    cf = _strict_compile(model, dynamic=True, target=target)
    for n in (9, 12, 17):
        x = torch.randn(2, 3, n, n + 1)
        out, expected = cf(x), ref(x)
        torch.testing.assert_close(out, expected)
        g = torch.randn_like(out)
        out.backward(g)
        expected.backward(g)
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4)
            p.grad, q.grad = None, None
        for b, c in zip(model.buffers(), ref.buffers()):
            torch.testing.assert_close(b, c)


def test_symbol_solved_from_an_expression() -> None:
    """A symbol whose only source is an expression input (`2*s + 1`) is solved from it;
    an expression of two unknown symbols binds nothing."""
    import sympy

    from trebuchet.ir.nodes import SymbolSource
    from trebuchet.lowering.graph import _bind

    s, t = sympy.symbols("s t", integer=True, positive=True)
    sources: dict = {}
    _bind(s * t, SymbolSource(0, "int"), sources)
    assert sources == {}
    _bind(2 * s + 1, SymbolSource(1, "int"), sources)
    _bind(3 * t, SymbolSource(2, "size", 1), sources)
    assert sources[s].value([None, 2 * 7 + 1]) == 7
    assert sources[t].value([None, None, torch.empty(1, 12)]) == 4


def test_size_used_only_in_a_view() -> None:
    def f(x):
        return x.view(x.shape[0] * x.shape[1]).relu()

    cf = _strict_compile(f, dynamic=True)
    for n in (4, 9):
        x = torch.randn(3, n)
        torch.testing.assert_close(cf(x), f(x))


# -- real models at many lengths -----------------------------------------------------

def _bert() -> torch.nn.Module:
    return transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="eager"))


def _llama() -> torch.nn.Module:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        attn_implementation="sdpa"))


MODELS = {"bert": _bert, "llama": _llama}


def _batch(length: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, VOCAB, (2, length), generator=gen)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length // 2:] = 0          # the second row is padded
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("dynamic", [None, True], ids=["default", "dynamic"])
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_at_many_lengths(name: str, mode: str, dynamic: bool | None) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    compiled_model = copy.deepcopy(model)
    compiled = _strict_compile(compiled_model, dynamic=dynamic)
    training = mode == "training"
    model.train(training)
    compiled_model.train(training)
    for length in LENGTHS:
        batch = _batch(length)
        if training:
            for m, fn in ((model, model), (compiled_model, compiled)):
                m.zero_grad(set_to_none=True)
                fn(**batch, labels=batch["input_ids"]).loss.backward()
            for (pname, p), q in zip(model.named_parameters(), compiled_model.parameters()):
                if p.grad is not None:
                    torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4,
                                               msg=lambda m: f"length {length}, {pname}: {m}")
        else:
            with torch.no_grad():
                expected = model(**batch).logits
                actual = compiled(**batch).logits
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"length {length}: {m}")
    stats = trebuchet.stats()
    assert stats["graph_fallbacks"] == 0
    # One static compile, then one symbolic one (dynamic=True: symbolic from the start);
    # a training graph is a forward and a backward.
    per_graph = 1 if dynamic else 2
    assert stats["graphs"] <= per_graph * (2 if training else 1), stats["graphs"]


def test_no_warning_for_varying_lengths() -> None:
    """The default path (no strict mode): no fallback warning as lengths change."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    compiled = torch.compile(model, backend="trebuchet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", trebuchet.TrebuchetWarning)
        for n in (3, 5, 11):
            x = torch.randn(2, n, 8)
            torch.testing.assert_close(compiled(x), model(x))
