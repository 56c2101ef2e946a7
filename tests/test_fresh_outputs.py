"""Every call returns fresh tensor objects, even where memory underneath is reused
(runtime/buffers.py): hooks, attributes and autograd history a caller attaches to one
call's result stay with it, and memory anyone can still reach is never recycled."""
from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

import trebuchet


def _block() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))


def test_hooks_on_outputs_fire_every_call() -> None:
    f = trebuchet.compile(_block(), strict=True)
    calls: list[int] = []
    for s in range(3):
        y = f(torch.randn(8, 64))
        y.register_hook(lambda g, s=s: calls.append(s))
        y.pow(2).mean().backward()
        del y
    assert calls == [0, 1, 2]


def test_each_call_returns_new_objects() -> None:
    f = trebuchet.compile(lambda x: F.gelu(x) * 2, strict=True)
    x = torch.randn(256)
    for _ in range(3):
        y = f(x)
        assert not hasattr(y, "tag"), "an earlier call's result object came back"
        y.tag = "mine"
        del y


def test_inference_outputs_are_not_views() -> None:
    """A result written in place of a dying matmul result, or in recycled memory, is a
    tensor of its own, as in eager (not a view with a `_base`)."""
    m = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU())
    f = trebuchet.compile(m, strict=True)
    x = torch.randn(4, 16)
    with torch.no_grad():
        for _ in range(3):
            y = f(x)
            assert not y._is_view() and y._base is None
            torch.testing.assert_close(y, m(x))
            y.add_(1)       # in-place writes to a result are the caller's business


def test_kept_storage_is_not_recycled() -> None:
    f = trebuchet.compile(lambda x: x * 2 + 1, strict=True)
    out = f(torch.ones(1000))
    storage = out.untyped_storage()
    del out
    gc.collect()
    f(torch.zeros(1000))
    kept = torch.empty(0).set_(storage)
    assert torch.equal(kept, torch.full((1000,), 3.0))


def test_released_memory_is_still_reused() -> None:
    """The fresh objects do not cost the recycling: a dropped result's memory serves
    the next call."""
    f = trebuchet.compile(lambda x: x * 2 + 1, strict=True)
    x = torch.randn(4096)
    ptr = f(x).data_ptr()
    assert f(x).data_ptr() == ptr
