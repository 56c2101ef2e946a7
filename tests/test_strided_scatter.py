"""as_strided_scatter (lowering/scatter.py) against eager: dense views in several orders and
offsets, channels_last inputs; views that overlap or leave gaps run the eager op."""
from __future__ import annotations

import pytest
import torch

import trebuchet

aten = torch.ops.aten
TARGETS = ["c", "reference"]
# (input shape, input layout fn, size, stride, offset, lowered)
CASES = [
    ((32,), None, (2, 16), (16, 1), 0, True),
    ((32,), None, (2, 16, 1, 1), (16, 1, 16, 16), 0, True),         # channels_last [N, C, 1, 1]
    ((40,), None, (4, 8), (1, 4), 3, True),                          # transposed, offset
    ((2, 3, 4, 5), "cl", (6, 20), (20, 1), 0, True),
    ((2, 3, 4, 5), None, (3, 4), (1, 3), 7, True),
    ((32,), None, (4, 4), (8, 1), 0, False),                          # gaps
    ((32,), None, (4, 4), (2, 1), 0, False),                          # overlaps
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_as_strided_scatter(target: str, dtype: torch.dtype) -> None:
    for shape, layout, size, stride, offset, lowered in CASES:
        x = (torch.randn(shape) * 10).to(dtype)
        if layout == "cl":
            x = x.to(memory_format=torch.channels_last)
        src = (torch.randn(size) * 10).to(dtype)

        def fn(a, b):
            return aten.as_strided_scatter(a * 2, b + 1, size, stride, offset) * 3

        trebuchet.reset()
        out = trebuchet.compile(fn, target=target, strict=True)(x, src)
        ref = fn(x, src)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        assert out.stride() == ref.stride()
        stats = trebuchet.stats()
        assert stats["lowered_ops"].get("aten.as_strided_scatter.default", 0) == int(lowered), stats
