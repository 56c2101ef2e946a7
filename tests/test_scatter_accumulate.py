"""Indexed writes in entry order as a Scatter kernel (lowering/scatter.py, ir/nodes.py
`Scatter`, codegen/c/scatter.py, codegen/triton/scatter.py).

index_put accumulating through many entries (the embedding backward), through broadcasting
index tensors, scatter_add and scatter with many indices per row, bit for bit against
eager's serial CPU kernels on every target (float32, bfloat16, float16, int64; duplicates,
negative indices), out-of-range indices raising eager's exception, the values' pointwise
work fused into the scatter kernel, and an nn.Embedding training step in strict mode
without a fallback op. Eager's float32 index_put accumulating over more than 32768 value
elements runs with atomics on several threads (not deterministic); there the reference is
eager under `torch.use_deterministic_algorithms(True)` (its serial kernel).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

import trebuchet

aten = torch.ops.aten
TARGETS = ["c", "reference"] + (["triton"] if importlib.util.find_spec("triton") else [])


def compiled(fn, target: str, **options):
    trebuchet.reset()
    return trebuchet.compile(fn, target=target, strict=True, **options)


def no_fallback() -> dict:
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    assert stats["graph_fallbacks"] == 0
    return stats


def same(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)


def rand(shape, dtype: torch.dtype, scale: float = 100.0) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape).mul(scale).to(dtype)
    return torch.randint(-1000, 1000, shape, dtype=dtype)


def put_acc(x, i, v):
    return aten.index_put(x * 1, [i], v * 2, True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_index_put_accumulate_duplicates(target: str, dtype: torch.dtype) -> None:
    """60 entries into 7 rows (-1 and 6 name the same row): each row's sum in entry
    order, rounded per step in bfloat16/float16, as eager."""
    torch.manual_seed(0)
    x, v = rand((7, 24), dtype), rand((60, 24), dtype)
    i = torch.randint(-7, 7, (60,))
    same(compiled(put_acc, target)(x, i, v), put_acc(x, i, v))
    assert no_fallback()["lowered_ops"].get("aten.index_put.default") == 1


@pytest.mark.parametrize("target", TARGETS)
def test_index_put_accumulate_broadcast_indices(target: str) -> None:
    """Two index tensors broadcasting to [3, 4] over dims 0 and 2: entries in row-major
    order of the broadcast shape, dim 1 the independent points."""
    def fn(x, i, j, v):
        return aten.index_put(x, [i, None, j], v, True)

    x, v = torch.randn(4, 5, 6), torch.randn(3, 4, 5)
    i, j = torch.tensor([[0], [3], [-4]]), torch.tensor([1, -1, 5, 1])
    same(compiled(fn, target)(x, i, j, v), fn(x, i, j, v))
    no_fallback()


@pytest.mark.parametrize("target", TARGETS)
def test_index_put_multi_dim_index_last_wins(target: str) -> None:
    """Not accumulating, through a [4, 5] index with duplicates: the last entry wins."""
    def fn(x, i, v):
        return aten.index_put(x, [None, i], v)

    x, v = torch.randn(3, 6, 2), torch.randn(3, 4, 5, 2)
    i = torch.randint(-6, 6, (4, 5))
    same(compiled(fn, target)(x, i, v), fn(x, i, v))
    no_fallback()


def scatter_add(x, dim, i, s):
    return aten.scatter_add(x, dim, i, s)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_add(target: str, dtype: torch.dtype, dim: int) -> None:
    """Index smaller than src and than x off dim; many duplicates. bfloat16 sums are kept
    in float32 and rounded once, as eager's scatter_add does."""
    torch.manual_seed(1)
    x = rand((6, 9, 5), dtype)
    shape = [4, 7, 3]
    shape[dim] = 30
    i = torch.randint(0, x.shape[dim], shape)
    src_shape = [5, 8, 4]
    src_shape[dim] = 31
    s = rand(src_shape, dtype)

    def fn(x, i, s):
        return scatter_add(x, dim, i, s)

    same(compiled(fn, target)(x, i, s), fn(x, i, s))
    assert no_fallback()["lowered_ops"].get("aten.scatter_add.default") == 1


@pytest.mark.parametrize("target", TARGETS)
def test_scatter_many_per_row_last_wins(target: str) -> None:
    def fn(x, i, s):
        return torch.scatter(x, 0, i, s.abs() * 2)

    x, s = torch.randn(5, 7), torch.randn(40, 7)
    i = torch.randint(0, 5, (40, 7))
    same(compiled(fn, target)(x, i, s), fn(x, i, s))
    no_fallback()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
