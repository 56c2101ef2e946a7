"""Fusion regression tests: canonical patterns must compile to the expected kernel count.

Each test compiles with target="c" and strict=True (a fallback would fail the test),
checks the result against eager, then asserts on `trebuchet.stats()["kernels"]` and
`["kernel_ops"]` (the ATen ops fused into each kernel). A second group checks the
generated code written with debug=True: every kernel is labelled with its ATen ops,
and pointwise inner loops are marked for vectorization.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import trebuchet

ROWS, HIDDEN = 8, 64


def compile_and_check(fn: Callable, *args: Any, **options: Any) -> dict:
    """Compile fn strictly, compare with eager, return the stats of this compile."""
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, **options)
    torch.testing.assert_close(compiled(*args), fn(*args))
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert not stats["extern_ops"], stats["extern_ops"]
    assert stats["graph_fallbacks"] == 0
    assert len(stats["kernel_ops"]) == stats["kernels"]
    return stats


def fused_ops(stats: dict) -> set[str]:
    return {op for ops in stats["kernel_ops"] for op in ops}


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_gelu_is_one_kernel(approximate: str) -> None:
    stats = compile_and_check(lambda x, b: F.gelu(x + b, approximate=approximate),
                              rand(ROWS, HIDDEN), rand(HIDDEN))
    assert stats["kernels"] == 1
    assert {"aten.add.Tensor", "aten.gelu.default"} <= set(stats["kernel_ops"][0])


def test_add_layer_norm_is_one_kernel() -> None:
    def fn(x, residual, w, b):
        return F.layer_norm(x + residual, (HIDDEN,), w, b, eps=1e-5)

    stats = compile_and_check(fn, rand(ROWS, HIDDEN), rand(ROWS, HIDDEN), rand(HIDDEN),
                              rand(HIDDEN))
    assert stats["kernels"] == 1
    assert "aten.add.Tensor" in stats["kernel_ops"][0]


def test_scaled_masked_softmax_is_one_kernel() -> None:
    def fn(scores, mask):
        return torch.softmax(scores * 0.125 + mask, dim=-1)

    stats = compile_and_check(fn, rand(2, 4, 16, 16), rand(16, 16))
    assert stats["kernels"] == 1
    ops = set(stats["kernel_ops"][0])
    assert {"aten.mul.Tensor", "aten.add.Tensor", "aten.exp.default"} <= ops


def test_rms_norm_is_one_kernel() -> None:
    def fn(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    stats = compile_and_check(fn, rand(ROWS, HIDDEN), rand(HIDDEN))
    assert stats["kernels"] == 1
    assert "aten.rsqrt.default" in stats["kernel_ops"][0]


def test_pointwise_chain_of_ten_is_one_kernel() -> None:
    def fn(x, y):
        v = x * 2.0            # 1
        v = v + y              # 2
        v = torch.sin(v)       # 3
        v = v * v              # 4
        v = v - 0.5            # 5
        v = torch.exp(v)       # 6
        v = v / 3.0            # 7
        v = torch.tanh(v)      # 8
        v = torch.abs(v)       # 9
        return torch.sqrt(v)   # 10

    stats = compile_and_check(fn, rand(ROWS, HIDDEN), rand(ROWS, HIDDEN))
    assert stats["kernels"] == 1
    assert {"aten.sin.default", "aten.tanh.default", "aten.sqrt.default"} <= fused_ops(stats)


def test_pointwise_chain_with_broadcast_and_transpose_is_one_kernel() -> None:
    def fn(x, y, b):
        return torch.relu((x + y.t()) * b).sigmoid() + 1.0

    stats = compile_and_check(fn, rand(16, 32), rand(32, 16), rand(32))
    assert stats["kernels"] == 1


def test_softmax_and_layer_norm_of_same_input_share_one_kernel() -> None:
    # Same input, same reduced axis: one row pass computes both normalizations.
    def fn(x):
        return torch.softmax(x, -1), F.layer_norm(x, (HIDDEN,))

    stats = compile_and_check(fn, rand(ROWS, HIDDEN))
    assert stats["kernels"] == 1


def test_softmax_plus_layer_norm_is_one_kernel() -> None:
    def fn(x):
        return torch.softmax(x, -1) + F.layer_norm(x, (HIDDEN,))

    stats = compile_and_check(fn, rand(ROWS, HIDDEN))
    assert stats["kernels"] == 1


def test_layer_norm_training_forward_and_backward() -> None:
    torch.manual_seed(0)
    x, w, b = rand(ROWS, HIDDEN), rand(HIDDEN), rand(HIDDEN)

    def fn(x, w, b):
        return F.layer_norm(x, (HIDDEN,), w, b)

    eager = [t.clone().requires_grad_() for t in (x, w, b)]
    comp = [t.clone().requires_grad_() for t in (x, w, b)]
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True)
    y = compiled(*comp)
    forward = trebuchet.stats()
    y.sum().backward()
    total = trebuchet.stats()

    y_eager = fn(*eager)
    y_eager.sum().backward()
    torch.testing.assert_close(y, y_eager)
    for c, e in zip(comp, eager):
        torch.testing.assert_close(c.grad, e.grad)

    assert forward["graphs"] == 1 and forward["kernels"] == 1
    assert total["graphs"] == 2
    backward_kernels = total["kernels"] - forward["kernels"]
    # grad_input is a row reduction (one kernel); grad_weight and grad_bias are column
    # reductions over the same rows (one kernel).
    assert backward_kernels == 2, total["kernel_ops"]
    assert not total["fallback_ops"] and not total["extern_ops"]
    assert total["graph_fallbacks"] == 0


# A row normalization whose result is reshaped (as every Linear/bmm on a 3-D or 4-D
# activation does) stays one kernel: the flattened epilogue joins the reduction kernel.


def test_layer_norm_then_reshape_is_one_kernel() -> None:
    stats = compile_and_check(lambda x: F.layer_norm(x, (HIDDEN,)).reshape(-1, HIDDEN),
                              rand(2, 4, HIDDEN))
    assert stats["kernels"] == 1, stats["kernel_ops"]


def test_layer_norm_then_linear_on_3d_input_is_one_kernel() -> None:
    def fn(x, w, b, proj):
        return F.linear(F.layer_norm(x, (HIDDEN,), w, b), proj)

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True)
    args = (rand(2, 4, HIDDEN), rand(HIDDEN), rand(HIDDEN), rand(32, HIDDEN))
    torch.testing.assert_close(compiled(*args), fn(*args))
    assert trebuchet.stats()["kernels"] == 1, trebuchet.stats()["kernel_ops"]


def test_attention_softmax_before_bmm_is_one_kernel() -> None:
    def fn(scores, v):
        return torch.softmax(scores, -1) @ v

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True)
    args = (rand(2, 4, 16, 16), rand(2, 4, 16, 8))
    torch.testing.assert_close(compiled(*args), fn(*args))
    assert trebuchet.stats()["kernels"] == 1, trebuchet.stats()["kernel_ops"]


def test_log_softmax_is_one_kernel() -> None:
    stats = compile_and_check(lambda x: F.log_softmax(x, -1), rand(ROWS, HIDDEN))
    assert stats["kernels"] == 1


def _rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


@pytest.mark.parametrize("fn,n_inputs,max_backward", [
    (lambda x: torch.softmax(x, -1), 1, 1),
    (lambda x, b: F.gelu(x + b), 2, 2),     # grad_x (pointwise), grad_b (column sum)
    (_rms_norm, 2, 2),                      # grad_x (row reduction), grad_w (column sum)
], ids=["softmax", "bias_gelu", "rms_norm"])
def test_training_forward_is_one_kernel_backward_few(fn: Callable, n_inputs: int,
                                                     max_backward: int) -> None:
    torch.manual_seed(0)
    shapes = [(ROWS, HIDDEN), (HIDDEN,)][:n_inputs]
    base = [rand(*s) for s in shapes]
    eager = [t.clone().requires_grad_() for t in base]
    comp = [t.clone().requires_grad_() for t in base]
    trebuchet.reset()
    y = trebuchet.compile(fn, target="c", strict=True)(*comp)
    forward = trebuchet.stats()["kernels"]
    (y * y).sum().backward()
    total = trebuchet.stats()
    y_eager = fn(*eager)
    (y_eager * y_eager).sum().backward()
    torch.testing.assert_close(y, y_eager)
    for c, e in zip(comp, eager):
        torch.testing.assert_close(c.grad, e.grad)
    assert forward == 1
    assert 1 <= total["kernels"] - forward <= max_backward, total["kernel_ops"]
    assert not total["fallback_ops"] and total["graph_fallbacks"] == 0


def test_matmul_epilogue_is_one_kernel_after_the_extern() -> None:
    def fn(x, w, b):
        return F.gelu(x @ w + b)

    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True)
    args = (rand(ROWS, 32), rand(32, HIDDEN), rand(HIDDEN))
    torch.testing.assert_close(compiled(*args), fn(*args))
    stats = trebuchet.stats()
    assert stats["extern_ops"] and not stats["fallback_ops"]
    assert stats["kernels"] == 1
    assert "aten.gelu.default" in stats["kernel_ops"][0]


# ---- generated code ----------------------------------------------------------------

KERNEL_DEF = re.compile(r"^void (kernel\d+)\(", re.M)


def debug_sources(debug_dir: pathlib.Path) -> list[pathlib.Path]:
    graphs = sorted(debug_dir.glob("graph*"))
    assert graphs, f"nothing written to {debug_dir}"
    for g in graphs:
        assert (g / "kernels.c").is_file() and (g / "wrapper.py").is_file(), list(g.iterdir())
    return [g / "kernels.c" for g in graphs]


def compile_debug(fn: Callable, args: tuple, tmp_path: pathlib.Path) -> list[str]:
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, debug=True, debug_dir=tmp_path)
    torch.testing.assert_close(compiled(*args), fn(*args))
    return [p.read_text() for p in debug_sources(tmp_path)]


def test_every_kernel_is_labelled_with_its_aten_ops(tmp_path: pathlib.Path) -> None:
    def fn(x, b, mask, w):
        h = torch.softmax(F.gelu(x + b) * 0.5 + mask, -1)
        y = F.layer_norm(h @ w, (32,))            # the matmul extern splits the kernels
        return y, y.sum(0)

    args = (rand(ROWS, HIDDEN), rand(HIDDEN), rand(ROWS, HIDDEN), rand(HIDDEN, 32))
    sources = compile_debug(fn, args, tmp_path)
    seen = 0
    for source in sources:
        lines = source.splitlines()
        for k, line in enumerate(lines):
            m = KERNEL_DEF.match(line)
            if not m:
                continue
            seen += 1
            j = k
            while j > 0 and lines[j - 1].startswith("//"):
                j -= 1
            comments = lines[j:k]                   # the comment block right above
            labels = [c for c in comments if c.startswith(f"// {m.group(1)}: ")]
            assert len(labels) == 1, (comments, line)
            ops = labels[0].split(": ", 1)[1].split(", ")
            assert ops and all(op.startswith("aten.") for op in ops), labels[0]
    assert seen >= 2


def test_wrapper_calls_every_kernel(tmp_path: pathlib.Path) -> None:
    compile_debug(lambda x: torch.softmax(x, -1) * 2, (rand(ROWS, HIDDEN),), tmp_path)
    for kernels_c in debug_sources(tmp_path):
        wrapper = (kernels_c.parent / "wrapper.py").read_text()
        assert wrapper.startswith("def call(args):")
        for name in KERNEL_DEF.findall(kernels_c.read_text()):
            assert f"{name}(" in wrapper


def test_residual_stream_is_stored_not_summed_again_by_each_reader(tmp_path: pathlib.Path) -> None:
    """x = x + branch(layer_norm(x)), layer after layer: each sum is stored once, so no
    kernel reads every earlier branch's output again (a pre-norm transformer's stream)."""
    layers = 6
    ws = [rand(HIDDEN, HIDDEN) for _ in range(layers)]

    def fn(x, *ws):
        for w in ws:
            x = x + F.layer_norm(x, (HIDDEN,)) @ w
        return F.layer_norm(x, (HIDDEN,))

    sources = compile_debug(fn, (rand(ROWS, HIDDEN), *ws), tmp_path)
    params = [line.count("const float*") for source in sources
              for line in source.splitlines() if KERNEL_DEF.match(line)]
    assert params and max(params) <= 3, params      # 7 when each reader sums again


def _innermost_loop_pragma(source: str) -> tuple[str, str]:
    """(the line before the innermost `for`, that `for`) of the first kernel."""
    body = source[source.index("void kernel0("):]
    lines = body.splitlines()
    fors = [k for k, line in enumerate(lines) if line.strip().startswith("for (")]
    assert fors, body
    innermost = max(fors, key=lambda k: len(lines[k]) - len(lines[k].lstrip()))
    return lines[innermost - 1].strip(), lines[innermost].strip()


def test_2d_pointwise_inner_loop_is_simd(tmp_path: pathlib.Path) -> None:
    def fn(x, y):
        return torch.relu(x * 2 + y)

    (source,) = compile_debug(fn, (rand(16, 32), rand(16, 32).t().contiguous().t()), tmp_path)
    assert len(KERNEL_DEF.findall(source)) == 1
    pragma, loop = _innermost_loop_pragma(source)
    assert pragma == "#pragma omp simd", (pragma, loop)
    assert "< 32;" in loop, loop   # the contiguous dimension is the vectorized one
    assert "#pragma omp parallel for" in source


def test_row_reduction_inner_loop_is_simd(tmp_path: pathlib.Path) -> None:
    (source,) = compile_debug(lambda x: torch.softmax(x, -1), (rand(ROWS, HIDDEN),), tmp_path)
    pragma, _ = _innermost_loop_pragma(source)
    assert pragma.startswith("#pragma omp simd"), pragma
