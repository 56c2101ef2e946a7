"""The compiled side of the report: each generated kernel and library call of the
graphs Trebuchet compiled, from the `profile` option (runtime/profiler.py): its time
and bytes as the profiled wrapper measured them, its FLOPs from the IR
(`counting.py`), its class (`classes.py`)."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import sympy

from ..ir.nodes import Extern, ExternOutput, GraphIR
from ..runtime import profiler
from ..scheduler.cost import buffer_bytes
from ..scheduler.describe import internal_buffers
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
    bytes_written: float | None = None      # of `bytes`; the rest is read


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
    internal: dict[str, set[str]] = {}
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
        written = None
        if g is not None and g.ir is not None and obj is not None:
            if s["graph"] not in internal:
                internal[s["graph"]] = internal_buffers(g.ir, g.schedule)
            written = written_bytes(g.ir, obj, internal[s["graph"]])
        calls = s["calls"]
        steps.append(Step(s["graph"], s["name"], s["kind"], cls, [short_name(o) for o in s["ops"]],
                          calls, s["ns"], s["bytes"], None if flops is None else flops * calls,
                          None if trans is None else trans * calls,
                          None if written is None else written * calls))
    graph_ns = sum(g["ns"] for g in data["graphs"])
    return CompiledProfile(steps, graph_ns, wall, len(data["graphs"]))


def written_bytes(graph: GraphIR, step: object, internal: set[str]) -> int | None:
    """Bytes a kernel stores (its buffers that are not register-only) or a library call
    writes (its outputs), per call; None with symbolic sizes."""
    if isinstance(step, Kernel):
        names = [n.buf.name for n in step.nodes if n.buf.name not in internal]
    elif isinstance(step, Extern) and step.multi:
        names = [b.name for b in graph.buffers if isinstance(b, ExternOutput) and b.source == step.name]
    elif isinstance(step, Extern):
        names = [step.name]
    else:
        return None
    total = sum((buffer_bytes(graph, n) for n in names), sympy.Integer(0))
    return int(total) if sympy.sympify(total).is_number else None


def _find(g: profiler.GraphStats, name: str) -> object:
    if g.schedule is None:
        return None
    for s in g.schedule.steps:
        if s.name == name:
            return s
    return None
