"""Convolution blocks: what fuses around a convolution (a library call), against eager.

conv -> batch norm (eval) -> add residual -> relu is one kernel over the convolution's
output, contiguous and channels_last (no layout copy kernels), and a max pool after it one
more; in training
the batch statistics and the normalize fuse; a small ResNet-style network and a
MobileNet-style block (hardswish, squeeze-excitation) compile with no fallback and match
eager in inference and in a training step.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import trebuchet


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(torch.relu(self.bn(self.conv(x)) + x), 3, 2, 1)


class MobileBlock(nn.Module):
    """A MobileNetV3 inverted residual with squeeze-excitation and hardswish."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c),
                                    nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c, bias=False),
                                nn.BatchNorm2d(2 * c), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * c, c, 1), nn.ReLU(),
                                nn.Conv2d(c, 2 * c, 1), nn.Hardsigmoid())
        self.project = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        return self.project(y * self.se(y)) + x


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.to(memory_format=torch.channels_last) if channels_last else t


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_bn_add_relu_is_one_kernel_then_pool(channels_last: bool) -> None:
    torch.manual_seed(0)
    block = _layout(Block(8), channels_last).eval()
    _randomize_bn(block)
    x = _layout(torch.randn(2, 8, 12, 12), channels_last)
    trebuchet.reset()
    compiled = trebuchet.compile(block, target="c", strict=True)
    with torch.no_grad():
        out = compiled(x)
        torch.testing.assert_close(out, block(x))
    assert out.stride() == block(x).stride()
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["extern_ops"] == {"aten.convolution.default": 1}
    # A contiguous input is first copied channels-last for the convolution (lowering/
    # layout.py); then the epilogue over the convolution's output, then the pool
    # (overlapping windows read the stored values instead of recomputing them).
    ops = stats["kernel_ops"]
    if not channels_last:
        assert ops[0] == ["aten.convolution.default"], ops
        ops = ops[1:]
    assert len(ops) == 2 and stats["kernels"] == len(stats["kernel_ops"]), stats["kernel_ops"]
    assert set(ops[0]) == {"aten._native_batch_norm_legit_no_training.default",
                           "aten.add.Tensor", "aten.relu.default"}
    assert "aten.max_pool2d_with_indices.default" in ops[1]


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_block_training_step(channels_last: bool) -> None:
    torch.manual_seed(0)
    block = _layout(Block(8), channels_last).train()
    ref = _layout(Block(8), channels_last).train()
    ref.load_state_dict(block.state_dict())
    x = _layout(torch.randn(2, 8, 12, 12), channels_last)
    trebuchet.reset()
    compiled = trebuchet.compile(block, target="c", strict=True)
    out, expected = compiled(x), ref(x)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    for (name, p), q in zip(block.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    torch.testing.assert_close(block.bn.running_mean, ref.bn.running_mean)
    torch.testing.assert_close(block.bn.running_var, ref.bn.running_var)
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["graph_fallbacks"] == 0


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_mobile_block(channels_last: bool, train: bool) -> None:
    torch.manual_seed(0)
    block = _layout(MobileBlock(8), channels_last).train(train)
    _randomize_bn(block)
    ref = _layout(MobileBlock(8), channels_last).train(train)
    ref.load_state_dict(block.state_dict())
    x = _layout(torch.randn(2, 8, 10, 10), channels_last)
    trebuchet.reset()
    compiled = trebuchet.compile(block, target="c", strict=True)
    with torch.set_grad_enabled(train):
        out, expected = compiled(x), ref(x)
        torch.testing.assert_close(out, expected)
        if train:
            g = torch.randn_like(out)    # not sum(): through batch norm its gradient is ~0
            out.backward(g)
            expected.backward(g)
            for (name, p), q in zip(block.named_parameters(), ref.parameters()):
                # sums over the batch and image in another order than eager's:
                # within float32 rounding of the gradient's scale
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4,
                                           atol=1e-5 * q.grad.abs().max().item(), msg=name)
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["graph_fallbacks"] == 0


