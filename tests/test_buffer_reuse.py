"""Buffer reuse in the wrapper: kernels writing in place of a dying input, and
extern arguments stored with the strides eager gave them (scheduler/reuse.py,
runtime/wrapper.py, lowering/graph.py).

Each case checks the result against eager and, from the wrapper written with
debug=True, whether an output took over an input's memory (the wrapper line
`bufN = alias(bufM, ..., bufM.storage_offset())`).
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import trebuchet
from trebuchet.scheduler.reuse import FRESH_RESULT_OPS, fresh_result
from trebuchet.ir.nodes import Extern
from trebuchet.runtime import onednn

IN_PLACE = re.compile(r"(buf\d+) = alias\((buf\d+), .*\2\.storage_offset\(\)\)$", re.M)


def run(fn: Callable, *args: Any, tmp_path: pathlib.Path, matmul: str = "blas") -> str:
    """Compile strictly, compare with eager (twice: the second call reuses buffers),
    return the wrapper's source. Matmuls go to the BLAS's `out=` form unless `matmul`
    says otherwise: memory the wrapper keeps, which a kernel may write over."""
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, debug_dir=str(tmp_path),
                                 matmul=matmul)
    for _ in range(2):
        torch.testing.assert_close(compiled(*args), fn(*args))
    (wrapper,) = tmp_path.glob("*/wrapper.py")
    return wrapper.read_text()


def in_place(source: str) -> list[tuple[str, str]]:
    return IN_PLACE.findall(source)


def test_gelu_runs_in_place_of_the_matmul_result(tmp_path: pathlib.Path) -> None:
    x, w, b = torch.randn(64, 32), torch.randn(32, 48), torch.randn(48)
    src = run(lambda x, w, b: F.gelu(x @ w + b), x, w, b, tmp_path=tmp_path)
    assert len(in_place(src)) == 1


def _over_new_results(src: str) -> list[tuple[str, str]]:
    """The (output, library result) pairs where a kernel wrote over a library call's result."""
    results = re.findall(r"^    (buf\d+) = op\d+\(", src, re.M)
    return [p for p in in_place(src) if p[1] in results]


