"""`trebuchet report`'s measurements, as one plain dict (the JSON the CLI writes and
the tables and the HTML page are made from).

Order of work: build the model; measure the machine's roofs; time eager and the
compiled model in interleaved rounds (median and spread); profile eager (each ATen
op counted and timed, eager.py); compile again with `profile=True` and time each
kernel and library call (compiled.py); then classify and sum.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..stats import reset as stats_reset, snapshot as stats_snapshot
from ..runtime import profiler
from . import compiled, eager, machine
from .timing import interleaved, summary
from .classes import CLASSES
from .zoo import Model


def step_fn(fn: Callable[[], Any], module: Any, train: bool) -> Callable[[], Any]:
    """One model step: the forward under no_grad, or (train) forward and the backward of the
    first floating-point output's sum, gradients dropped after."""
    if not train:
        def step() -> Any:
            with torch.no_grad():
                return fn()
        return step

    def train_step() -> Any:
        out = fn()
        first = _first_tensor(out)
        first.float().sum().backward()
        if isinstance(module, torch.nn.Module):
            for p in module.parameters():
                p.grad = None
        return out
    return train_step


def _first_tensor(out: Any) -> torch.Tensor:
    from torch.utils._pytree import tree_flatten

    for x in tree_flatten(out)[0]:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x
    raise ValueError("the model returned no floating-point tensor to train on")


def _compile(model: Model, target: str, profile: bool) -> Callable[[], Any]:
    import trebuchet

    compiled_module = trebuchet.compile(model.module, target=target, profile=profile)
    return lambda: compiled_module(*model.args, **model.kwargs)


def _max_diff(a: Any, b: Any) -> float:
    from torch.utils._pytree import tree_flatten

    la, lb = tree_flatten(a)[0], tree_flatten(b)[0]
    diff = 0.0
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.is_floating_point():
            diff = max(diff, (x.detach().double() - y.detach().double()).abs().max().item())
    return diff


