"""Buffer recycling across calls of one compiled graph, behind fresh tensor objects.

Buffers are allocated on the graph's device. Fresh memory is expensive on a CPU: the
first write to each page faults, and the kernel zeroes it (about 9 ms for 32 MB on
the 2-core machine we measure on, more than the kernel that fills it). Each
allocation site of a compiled graph keeps a private tensor over the memory it made
last time, and the next call reuses that memory when nothing else can reach it any
more: no tensor over its storage but ours (no returned result, view, numpy array or
tensor saved for backward) and no Python reference to the storage itself
(`out.untyped_storage()` kept by a user).
Otherwise it allocates anew.

What a call hands out is always a new tensor object over that memory (`alias`),
never the kept tensor itself: hooks, `grad_fn` and attributes a user or a library
(FSDP2) attaches to a result belong to that call's result alone, as in eager.
"""
from __future__ import annotations

import sys

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def alias(t: torch.Tensor, shape: tuple, stride: tuple, offset: int) -> torch.Tensor:
    """A new tensor object over t's memory with the given layout; not a view of t
    (no `_base`), as eager's results are not views."""
    if t.size() == shape and t.stride() == stride and t.storage_offset() == offset:
        return t.detach()
    return t.as_strided(shape, stride, offset).detach()


def _storage_refs(t: torch.Tensor) -> tuple[int, int]:
    """(C++ owners of t's storage, Python references to its storage object), as seen
    from here; what nobody else holds reads the same as for a private tensor."""
    storage = t.untyped_storage()
    return _use_count(storage._cdata), sys.getrefcount(storage)


# The counts for a tensor nobody else can reach, measured once: they differ between
# torch versions (whether the storage's Python object is kept alive by the storage).
_PRIVATE = _storage_refs(torch.empty(1)) if _use_count is not None else None


class BufferSlots:
    """One kept tensor per allocation site (slot) of a wrapper."""

    def __init__(self, n: int, device: str = "cpu"):
        self.slots: list[torch.Tensor | None] = [None] * n
        self.device = torch.device(device)

    def alloc(self, slot: int, shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
        t = self.slots[slot]
        if (t is None or _PRIVATE is None or t.dtype != dtype or t.size() != shape
                or t.stride() != stride or _storage_refs(t) != _PRIVATE):
            t = torch.empty_strided(shape, stride, dtype=dtype, device=self.device)
            self.slots[slot] = t
        return t.detach()