def test_a_kernel_writes_over_a_convolution_result_in_inference(tmp_path: pathlib.Path) -> None:
    """A convolution's result is new memory from the allocator on each call. In an
    inference graph the kernel after it writes its output over it (still in cache, no new
    memory written), and that output is freed after its last reader as the result would
    have been (in training graphs the kernel writes a buffer of its own, the result freed
    as soon as it is read: `over_new_results` is off there, where the allocation living on
    made glibc grow and trim its heap on every step). A matmul result the wrapper keeps
    may always be written over."""
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 16, 16)

    def block(x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(conv(x))
        return torch.relu(conv(y)) + 1

    with torch.no_grad():
        src = run(block, x, tmp_path=tmp_path / "inference")
    over = _over_new_results(src)      # (the last kernel writes eager's layout: not in place)
    assert len(over) == 1
    assert f"    del {over[0][0]}" in src               # read by the second convolution, freed


@pytest.mark.skipif(not onednn.use_onednn_matmul("onednn"), reason="no oneDNN in this build")
def test_a_kernel_writes_over_a_onednn_product_in_inference(tmp_path: pathlib.Path) -> None:
    """oneDNN's product (runtime/onednn.py) is a new result, as a convolution's: in an
    inference graph the GELU after it writes over it. (Small integers: exact sums in any
    order.)"""
    x, w = (torch.randint(-3, 4, shape).float() for shape in ((128, 256), (256, 256)))
    src = run(lambda x, w: F.gelu(x @ w), x, w, tmp_path=tmp_path / "inference", matmul="onednn")
    assert "out=" not in src and len(_over_new_results(src)) == 1   # routed, written over
    assert in_place(run(lambda x, w: F.gelu(x @ w), x, w, tmp_path=tmp_path / "blas"))


@pytest.mark.skipif(not onednn.use_onednn_matmul("onednn"), reason="no oneDNN in this build")
def test_a_new_library_result_is_freed_after_its_last_reader(tmp_path: pathlib.Path) -> None:
    """Kept until the end of the call (waiting in the pool for a buffer of its size), a
    library's new results grew the heap during every call (ViT-Tiny: 49 MB, given back to
    the system at the end, then page faults again): each is deleted after its last read."""
    x, w = (torch.randint(-3, 4, shape).float() for shape in ((128, 256), (256, 256)))
    src = run(lambda x, w: F.relu(x @ w) @ w, x, w, tmp_path=tmp_path, matmul="onednn")
    products = re.findall(r"^    (buf\d+) = op\d+\(", src, re.M)
    assert len(products) == 2
    assert f"    del {products[0]}" in src


def test_transposed_read_is_not_in_place(tmp_path: pathlib.Path) -> None:
    x, w = torch.randn(32, 32), torch.randn(32, 32)
    src = run(lambda x, w: ((x @ w).t() + 1).contiguous(), x, w, tmp_path=tmp_path)
    assert in_place(src) == []


def test_graph_inputs_are_never_overwritten(tmp_path: pathlib.Path) -> None:
    x = torch.randn(64, 64)
    before = x.clone()
    src = run(lambda x: F.gelu(x) * 2, x, tmp_path=tmp_path)
    assert in_place(src) == []
    assert torch.equal(x, before)


def test_only_the_last_reader_takes_the_memory(tmp_path: pathlib.Path) -> None:
    # Both outputs read y at the element they write; only the later one may overwrite y.
    def fn(x, w):
        y = x @ w
        return y + 1, y * 2

    src = run(fn, torch.randn(64, 32), torch.randn(32, 32), tmp_path=tmp_path)
    assert len(in_place(src)) == 1


def test_row_kernel_that_reads_again_after_a_store(tmp_path: pathlib.Path) -> None:
    # z is stored in the first pass over each row; r reads y again in a later pass, so
    # z must not overwrite y (a wrong reuse would divide y + 1 by the sum).
    def fn(x, w):
        y = x @ w
        return y + 1, y / y.abs().sum(-1, keepdim=True)

    run(fn, torch.randn(64, 48), torch.randn(48, 48), tmp_path=tmp_path)


def test_softmax_and_layer_norm_in_place(tmp_path: pathlib.Path) -> None:
    def fn(x, w, r, g, b):
        y = F.layer_norm(x @ w + r, (48,), g, b)
        return torch.softmax(y @ w.t(), -1)

    x, w, r = torch.randn(64, 48), torch.randn(48, 48), torch.randn(64, 48)
    src = run(fn, x, w, r, torch.randn(48), torch.randn(48), tmp_path=tmp_path)
    assert len(in_place(src)) == 2


def test_attention_reads_the_projection_without_a_transposing_copy(tmp_path: pathlib.Path) -> None:
    def fn(x, w, b):
        q = (x @ w + b).view(2, 16, 4, 8).transpose(1, 2)   # heads, as in BERT/GPT-2
        return F.scaled_dot_product_attention(q, q, q)

    x, w, b = torch.randn(32, 32), torch.randn(32, 32), torch.randn(32)
    src = run(fn, x, w, b, tmp_path=tmp_path)
    # the bias is added in place of the matmul result, which attention reads transposed,
    # once for all three arguments
    assert len(in_place(src)) == 1
    call = next(line for line in src.splitlines() if "op" in line and "(buf" in line
                and "fix_layout" not in line and "= op0" not in line)
    name = in_place(src)[0][0]
    assert call.count(f"as_strided({name}, ") == 3, call


def test_outputs_keep_eager_strides() -> None:
    trebuchet.reset()
    fn = lambda x: (x + 1).t()  # noqa: E731
    x = torch.randn(16, 24)
    out = trebuchet.compile(fn, target="c", strict=True)(x)
    torch.testing.assert_close(out, fn(x))
    assert out.stride() == fn(x).stride()


def test_fresh_result_whitelist() -> None:
    assert fresh_result(Extern("b", (), torch.float32, (), target=torch.ops.aten.mm.default))
    assert not fresh_result(Extern("b", (), torch.float32, (), target=torch.ops.aten.t.default))
    assert "addmm" in FRESH_RESULT_OPS


def test_fused_qkv_heads_keep_the_traced_order(monkeypatch) -> None:
    """GPT-2's attention: one projection to 3 * hidden, split, heads transposed. The
    heads are not dense in eager's layout; storing them dense in the same dim order
    makes attention return the layout traced for it, so no copy follows."""
    import trebuchet.runtime.wrapper as wrapper

    copies = []
    real = wrapper.fix_layout

    def counting(t, shape, stride):
        if t is not None and t.stride() != stride and t.numel() > 1:
            copies.append((tuple(t.shape), t.stride(), stride))
        return real(t, shape, stride)

    monkeypatch.setattr(wrapper, "fix_layout", counting)

    def fn(x, w, b):
        q, k, v = (x @ w + b).view(2, 16, 96).split(32, dim=2)
        heads = [t.reshape(2, 16, 4, 8).transpose(1, 2) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*heads, is_causal=True)
        return out.transpose(1, 2).reshape(2, 16, 32)

    trebuchet.reset()
    x, w, b = torch.randn(32, 32), torch.randn(32, 96), torch.randn(96)
    compiled = trebuchet.compile(fn, target="c", strict=True, graph_cache=False)
    torch.testing.assert_close(compiled(x, w, b), fn(x, w, b))
    assert copies == []


def testmemory_order() -> None:
    from trebuchet.lowering.storage import memory_order

    assert memory_order((1536, 8, 96, 1)) == [0, 2, 1, 3]   # heads of a [B, L, 3*H*D] tensor
    assert memory_order((1, 3)) == [1, 0]                   # a transpose
    assert memory_order((4, 1)) == [0, 1]


def test_transposed_matmul_operand_is_written_in_order(tmp_path: pathlib.Path) -> None:
    # grad_W = grad.t() @ x in a linear layer's backward: grad is stored [rows, out]
    # (its kernel writes memory in order) and the matmul reads it transposed.
    def fn(g, x, b):
        grad = torch.sigmoid(g) * b
        return grad.t() @ x, grad.sum(0)

    src = run(fn, torch.randn(64, 48), torch.randn(64, 32), torch.randn(48), tmp_path=tmp_path)
    (kernels,) = tmp_path.glob("*/kernels.c")
    stores = re.findall(r"^\s*(buf\d+)\[(.*)\] = ", kernels.read_text(), re.M)
    grad = next(index for name, index in stores if name in src.split("as_strided(")[-1])
    assert grad in ("x1 + (48 * x0)", "(x1 + (48 * x0))"), grad   # row by row, not down columns
    assert "(48, 64, ), (1, 48, )" in src                           # the transposed view


def test_stored_value_is_not_recomputed_for_the_output(tmp_path: pathlib.Path) -> None:
    # y is stored for the gather (an indexed load needs memory); the output returns that
    # buffer instead of a second kernel recomputing the log-softmax.
    def fn(x, idx):
        y = torch.log_softmax(x * 2, -1)
        return y.gather(1, idx), y

    x, idx = torch.randn(16, 100), torch.randint(0, 100, (16, 1))
    run(fn, x, idx, tmp_path=tmp_path)
    (kernels,) = tmp_path.glob("*/kernels.c")
    assert kernels.read_text().count(" = log(") == 1


def test_a_clone_never_aliases_the_value_it_copies() -> None:
    def fn(x):
        y = torch.exp(x)
        return y, y.clone(), y.view(-1)

    trebuchet.reset()
    x = torch.randn(8, 8)
    a, b, c = trebuchet.compile(fn, target="c", strict=True)(x)
    torch.testing.assert_close(b, torch.exp(x))
    assert a.data_ptr() != b.data_ptr()
    a.add_(1)                                   # eager: c sees it, b does not
    torch.testing.assert_close(b, torch.exp(x))
    torch.testing.assert_close(c, a.view(-1))


@pytest.mark.parametrize("as_view", [False, True])
def test_returned_activation_is_stored_by_the_kernel_using_it(as_view: bool) -> None:
    # A forward graph returns the pre-activation for the backward (directly or as a
    # view): the GELU kernel stores it as it goes, no second kernel recomputes it at the
    # end from a matmul result kept alive till then.
    def fn(x, w, b, w2):
        h = x @ w + b
        y = F.gelu(h)
        for _ in range(5):             # the rest of the network: many steps later ...
            y = torch.softmax(y @ w2, -1)
        return y, (h.view(4, 16, 48) if as_view else h)   # ... h is returned

    trebuchet.reset()
    x, w, b, w2 = torch.randn(64, 32), torch.randn(32, 48), torch.randn(48), torch.randn(48, 48)
    compiled = trebuchet.compile(fn, target="c", strict=True)
    for got, want in zip(compiled(x, w, b, w2), fn(x, w, b, w2)):
        torch.testing.assert_close(got, want)
    stats = trebuchet.stats()
    assert stats["kernels"] == 1 + 5
    assert "aten.gelu.default" in stats["kernel_ops"][0]
    assert "aten.add.Tensor" not in stats["kernel_ops"][-1]   # h is not recomputed at the end


def test_an_expanded_extern_argument_keeps_its_last_dim_contiguous(tmp_path: pathlib.Path) -> None:
    """An attention mask computed in the graph and expanded over the heads (what SDPA's
    CUDA composite passes memory-efficient attention, whose bias must have a contiguous
    last dim: a GPT-2 training step failed on an H200 with "(*bias): last dimension must
    be contiguous"): stored with the broadcast dim outermost, not innermost."""
    def fn(x, pos):
        q = x.view(2, 16, 4, 8).transpose(1, 2)
        i = torch.arange(16)
        keep = (i[None, :] <= i[:, None]) & (pos[:, None, :, None] == pos[:, None, None, :])
        mask = torch.where(keep, 0.0, float("-inf")).expand(2, 4, 16, 16)
        return F.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    x, pos = torch.randn(2, 16, 32), torch.zeros(2, 16, dtype=torch.int64)
    src = run(fn, x, pos, tmp_path=tmp_path)
    call = next(line for line in src.splitlines() if "attn_mask=" in line)
    strides = re.search(r"attn_mask=as_strided\(buf\d+, \(2, 4, 16, 16, \), \(([^)]*)\)", call)
    assert strides is not None, call
    assert strides.group(1).replace(" ", "").rstrip(",").split(",")[-1] == "1", call


def test_memory_order_puts_broadcast_dims_outermost() -> None:
    from trebuchet.lowering.storage import memory_order

    assert memory_order((1024, 0, 32, 1)) == [1, 0, 2, 3]   # a mask expanded over heads
    assert memory_order((0, 1)) == [0, 1]