class _TwoConvs(nn.Module):
    """Returns a convolution's result as it is, and another through batch norm and ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.a(x)
        z = torch.relu(self.bn(y))
        return y, self.b(z), z.mean((2, 3))


def test_channels_last_plan_keeps_outputs_in_eager_layout() -> None:
    """Inference over contiguous tensors stores the activations around the convolutions
    channels-last (lowering/layout.py); what is returned keeps eager's strides, including
    a convolution's own result, which oneDNN wrote channels-last."""
    torch.manual_seed(0)
    model = _TwoConvs().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 10, 9)
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="c", strict=True, debug=True)
    with torch.no_grad():
        outs, refs = compiled(x), model(x)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref)
        assert out.stride() == ref.stride()
    assert trebuchet.stats()["extern_ops"] == {"aten.convolution.default": 2}


def _inference_graph(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    """The ATen inference graph AOTAutograd hands a backend."""
    from torch._functorch.aot_autograd import aot_module_simplified
    graphs = []

    def grab(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=lambda gm, ex: aot_module_simplified(gm, ex, fw_compiler=grab))(x)
    return graphs[0]


def test_channels_last_plan_runs_convolutions_channels_last() -> None:
    """The second convolution's input (computed by a kernel) is stored channels-last, and
    the convolutions' results are declared so: no layout copies between them."""
    from trebuchet.lowering.graph import OpCounts, lower_graph
    from trebuchet.ir.nodes import Extern

    torch.manual_seed(0)
    gm = _inference_graph(_TwoConvs().eval(), torch.randn(2, 3, 10, 9))
    graph = lower_graph(gm, OpCounts(), channels_last=True)
    convs = [b for b in graph.buffers if isinstance(b, Extern)]
    assert len(convs) == 2
    for conv in convs:
        n, c, h, w = (int(s) for s in conv.shape)
        assert tuple(int(s) for s in conv.stride) == (c * h * w, 1, w * c, c)
        x = conv.args[0]
        assert int(x.stride[1]) == 1, x      # the input passed channels-last
    plain = lower_graph(gm, OpCounts(), channels_last=False)
    assert all(int(b.stride[-1]) == 1 for b in plain.buffers if isinstance(b, Extern))


def test_channels_last_plan_crosses_batch_norm_and_max_pool() -> None:
    """ResNet's stem, conv -> batch norm -> relu -> 3x3/2 max pool -> conv: batch norm and
    max pool have several results, and the plan extends through them, so the relu the
    pool stores once (its windows overlap) is stored channels-last like the convolution
    output it reads; it was stored NCHW, a transposing kernel and a strided pool."""
    from trebuchet.lowering.graph import OpCounts, lower_graph
    from trebuchet.ir.nodes import Extern

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1)).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 20, 18)
    graph = lower_graph(_inference_graph(model, x), OpCounts(), channels_last=True)
    stored = {tuple(int(s) for s in b.shape): b for b in graph.buffers
              if not isinstance(b, Extern) and len(b.shape) == 4}
    assert (2, 10, 9, 8) in stored and (2, 8, 10, 9) not in stored, stored   # the relu: NHWC
    assert (2, 5, 5, 8) in stored                                             # the pool's output
    trebuchet.reset()
    compiled = trebuchet.compile(model, target="c", strict=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_two_inputs_read_through_one_window(channels_last: bool) -> None:
    """Two inputs read at the same clamped window positions in one kernel: each load keeps
    its own buffer when the C target computes the window's offsets before the innermost
    loop (codegen/c/kernels.py `_hoist_indices`)."""
    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(a, 3, 2, 1) + F.max_pool2d(b, 3, 2, 1)

    torch.manual_seed(0)
    a, b = (_layout(torch.randn(2, 16, 9, 11), channels_last) for _ in range(2))
    trebuchet.reset()
    out = trebuchet.compile(fn, target="c", strict=True)(a, b)
    torch.testing.assert_close(out, fn(a, b), rtol=0, atol=0)
    assert trebuchet.stats()["kernels"] == 1
