"""scatter lowered as a per-element select (lowering/misc.py: scatter).

Cross-entropy's backward scatters one -1 per row into zeros; as a select it fuses
with its producer and consumers instead of cloning a [rows x classes] tensor.
Out-of-range indices raise as in eager; shapes the select does not take (many indices
per row with a src, an index smaller than the input) are a Scatter kernel
(lowering/scatter.py), the last duplicate winning as in eager's serial CPU kernel.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import trebuchet


def compiled(fn, **options):
    trebuchet.reset()
    return trebuchet.compile(fn, target="c", **options)


@pytest.mark.parametrize("per_row", [1, 2, 4])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_value_matches_eager(per_row: int, dim: int) -> None:
    x = torch.randn(12, 10)
    d = dim % 2
    shape = [12, 10]
    shape[d] = per_row
    index = torch.randint(0, x.shape[d], shape)

    def fn(x, index):
        return torch.scatter(x * 2, dim, index, -1.5) + 1

    torch.testing.assert_close(compiled(fn, strict=True)(x, index), fn(x, index))
    assert not trebuchet.stats()["fallback_ops"]


def test_scatter_src_one_per_row() -> None:
    x, src = torch.randn(8, 16), torch.randn(8, 3)
    index = torch.randint(0, 16, (8, 1))

    def fn(x, index, src):
        return torch.scatter(x, 1, index, src.exp())

    torch.testing.assert_close(compiled(fn, strict=True)(x, index, src), fn(x, index, src))
    assert not trebuchet.stats()["fallback_ops"]


def test_scatter_src_with_duplicates_last_wins() -> None:
    x, src = torch.randn(8, 16), torch.randn(8, 12)
    index = torch.randint(0, 4, (8, 12))       # many duplicates per row

    def fn(x, index, src):
        return torch.scatter(x, 1, index, src)

    torch.testing.assert_close(compiled(fn, strict=True)(x, index, src), fn(x, index, src),
                               rtol=0, atol=0)
    assert trebuchet.stats()["lowered_ops"].get("aten.scatter.src") == 1


def test_scatter_partial_index() -> None:
    x = torch.randn(8, 16)
    index = torch.randint(0, 16, (4, 1))       # fewer rows than x: rows 4..7 untouched
    fn = lambda x, index: torch.scatter(x, 1, index, 3.0)  # noqa: E731
    torch.testing.assert_close(compiled(fn, strict=True)(x, index), fn(x, index), rtol=0, atol=0)
    assert trebuchet.stats()["lowered_ops"].get("aten.scatter.value") == 1


@pytest.mark.parametrize("bad", [16, -1])
def test_scatter_out_of_range_raises(bad: int) -> None:
    x = torch.randn(8, 16)
    index = torch.randint(0, 16, (8, 1))
    index[5, 0] = bad
    fn = lambda x, index: torch.scatter(x, 1, index, 3.0)  # noqa: E731
    with pytest.raises(RuntimeError):
        fn(x, index)
    with pytest.raises(RuntimeError, match="index out of range") as ours:
        compiled(fn)(x, index)
    assert ours.type is RuntimeError        # eager's type, not a subclass


def test_cross_entropy_backward_has_no_scatter_call() -> None:
    x = torch.randn(32, 50, requires_grad=True)
    target = torch.randint(0, 50, (32,))
    target[3] = -100

    def fn(x, target):
        return F.cross_entropy(x, target, ignore_index=-100)

    loss = compiled(fn, strict=True)(x, target)
    loss.backward()
    grad, x.grad = x.grad, None
    fn(x, target).backward()
    torch.testing.assert_close(grad, x.grad)
    assert not trebuchet.stats()["fallback_ops"]
