"""Per-step timing of compiled graphs (the `profile` option) and the report.

With `profile=True` (or TREBUCHET_PROFILE=1) the pipeline registers one
`StepStats` per kernel and per extern and one `GraphStats` per graph, and the
generated wrapper times each step with `time.perf_counter_ns()` and calls its
`add(ns, bytes)`. Bytes come from the cost model as sympy expressions; the
wrapper evaluates them with the size symbols it bound, so dynamic shapes count
the bytes of each call. Kernels and externs run synchronously on the CPU, so the
wall time around a call is the step's time.

`report()` turns the store into a table sorted by total time, with each step's
bandwidth as a share of the machine's copy bandwidth (measured once per process).
"""
from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from typing import Any

import sympy

from ..ir.nodes import Extern, GraphIR
from ..scheduler.cost import extern_bytes, kernel_bytes
from ..scheduler.describe import kernel_shape
from ..scheduler.kernels import Kernel, Schedule

_lock = threading.Lock()
_graphs: list["GraphStats"] = []
_steps: list["StepStats"] = []
_machine: dict[str, float] = {}       # copy_gbps, probe_ns: measured once per process

COPY_ELEMENTS = 64 * 2**20             # float32 elements per copy buffer (256 MiB, as benchmarks/bench.py)
COPY_RUNS = 5


class GraphStats:
    """Calls of one compiled graph and the time from wrapper entry to return."""

    __slots__ = ("graph_id", "kind", "calls", "ns", "ir", "schedule")

    def __init__(self, graph_id: int, kind: str) -> None:
        self.graph_id, self.kind = graph_id, kind
        self.calls = self.ns = 0
        # the IR and the scheduler's decisions (kernels, fusion reasons), for the report
        # and `trebuchet explain`; kept only for graphs compiled with profiling on
        self.ir: GraphIR | None = None
        self.schedule: Schedule | None = None

    @property
    def label(self) -> str:
        return f"{self.graph_id} {self.kind}"

    def add(self, ns: int) -> None:
        self.calls += 1
        self.ns += ns


class StepStats:
    """Calls, time and bytes of one kernel or extern of one graph."""

    __slots__ = ("graph", "name", "kind", "ops", "calls", "ns", "bytes")

    def __init__(self, graph: GraphStats, name: str, kind: str, ops: list[str]) -> None:
        self.graph, self.name, self.kind, self.ops = graph, name, kind, ops
        self.calls = self.ns = self.bytes = 0

    def add(self, ns: int, nbytes: int) -> None:
        self.calls += 1
        self.ns += ns
        self.bytes += nbytes


@dataclasses.dataclass
class ProfilePlan:
    """What the wrapper writer needs: the graph's stats and, per step name, the
    step's stats and its bytes per call (a sympy expression in the size symbols)."""

    graph: GraphStats
    steps: dict[str, tuple[StepStats, sympy.Expr]]


def register(graph_id: int, kind: str, graph: GraphIR, sched: Schedule,
             internal: set[str]) -> ProfilePlan:
    """Register a scheduled graph's kernels and externs; the plan goes to the wrapper."""
    steps = []
    for s in sched.steps:
        if isinstance(s, Kernel):
            steps.append((s.name, kernel_shape(s), s.origins(),
                          kernel_bytes(graph, s, internal)))
        elif isinstance(s, Extern):
            steps.append((s.name, "extern", [str(s.target)], extern_bytes(graph, s)))
    p = plan(graph_id, kind, steps)
    p.graph.ir, p.graph.schedule = graph, sched
    return p


def plan(graph_id: int, kind: str,
         steps: list[tuple[str, str, list[str], sympy.Expr]]) -> ProfilePlan:
    """Register a graph and its steps (name, kind, ATen ops, bytes per call)."""
    g = GraphStats(graph_id, kind)
    entries = {name: (StepStats(g, name, step_kind, ops), nbytes)
               for name, step_kind, ops, nbytes in steps}
    with _lock:
        _graphs.append(g)
        _steps.extend(e for e, _ in entries.values())
    return ProfilePlan(g, entries)


def reset(forget: bool = False) -> None:
    """Zero every counter; `forget` also drops the registered graphs (their wrappers
    keep counting into stats no report shows)."""
    with _lock:
        if forget:
            _graphs.clear()
            _steps.clear()
        for g in _graphs:
            g.calls = g.ns = 0
        for s in _steps:
            s.calls = s.ns = s.bytes = 0


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """The steps and graphs that ran since the last reset, as plain dicts."""
    with _lock:
        steps = [dict(graph=s.graph.label, name=s.name, kind=s.kind, ops=list(s.ops),
                      calls=s.calls, ns=s.ns, bytes=s.bytes) for s in _steps if s.calls]
        graphs = [dict(graph=g.label, calls=g.calls, ns=g.ns) for g in _graphs if g.calls]
    return {"steps": steps, "graphs": graphs}


def graphs() -> list[GraphStats]:
    """The registered graphs (with their IR and schedule), in compile order."""
    with _lock:
        return list(_graphs)


# ---- machine figures ----

