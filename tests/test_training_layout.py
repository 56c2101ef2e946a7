"""The layout plan in training (lowering/layout.py, frontend/backend.py): the forward graph
returns the activations it saves channels-last and reports their strides to AOTAutograd,
the backward graph is compiled for them; what a user sees (outputs, gradients, running
statistics and their strides) is eager's, from the graph cache too, and when the backward
graph falls back to eager."""
from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
import torch.nn as nn

import trebuchet
from trebuchet.frontend import backend


class _Net(nn.Module):
    """A small ResNet-style network: stem, max pool, a residual block, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(self.bn(self.conv(y)) + y)
        return self.fc(y.mean((2, 3)))


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What each compile saw and reported: its kind, its placeholders' strides, the output
    strides it chose."""
    seen: list[dict] = []
    compile_graph = backend.compile_graph

    def recording(gm, options, kind="forward", free_outputs=()):
        fn = compile_graph(gm, options, kind, free_outputs)
        inputs = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
        seen.append({"kind": kind, "inputs": [tuple(t.shape) + tuple(t.stride()) for t in inputs
                                              if isinstance(t, torch.Tensor)],
                     "output_strides": fn.output_strides})
        return fn

    monkeypatch.setattr(backend, "compile_graph", recording)
    return seen


def _check_training_step(model: nn.Module, x: torch.Tensor, **options) -> None:
    """One forward and backward against eager's: output and its strides, gradients and their
    strides, batch norm running statistics."""
    ref = type(model)()
    ref.load_state_dict(model.state_dict())
    trebuchet.reset()
    out = trebuchet.compile(model, target="c", strict=options.pop("strict", True), **options)(x)
    expected = ref(x)
    torch.testing.assert_close(out, expected)
    assert out.stride() == expected.stride()
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * q.grad.abs().max().item(),
                                   msg=name)
        assert p.grad.stride() == q.grad.stride(), name
    for b, c in zip(model.buffers(), ref.buffers()):
        torch.testing.assert_close(b, c)


def test_saved_activations_are_channels_last_and_reported(record: list[dict]) -> None:
    torch.manual_seed(0)
    _check_training_step(_Net().train(), torch.randn(2, 3, 20, 18))
    fw = next(r for r in record if r["kind"] == "forward")
    bw = next(r for r in record if r["kind"] == "backward")
    chosen = [s for s in fw["output_strides"] if s is not None]
    channels_last = [s for s in chosen if len(s) == 4 and s[1] == 1]
    assert channels_last, fw["output_strides"]       # saved activations, NHWC
    # the backward graph was compiled for them: its inputs carry those strides
    assert all(any(i[4:] == s for i in bw["inputs"]) for s in channels_last), bw["inputs"]
    assert trebuchet.stats()["graph_fallbacks"] == 0


def test_user_outputs_keep_eager_layout(record: list[dict]) -> None:
    """A returned activation (here the convolution's output, which a user sees) is not a
    saved one: it keeps eager's strides; only the saved activations' layouts are chosen."""
    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.relu(self.a(x))
            return y, self.b(y).sum()

    torch.manual_seed(0)
    model, x = TwoOutputs(), torch.randn(2, 3, 9, 10)
    ref = TwoOutputs()
    ref.load_state_dict(model.state_dict())
    trebuchet.reset()
    (y, s), (ey, es) = trebuchet.compile(model, target="c", strict=True)(x), ref(x)
    assert y.stride() == ey.stride()
    torch.testing.assert_close(y, ey)
    (y.sum() + s).backward()
    (ey.sum() + es).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    fw = next(r for r in record if r["kind"] == "forward")
    assert fw["output_strides"][0] is None       # the user's output: eager's layout


def test_graph_cache_hit_reports_the_same_strides(record: list[dict], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: pathlib.Path) -> None:
    """A forward graph found in the whole-graph cache reports the strides it was compiled
    with: the backward graph must read its saved activations as they are stored."""
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model, x = _Net().train(), torch.randn(2, 3, 20, 18)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _check_training_step(model, x)
    torch._dynamo.reset()
    model.load_state_dict(state)
    model.zero_grad()
    _check_training_step(model, x)
    assert trebuchet.stats()["graph_cache_hits"] == 2
    forwards = [r["output_strides"] for r in record if r["kind"] == "forward"]
    assert len(forwards) == 2 and forwards[0] == forwards[1] and any(forwards[0])


def test_backward_fallback_reads_saved_activations_in_traced_layout(
        record: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """When the backward graph fails to compile it runs eagerly, its restrided inputs first
    copied to the layout it was traced with: still eager's gradients."""
    compile_graph = backend.compile_graph

    def failing(gm, options, kind="forward", free_outputs=()):
        if kind == "backward":
            raise RuntimeError("injected backward failure")
        return compile_graph(gm, options, kind, free_outputs)

    monkeypatch.setattr(backend, "compile_graph", failing)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_training_step(_Net().train(), torch.randn(2, 3, 20, 18), strict=False)
    assert any("injected backward failure" in str(w.message) for w in caught)
    assert trebuchet.stats()["graph_fallbacks"] == 1


def test_a_convolution_faster_nchw_is_left_out_of_the_plan() -> None:
    """A 3x3 convolution over 256 channels with a 7x7 output runs faster NCHW (layout.py
    `prefers_nchw`): it reads its input NCHW though the convolution before it wrote its
    output channels-last; the pointwise kernel between them converts."""
    from trebuchet.ir.nodes import Extern
    from trebuchet.lowering.graph import OpCounts, lower_graph
    from test_cnn import _inference_graph

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 256, 1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1)).eval()
    x = torch.randn(1, 16, 7, 7)
    graph = lower_graph(_inference_graph(model, x), OpCounts(), channels_last=True)
    first, second = [b for b in graph.buffers if isinstance(b, Extern)]
    assert int(first.stride[1]) == 1                       # NHWC result
    assert int(second.args[0].stride[3]) == 1 and int(second.stride[3]) == 1    # NCHW
    trebuchet.reset()
    with torch.no_grad():
        torch.testing.assert_close(trebuchet.compile(model, target="c", strict=True)(x), model(x))


def test_training_step_with_a_convolution_faster_nchw() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn = nn.Conv2d(8, 256, 3, 2, 1, bias=False), nn.BatchNorm2d(256)
            self.b = nn.Conv2d(256, 256, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.a(x)))
            return self.b(y) + y

    torch.manual_seed(0)
    _check_training_step(Net().train(), torch.randn(2, 8, 14, 14))


def test_backward_given_other_strides_than_compiled_for_copies_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch whose AOTAutograd did not restride the backward graph's inputs for the
    strides the forward compile reported: the backward graph, compiled for the traced
    layout, finds other strides on its first call, says so, and copies those inputs."""
    monkeypatch.setattr(backend, "_restride_inputs", lambda gm, example_inputs: {})
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _check_training_step(_Net().train(), torch.randn(2, 3, 20, 18))
    assert any("another layout than it was compiled for" in str(w.message) for w in caught)
