"""What a kernel says about itself: the ATen ops it fused (its comment, its error
messages, trebuchet.stats()["kernel_ops"]) and the user's source lines behind them."""
from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn.functional as F

import trebuchet

_W = torch.randn(10, 8)


def _embed_norm(i: torch.Tensor) -> torch.Tensor:
    e = F.embedding(i, _W)                      # line A
    y = e * 2.0                                 # line B
    return F.layer_norm(y + 1.0, (8,))          # line C


def _line_of(text: str) -> int:
    lines = pathlib.Path(__file__).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def test_fused_embedding_is_named_everywhere(tmp_path: pathlib.Path) -> None:
    compiled = trebuchet.compile(_embed_norm, strict=True, debug_dir=str(tmp_path))
    good = torch.tensor([1, 2, 3])
    torch.testing.assert_close(compiled(good), _embed_norm(good))
    (ops,) = trebuchet.stats()["kernel_ops"]
    assert "aten.embedding.default" in ops and "aten.mul.Tensor" in ops
    with pytest.raises(IndexError, match="aten.embedding.default"):
        compiled(torch.tensor([1, 12, 3]))
    (kernels,) = tmp_path.glob("*/kernels.c")
    source = kernels.read_text()
    from_line = next(line for line in source.splitlines() if line.startswith("// from:"))
    for marker in ("# line A", "# line B", "# line C"):
        assert f"test_provenance.py:{_line_of(marker)}" in from_line, (marker, from_line)
