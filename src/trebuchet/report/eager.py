"""The eager side of the report: every ATen op a step runs, classified, counted
(FLOPs, bytes) and timed.

Two passes over the same step: one under a `TorchDispatchMode` that sees each ATen
op with its tensors (shapes, strides, dtypes) and counts its FLOPs and bytes
(`counting.py`), and timed runs under `torch.profiler` (the step of median wall time
is kept), whose events give each op's self CPU time (its time minus its children's,
so nested ops are counted once and the times add up to the time spent in ATen ops).
The counting pass is not timed: the mode's Python code would be inside every op's time.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .classes import classify_op, short_name
from .counting import op_flops, unique_bytes


@dataclasses.dataclass
class OpStats:
    """One ATen op name over a step: calls, FLOPs, transcendentals, bytes (per step) and
    self time (ns per step)."""

    name: str
    cls: str
    calls: int = 0
    flops: int = 0
    transcendentals: int = 0
    bytes: int = 0
    ns: float = 0.0


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


# ops that only allocate (their memory is written by the next op, which counts it)
_ALLOCATIONS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, OpStats] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        name = short_name(func)
        s = self.ops.get(name)
        if s is None:
            s = self.ops[name] = OpStats(name, classify_op(name))
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        s.calls += 1
        groups = args[-1] if name == "convolution" and isinstance(args[-1], int) else 1
        try:
            flops, trans = op_flops(func, [t.shape for t in ins], [t.shape for t in outs], groups)
        except (IndexError, ValueError, TypeError):
            flops, trans = 0, 0
        s.flops += flops
        s.transcendentals += trans
        if not func.is_view and name not in _ALLOCATIONS:
            seen: set[tuple] = set()
            for t in ins + outs:
                key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
                if key not in seen and t.numel():
                    seen.add(key)
                    s.bytes += unique_bytes(t.shape, t.stride(), t.element_size())
        return out


def count_ops(step: Callable[[], Any]) -> dict[str, OpStats]:
    """Run `step` once under the counting mode: FLOPs and bytes per ATen op name."""
    counter = _Counter()
    with counter:
        step()
    return counter.ops


@dataclasses.dataclass
class EagerProfile:
    ops: dict[str, OpStats]      # per op name, per step
    op_ns: float                 # self time of all ATen ops, per step
    wall_ns: float               # wall time of a profiled step


def profile(step: Callable[[], Any], runs: int = 5) -> EagerProfile:
    """Count once, then time `runs` steps under torch.profiler (after one warm-up) and
    keep the step of median wall time: one descheduled step on a busy machine would
    otherwise dominate a mean."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    ops = count_ops(step)
    step()
    walls = []
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(runs):
            start = time.perf_counter_ns()
            with record_function(f"trebuchet_step_{i}"):
                step()
            walls.append(time.perf_counter_ns() - start)
    keep = sorted(range(runs), key=lambda i: walls[i])[runs // 2]
    events = prof.events()
    marker = next(ev for ev in events if ev.name == f"trebuchet_step_{keep}")
    lo, hi = marker.time_range.start, marker.time_range.end
    total = 0.0
    for ev in events:
        if not ev.name.startswith("aten::") or not lo <= ev.time_range.start <= hi:
            continue
        ns = ev.self_cpu_time_total * 1e3
        name = short_name(ev.name)
        s = ops.get(name)
        if s is None:       # ran below the dispatcher's Python key (inside another op)
            s = ops[name] = OpStats(name, classify_op(name))
        s.ns += ns
        total += ns
    return EagerProfile(ops, total, walls[keep])