@pytest.mark.parametrize("reduce", ["add", "multiply"])
@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_scatter_reduce_argument(target: str, dtype: torch.dtype, reduce: str) -> None:
    """scatter(..., reduce=) with a src and with a value, an int32 index: in entry order
    (float16 accumulated in float32 and rounded once, as eager)."""
    torch.manual_seed(4)
    x, s = rand((5, 6), dtype, 2.0), rand((9, 6), dtype, 1.0)
    i = torch.randint(0, 5, (9, 6), dtype=torch.int32)

    def fn(x, i, s):
        return torch.scatter(x, 0, i, s, reduce=reduce), torch.scatter(x, 1, i[:5], 3, reduce=reduce)

    for out, ref in zip(compiled(fn, target)(x, i, s), fn(x, i, s)):
        same(out, ref)
    no_fallback()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(0, 7, 3), (2, 7, 0), (2, 0, 3)], ids=str)
def test_scatter_add_empty(target: str, shape: tuple) -> None:
    """No points, or no entries: the input comes back (no division by a zero count)."""
    def fn(x, i, s):
        return aten.scatter_add(x, 1, i, s) * 2

    x, s = torch.randn(3, 5, 4), torch.randn(3, 8, 4)
    i = torch.randint(0, 5, shape)
    same(compiled(fn, target)(x, i, s), fn(x, i, s))
    no_fallback()


@pytest.mark.parametrize("target", TARGETS)
def test_scatter_add_zero_dim(target: str) -> None:
    def fn(x, i, s):
        return aten.scatter_add(x, 0, i, s)

    x, i, s = torch.tensor(1.5), torch.tensor(0), torch.tensor(2.25)
    same(compiled(fn, target)(x, i, s), fn(x, i, s))
    no_fallback()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bad", [7, -8])
def test_index_put_out_of_range_raises(target: str, bad: int) -> None:
    x, v = torch.randn(7, 4), torch.randn(20, 4)
    i = torch.randint(0, 7, (20,))
    i[13] = bad
    with pytest.raises(IndexError):
        put_acc(x, i, v)
    fn = compiled(put_acc, target)
    with pytest.raises(IndexError):
        fn(x, i, v)
    i[13] = -7                                  # the compiled graph still works afterwards
    same(fn(x, i, v), put_acc(x, i, v))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bad", [9, -1])
def test_scatter_add_out_of_range_raises(target: str, bad: int) -> None:
    x, s = torch.randn(3, 9), torch.randn(3, 12)
    i = torch.randint(0, 9, (3, 12))
    i[1, 5] = bad

    def fn(x, i, s):
        return scatter_add(x, 1, i, s)

    with pytest.raises(RuntimeError):
        fn(x, i, s)
    with pytest.raises(RuntimeError, match="index out of range") as ours:
        compiled(fn, target)(x, i, s)
    assert ours.type is RuntimeError


@pytest.mark.parametrize("target", ["c", "triton"] if "triton" in TARGETS else ["c"])
def test_values_fuse_into_the_scatter_kernel(target: str) -> None:
    """zeros, then v.abs() * 2 accumulated: one kernel (the values computed in it)."""
    def fn(i, v):
        return aten.index_put(torch.zeros(9, 16), [i], v.abs() * 2, True)

    i, v = torch.randint(0, 9, (50,)), torch.randn(50, 16)
    same(compiled(fn, target)(i, v), fn(i, v))
    stats = no_fallback()
    assert len(stats["kernel_ops"]) == 1, stats["kernel_ops"]
    assert set(stats["kernel_ops"][0]) >= {"aten.abs.default", "aten.index_put.default"}


def test_large_accumulation_matches_eager_serial_kernel() -> None:
    """More value elements than eager's parallel threshold, on several threads: the C
    kernel's tiles give the serial kernel's bits (eager deterministic as the reference)."""
    torch.manual_seed(2)
    x, v = torch.zeros(300, 96), torch.randn(4096, 96)
    i = torch.randint(0, 40, (4096,))           # ~100 duplicates per row
    out = compiled(put_acc, "c")(x, i, v)
    torch.use_deterministic_algorithms(True)
    try:
        ref = put_acc(x, i, v)
    finally:
        torch.use_deterministic_algorithms(False)
    same(out, ref)
    no_fallback()


@pytest.mark.parametrize("target", ["c", "triton"] if "triton" in TARGETS else ["c"])
def test_embedding_training_step(target: str) -> None:
    """nn.Embedding's backward (the decomposition's index_put accumulating the tokens'
    gradients into a zeros [vocab, hidden]) compiled with no fallback, its gradient the
    same bits as eager's."""
    torch.manual_seed(3)
    emb = torch.nn.Embedding(40, 16, padding_idx=0)
    ids = torch.randint(0, 40, (4, 24))
    ids[:, :6] = 5                              # a repeated token
    ids[0, 7] = 0                               # padding: no gradient

    def step(ids):
        out = emb(ids)
        loss = (out * out).sum()      # grad_output 2 * out, exact on every target
        loss.backward()
        return loss

    loss = compiled(step, target)(ids)
    grad, emb.weight.grad = emb.weight.grad.clone(), None
    no_fallback()
    ref_loss = step(ids)
    torch.testing.assert_close(loss, ref_loss)
    same(grad, emb.weight.grad)
