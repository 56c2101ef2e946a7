"""Buffer recycling across calls of one compiled graph.

Fresh memory is expensive on a CPU: the first write to each page faults, and the
kernel zeroes it (about 9 ms for 32 MB on the 2-core machine we measure on, more
than the kernel that fills it). Each allocation site of a compiled graph keeps
the tensor it made last time; the next call reuses it when nothing else refers
to it any more: no Python reference but ours, and no other owner of its storage
(no view, no numpy array, no autograd saved tensor). Otherwise it allocates anew.
"""
from __future__ import annotations

import sys
import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)


class BufferSlots:
    """One cached tensor per allocation site (slot) of a wrapper."""

    def __init__(self, n: int):
        self.slots: list[torch.Tensor | None] = [None] * n

    def alloc(self, slot: int, shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
        t = self.slots[slot]
        # References to t: the list, the local name, getrefcount's argument.
        if (t is not None and _use_count is not None and sys.getrefcount(t) == 3
                and t.dtype == dtype and t.size() == shape and t.stride() == stride
                and _use_count(t.untyped_storage()._cdata) == 2):  # t + the temporary
            return t
        t = torch.empty_strided(shape, stride, dtype=dtype)
        self.slots[slot] = t
        return t
