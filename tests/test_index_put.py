"""index_put and index_copy lowered as per-element selects or a Scatter (lowering/scatter.py).

Against eager, on the C target and the reference target: few entries (a select chain),
many entries through one index vector (the last-writer Reduction), accumulate with
duplicates (summed in eager's order), negative indices, broadcast values, bool masks
with one value, several dtypes; out-of-range indices raise as in eager; what the rules
decline still runs (as the eager op) and gives eager's answer.
"""
from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import trebuchet
from trebuchet.config import Options
from trebuchet.runtime import pipeline

aten = torch.ops.aten
TARGETS = ["c", "reference"]


def compiled(fn, target: str, **options):
    trebuchet.reset()
    return trebuchet.compile(fn, target=target, **options)


def put(x, i, v):
    return aten.index_put(x * 1, [None, None, i], v) * 2      # a static KV cache's write


def put_acc(x, i, v):
    return aten.index_put(x, [None, None, i], v, True)


def put_two(x, i, j, v):
    return aten.index_put(x + 1, [i, None, j], v)           # non-adjacent index dims


def lowered() -> int:
    stats = trebuchet.stats()
    assert not stats["fallback_ops"], stats["fallback_ops"]
    return stats["lowered_ops"].get("aten.index_put.default", 0)


def check(fn, args, target: str) -> None:
    out = compiled(fn, target, strict=True)(*args)
    ref = fn(*args)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert lowered() == 1


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("index", [[-1], [2, 14, -3], list(range(3, 11)) + [-13]],
                         ids=["one", "three", "many_dup"])
def test_put_matches_eager(target: str, dtype: torch.dtype, index: list[int]) -> None:
    x = torch.randn(2, 3, 16, 8).mul(10).to(dtype)
    i = torch.tensor(index, dtype=torch.int32 if dtype == torch.int32 else torch.int64)
    v = torch.randn(2, 3, len(index), 8).mul(10).to(dtype)
    check(put, (x, i, v), target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(8,), (3, 1, 1), ()], ids=str)
@pytest.mark.parametrize("entries", [2, 9])
def test_put_broadcast_values(target: str, shape: tuple, entries: int) -> None:
    x = torch.randn(2, 3, 16, 8)
    i = torch.randperm(16)[:entries]
    if len(shape) == 3:
        shape = (3, entries, 1)
    check(put, (x, i, torch.randn(shape)), target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_accumulate_duplicates_in_order(target: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 16, 8).mul(100).to(dtype)
    i = torch.tensor([4, -12, 4, 0])          # 4 three times (-12 is 4)
    v = torch.randn(2, 3, 4, 8).mul(100).to(dtype)
    check(put_acc, (x, i, v), target)


@pytest.mark.parametrize("target", TARGETS)
def test_put_two_index_dims(target: str) -> None:
    x = torch.randn(4, 5, 6)
    i, j = torch.tensor([[0], [3]]), torch.tensor([1, -1])    # broadcast to [2, 2]
    check(put_two, (x, i, j, torch.randn(2, 2, 5)), target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("accumulate", [False, True])
def test_bool_mask_with_one_value(target: str, accumulate: bool) -> None:
    x = torch.randn(6, 7)

    def fn(x):
        return aten.index_put(x, [x > 0.3], torch.tensor(-2.0), accumulate)

    check(fn, (x,), target)


def test_bool_mask_with_many_values_falls_back() -> None:
    x = torch.randn(6, 7)
    mask = x > 0.3

    def fn(x, mask, v):
        return aten.index_put(x, [mask], v)

    v = torch.randn(int(mask.sum()))
    torch.testing.assert_close(compiled(fn, "c")(x, mask, v), fn(x, mask, v))


@pytest.mark.parametrize("target", TARGETS)
def test_accumulate_many_entries(target: str) -> None:
    """Through many entries: a Scatter kernel (tests/test_scatter_accumulate.py)."""
    x, i = torch.randn(2, 3, 16, 8), torch.tensor([1, 2, 3, 1, 5, 1])
    check(put_acc, (x, i, torch.randn(2, 3, 6, 8)), target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bad", [16, -17])
@pytest.mark.parametrize("entries", [1, 7])
def test_out_of_range_raises(target: str, bad: int, entries: int) -> None:
    x, v = torch.randn(2, 3, 16, 8), torch.randn(2, 3, entries, 8)
    i = torch.arange(entries)
    i[-1] = bad
    with pytest.raises(IndexError):
        put(x, i, v)
    fn = compiled(put, target)
    with pytest.raises(IndexError):
        fn(x, i, v)
    assert lowered() == 1
    i[-1] = 15                                 # the compiled graph still works afterwards
    torch.testing.assert_close(fn(x, i, v), put(x, i, v), rtol=0, atol=0)


@pytest.mark.parametrize("target", TARGETS)
def test_index_copy_inplace_matches_eager(target: str) -> None:
    """index_copy_ (a static cache's write) reaches lowering as index_put."""
    def fn(cache, pos, new):
        cache.index_copy_(2, pos, new)
        return cache * 2

    cache, new = torch.randn(1, 2, 12, 4), torch.randn(1, 2, 1, 4)
    pos = torch.tensor([7])
    mine = cache.clone()
    out = compiled(fn, target, strict=True)(mine, pos, new)
    ref = fn(cache, pos, new)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(mine, cache, rtol=0, atol=0)
    assert lowered() == 1


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("index", [[3], [0, 5, 2, 9, 1, 7], []], ids=["one", "six", "zero-d"])
def test_index_copy_rule(target: str, index: list[int]) -> None:
    """aten.index_copy itself (AOTAutograd's table decomposes it; other graphs keep it)."""
    def fn(x, i, s):
        return aten.index_copy(x, 1, i, s)

    x = torch.randn(3, 10, 4)
    i = torch.tensor(index) if index else torch.tensor(6)
    s = torch.randn(3, max(len(index), 1), 4)
    gm = make_fx(fn, tracing_mode="fake")(x, i, s)
    assert any(n.target == aten.index_copy.default for n in gm.graph.nodes)
    trebuchet.reset()
    options = Options.from_env(target=target, graph_cache=False, strict=True)
    out = pipeline.compile_graph(gm, options, "inference")([x, i, s])
    torch.testing.assert_close(out[0], fn(x, i, s), rtol=0, atol=0)
    assert trebuchet.stats()["lowered_ops"].get("aten.index_copy.default") == 1


@pytest.mark.parametrize("bad", [10, -1])
def test_index_copy_rule_out_of_range_raises(bad: int) -> None:
    """Eager's index_copy takes no negative index: -1 raises IndexError, as 10 does."""
    def fn(x, i, s):
        return aten.index_copy(x, 1, i, s)

    x, i, s = torch.randn(3, 10, 4), torch.tensor([2, bad]), torch.randn(3, 2, 4)
    with pytest.raises(IndexError):
        fn(x, i, s)
    gm = make_fx(fn, tracing_mode="fake")(x, i, s)
    trebuchet.reset()
    compiled_fn = pipeline.compile_graph(gm, Options.from_env(target="c", graph_cache=False), "inference")
    with pytest.raises(IndexError):
        compiled_fn([x, i, s])
    assert trebuchet.stats()["lowered_ops"].get("aten.index_copy.default") == 1