def measure(model: Model, target: str = "c", rounds: int = 10, profile_runs: int = 5,
            progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Everything the report shows, per model step (a forward, or forward + backward)."""
    train = model.module.training if isinstance(model.module, torch.nn.Module) else False
    eager_step = step_fn(model, model.module, train)
    progress("measuring the machine (copy bandwidth, matmul FLOP/s)")
    roofs = machine.measure()
    progress("compiling with Trebuchet")
    torch._dynamo.reset()
    stats_reset()
    t0 = time.perf_counter()
    comp_step = step_fn(_compile(model, target, profile=False), model.module, train)
    out_c = comp_step()
    compile_s = time.perf_counter() - t0
    counters = stats_snapshot()
    out_e = eager_step()
    diff = _max_diff(out_e, out_c)
    progress(f"timing eager and Trebuchet, {rounds} interleaved rounds")
    interleaved({"eager": eager_step, "trebuchet": comp_step}, 2)       # warm-up
    times = interleaved({"eager": eager_step, "trebuchet": comp_step}, rounds)
    progress("profiling eager (every ATen op counted and timed)")
    eprof = eager.profile(eager_step, runs=profile_runs)
    progress("profiling the compiled graphs (profile=True)")
    torch._dynamo.reset()
    profiler.reset(forget=True)
    prof_step = step_fn(_compile(model, target, profile=True), model.module, train)
    prof_step()
    cprof = compiled.profile(prof_step, runs=profile_runs)
    profiler.reset(forget=True)
    torch._dynamo.reset()
    return assemble(model, target, roofs, times, eprof, cprof, compile_s, counters, diff)


def _shares(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each class's flops/bytes/ns with its % of the column total (the column sums to 100)."""
    totals = {k: sum(r[k] for r in rows.values()) for k in ("flops", "bytes", "ns")}
    out = {}
    for cls in CLASSES:
        r = dict(rows[cls])
        for k in ("flops", "bytes", "ns"):
            r[f"{k}_pct"] = 100 * r[k] / totals[k] if totals[k] else 0.0
        out[cls] = r
    out["total"] = {**totals, "flops_pct": 100.0 if totals["flops"] else 0.0,
                    "bytes_pct": 100.0 if totals["bytes"] else 0.0,
                    "ns_pct": 100.0 if totals["ns"] else 0.0}
    return out


def _empty() -> dict[str, dict[str, float]]:
    return {c: {"flops": 0, "bytes": 0, "ns": 0.0, "transcendentals": 0, "count": 0} for c in CLASSES}


def assemble(model: Model, target: str, roofs: dict[str, float], times: dict[str, list[float]],
             eprof: eager.EagerProfile, cprof: compiled.CompiledProfile, compile_s: float,
             counters: dict[str, Any], diff: float) -> dict[str, Any]:
    bw = roofs["copy_gbps"]                 # GB/s = bytes per ns
    peak = roofs["peak_gflops"]             # GFLOP/s = FLOPs per ns
    e_rows = _empty()
    for op in eprof.ops.values():
        r = e_rows[op.cls]
        r["flops"] += op.flops
        r["bytes"] += op.bytes
        r["ns"] += op.ns
        r["transcendentals"] += op.transcendentals
        r["count"] += op.calls
    c_rows = _empty()
    kernels = []
    for s in sorted(cprof.steps, key=lambda s: -s.ns):
        r = c_rows[s.cls]
        r["flops"] += s.flops or 0
        r["bytes"] += s.bytes
        r["ns"] += s.ns
        r["transcendentals"] += s.transcendentals or 0
        r["count"] += s.calls
        kernels.append(_kernel_row(s, bw, peak))
    e_time, c_time = summary(times["eager"]), summary(times["trebuchet"])
    # Contractions' share of a profiled step's wall time, applied to the end-to-end median:
    # shares and medians each come from one kind of run (subtracting a profiled time from a
    # median of other runs mixes two runs, which on a busy machine can even go negative).
    e_share = min(1.0, e_rows["contraction"]["ns"] / eprof.wall_ns) if eprof.wall_ns else 0.0
    c_share = min(1.0, c_rows["contraction"]["ns"] / cprof.wall_ns) if cprof.wall_ns else 0.0
    e_nc = e_time["median_ms"] * 1e6 * (1 - e_share)
    c_nc = c_time["median_ms"] * 1e6 * (1 - c_share)
    step_ns = sum(s.ns for s in cprof.steps)
    return {
        "model": model.description,
        "target": target,
        "machine": roofs,
        "timing": {"eager": e_time, "trebuchet": c_time,
                   "speedup": e_time["median_ms"] / c_time["median_ms"],
                   "compile_seconds": compile_s, "max_abs_diff": diff},
        "compile": {"graphs": counters.get("graphs", 0), "kernels": counters.get("kernels", 0),
                    "graph_fallbacks": counters.get("graph_fallbacks", 0),
                    "fallback_ops": counters.get("fallback_ops", {})},
        "classes": {"eager": _shares(e_rows), "trebuchet": _shares(c_rows)},
        "eager_ops": [dict(name=o.name, cls=o.cls, calls=o.calls, flops=o.flops,
                           transcendentals=o.transcendentals, bytes=o.bytes, ns=o.ns)
                      for o in sorted(eprof.ops.values(), key=lambda o: -o.ns)],
        "kernels": kernels,
        "totals": {
            # eager: the ATen ops' self times against the profiled step's wall time
            "eager_op_ns": eprof.op_ns, "eager_wall_ns": eprof.wall_ns,
            # compiled: kernels + library calls against the time inside the compiled graphs
            "compiled_step_ns": step_ns, "compiled_graph_ns": cprof.graph_ns,
            "compiled_wall_ns": cprof.wall_ns, "compiled_graph_calls": cprof.graphs,
            "margin_pct": 100 * (cprof.graph_ns - step_ns) / cprof.graph_ns if cprof.graph_ns else 0.0,
        },
        "fusion": {
            "eager_contraction_share": e_share, "trebuchet_contraction_share": c_share,
            "eager_non_contraction_ms": e_nc / 1e6, "trebuchet_non_contraction_ms": c_nc / 1e6,
            "removed_pct": 100 * (e_nc - c_nc) / e_nc if e_nc > 0 else 0.0,
        },
    }


def _kernel_row(s: compiled.Step, bw: float, peak: float) -> dict[str, Any]:
    gbps = s.bytes / s.ns if s.ns else 0.0
    intensity = (s.flops / s.bytes) if s.flops is not None and s.bytes else None
    row = dict(graph=s.graph, name=s.name, kind=s.kind, cls=s.cls, ops=s.ops, calls=s.calls,
               ns=s.ns, bytes=s.bytes, bytes_written=s.bytes_written,
               bytes_read=None if s.bytes_written is None else s.bytes - s.bytes_written,
               flops=s.flops, transcendentals=s.transcendentals,
               gbps=gbps, copy_fraction=gbps / bw if bw else None, intensity=intensity,
               gflops=(s.flops / s.ns) if s.flops is not None and s.ns else None)
    if s.flops is not None and s.ns:
        ideal_ns = max(s.flops / peak, s.bytes / bw)
        row["bound"] = "memory" if s.bytes / bw >= s.flops / peak else "compute"
        row["of_bound"] = ideal_ns / s.ns
    else:
        row["bound"], row["of_bound"] = None, None
    return row
