"""The compiled side of the report: each generated kernel and library call of the
graphs Trebuchet compiled, from the `profile` option (runtime/profiler.py): its time
and bytes as the profiled wrapper measured them, its FLOPs from the IR
(`counting.py`), its class (`classes.py`)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from ..ir.nodes import Extern
from ..runtime import profiler
from ..scheduler.kernels import Kernel
from .classes import classify_kernel, classify_op, short_name
from .counting import extern_flops, kernel_flops


@dataclasses.dataclass
class Step:
    """One kernel or library call of one graph, per model step (not per call)."""

    graph: str
    name: str
    kind: str                    # "pointwise" / "reduction" / ... or "extern"
    cls: str
    ops: list[str]
    calls: int                   # calls per model step
    ns: float
    bytes: float
    flops: int | None
    transcendentals: int | None


@dataclasses.dataclass
class CompiledProfile:
    steps: list[Step]
    graph_ns: float              # wrapper entry to return, summed over graphs, per step
    wall_ns: float               # wall time of a profiled step
    graphs: int


def profile(step: Callable[[], Any], runs: int) -> CompiledProfile:
    """Run an already warmed-up step compiled with profile=True `runs` times, each counted
    on its own, and keep the run of median wall time (as eager.py does)."""
    samples = []
    for _ in range(runs):
        profiler.reset()
        start = time.perf_counter_ns()
        step()
        samples.append((time.perf_counter_ns() - start, profiler.snapshot()))
    wall, data = sorted(samples, key=lambda x: x[0])[runs // 2]
    detail = {g.label: g for g in profiler.graphs()}
    steps = []
    for s in data["steps"]:
        g = detail.get(s["graph"])
        obj = _find(g, s["name"]) if g is not None else None
        flops = trans = None          # per call
        if isinstance(obj, Kernel):
            flops, trans = kernel_flops(obj)
            cls = classify_kernel(s["kind"], s["ops"])
        else:
            if isinstance(obj, Extern) and g is not None and g.ir is not None:
                flops, trans = extern_flops(g.ir, obj)
            cls = classify_op(s["ops"][0]) if s["ops"] else "other"
        calls = s["calls"]
        steps.append(Step(s["graph"], s["name"], s["kind"], cls, [short_name(o) for o in s["ops"]],
                          calls, s["ns"], s["bytes"], None if flops is None else flops * calls,
                          None if trans is None else trans * calls))
    graph_ns = sum(g["ns"] for g in data["graphs"])
    return CompiledProfile(steps, graph_ns, wall, len(data["graphs"]))


def _find(g: profiler.GraphStats, name: str) -> object:
    if g.schedule is None:
        return None
    for s in g.schedule.steps:
        if s.name == name:
            return s
    return None