def copy_bandwidth() -> float:
    """GB/s of a large float32 copy (bytes read + bytes written), median of a few runs."""
    if "copy_gbps" not in _machine:
        import torch

        src = torch.ones(COPY_ELEMENTS, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)                       # first touch: page faults, not bandwidth
        times = []
        for _ in range(COPY_RUNS):
            start = time.perf_counter_ns()
            dst.copy_(src)
            times.append(time.perf_counter_ns() - start)
        _machine["copy_gbps"] = 2 * src.nbytes / statistics.median(times)
    return _machine["copy_gbps"]


def probe_cost_ns() -> float:
    """Time one step probe adds outside the timed region (clock read + add())."""
    if "probe_ns" not in _machine:
        ns = time.perf_counter_ns
        dummy = StepStats(GraphStats(-1, "probe"), "probe", "probe", [])
        add = dummy.add
        n = 20000
        start = ns()
        for _ in range(n):
            t = ns()
            add(ns() - t, 0)
        _machine["probe_ns"] = (ns() - start) / n
    return _machine["probe_ns"]


# ---- the report ----

def short_op(op: str) -> str:
    return str(op).removeprefix("aten.").removesuffix(".default")


def short_ops(ops: list[str], width: int) -> str:
    """The op names joined by commas, cut to `width` with a "+N" for the rest."""
    names = [short_op(o) for o in ops]
    if not names:
        return "(copy)"[:width]     # a kernel of no op's work: a layout copy
    for keep in range(len(names), 0, -1):
        text = ",".join(names[:keep]) + (f" +{len(names) - keep}" if keep < len(names) else "")
        if len(text) <= width:
            return text
    return (names[0][:width - 4] + f" +{len(names) - 1}") if len(names) > 1 else names[0][:width]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def human_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def report(ops_width: int = 36) -> str:
    """The per-step table sorted by total time, then totals per kind and per graph."""
    data = snapshot()
    steps, graphs = data["steps"], data["graphs"]
    if not steps and not graphs:
        return ("trebuchet profile: nothing recorded (compile with profile=True or "
                "TREBUCHET_PROFILE=1, then run the model)\n")
    copy_gbps = copy_bandwidth()
    probe_ns = probe_cost_ns()
    total_ns = sum(g["ns"] for g in graphs) or sum(s["ns"] for s in steps)
    kernels = [s for s in steps if s["kind"] != "extern"]
    externs = [s for s in steps if s["kind"] == "extern"]
    kernel_ns = sum(s["ns"] for s in kernels)
    extern_ns = sum(s["ns"] for s in externs)
    overhead_ns = total_ns - kernel_ns - extern_ns
    probes_ns = probe_ns * sum(s["calls"] for s in steps)

    def pct(ns: float) -> str:
        return f"{100 * ns / total_ns:5.1f} %" if total_ns else "    - "

    out = [f"trebuchet profile: {sum(g['calls'] for g in graphs)} graph calls, "
           f"{total_ns / 1e6:.3f} ms in compiled graphs (wrapper entry to return)",
           f"copy bandwidth: {copy_gbps:.1f} GB/s (torch copy_ of {human_bytes(4 * COPY_ELEMENTS)} "
           f"float32, read + write bytes, median of {COPY_RUNS}; measured once per process)",
           ""]
    head = ("graph", "step", "kind", "fused ops", "calls", "total ms", "share", "mean us",
            "bytes/call", "GB/s", "% copy")
    rows = []
    for s in sorted(steps, key=lambda s: -s["ns"]):
        mean_bytes = s["bytes"] / s["calls"]
        gbps = s["bytes"] / s["ns"] if s["ns"] else 0.0
        ops = short_ops(s["ops"], ops_width)
        rows.append((s["graph"], s["name"], s["kind"], ops, str(s["calls"]),
                     f"{s['ns'] / 1e6:.3f}", pct(s["ns"]), f"{s['ns'] / s['calls'] / 1e3:.1f}",
                     human_bytes(mean_bytes) if s["bytes"] else "-",
                     f"{gbps:.1f}" if s["bytes"] else "-",
                     f"{100 * gbps / copy_gbps:.0f} %" if s["bytes"] else "-"))
    left = {0, 1, 2, 3}
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def line(cells: tuple) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out += [line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    totals = (("kernels", kernel_ns, plural(len(kernels), "kernel")),
              ("externs", extern_ns, plural(len(externs), "extern")),
              ("wrapper overhead", overhead_ns, "allocation, bookkeeping; includes "
               f"~{probes_ns / 1e6:.3f} ms of profiler probes"))
    out.append("")
    out += [f"{what:<17}{ns / 1e6:10.3f} ms  {pct(ns)}  ({note})" for what, ns, note in totals]
    if len(graphs) > 1:
        out += ["", "per graph:"]
        for g in sorted(graphs, key=lambda g: -g["ns"]):
            mine = [s for s in steps if s["graph"] == g["graph"]]
            k_ns = sum(s["ns"] for s in mine if s["kind"] != "extern")
            e_ns = sum(s["ns"] for s in mine if s["kind"] == "extern")
            out.append(f"  {g['graph']:<14} {g['calls']:6d} calls  {g['ns'] / 1e6:10.3f} ms "
                       f"{pct(g['ns'])}  kernels {k_ns / 1e6:.3f} ms, externs {e_ns / 1e6:.3f} ms, "
                       f"overhead {(g['ns'] - k_ns - e_ns) / 1e6:.3f} ms")
    return "\n".join(out) + "\n"
