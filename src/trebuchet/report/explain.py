"""`trebuchet explain`: what TorchDynamo captured and what Trebuchet made of it.

Per model: the graph breaks with TorchDynamo's reasons and the user's line
(`torch._dynamo.explain`). Per compiled graph: each step in execution order (a
generated kernel with the ATen ops fused into it and the values it stores for later
steps, with their readers, or a library call), and between
each two adjacent steps, why they are not one kernel, as the scheduler recorded it
when it decided (`Schedule.decisions`, scheduler/kernels.py). It ends with the
folders of the generated code (the `debug` option's output).
"""
from __future__ import annotations

import pathlib
import textwrap
from typing import Any

import torch

from ..ir.nodes import Extern, ExternOutput, GraphIR
from ..runtime import profiler
from ..runtime.profiler import plural, short_op
from ..scheduler.describe import kernel_shape
from ..scheduler.kernels import Kernel, NotFused, Schedule, kernel_reads
from .run import step_fn
from .zoo import Model


def graph_breaks(model: Model) -> dict[str, Any]:
    """TorchDynamo's view: graphs, breaks, reasons with the user's frame."""
    torch._dynamo.reset()
    with torch.set_grad_enabled(_training(model)):
        out = torch._dynamo.explain(model.module)(*model.args, **model.kwargs)
    breaks = []
    for r in out.break_reasons:
        frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in (r.user_stack or [])]
        breaks.append({"reason": str(r.reason).strip(), "where": frames[-1] if frames else ""})
    torch._dynamo.reset()
    return {"graphs": out.graph_count, "breaks": breaks}


def _training(model: Model) -> bool:
    return isinstance(model.module, torch.nn.Module) and model.module.training


def pair_reason(sched: Schedule, a: Any, b: Any) -> str:
    """Why adjacent steps a and b are not one kernel, from the recorded decisions."""
    by_buf = {d.buf: d for d in sched.decisions}
    if isinstance(b, (Extern, ExternOutput)):
        return by_buf[b.name].rejected[0].text()
    first = b.nodes[0].buf.name
    for r in by_buf[first].rejected:
        if r.step == a.name:
            return f"{first}: {r.text()}"
    if isinstance(a, (Extern, ExternOutput)):
        return by_buf[a.name].rejected[0].text()
    # b's first buffer was never tried against a (a later step stopped the search)
    stops = [r.text() for r in by_buf[first].rejected]
    return f"{first} was not tried against {a.name}" + (f": {stops[-1]}" if stops else "")


def readers(graph: GraphIR, sched: Schedule) -> dict[str, list[str]]:
    """Buffer -> the steps that read it from memory (a kernel's own values are not listed),
    "output" for a graph output."""
    out: dict[str, list[str]] = {}
    for step in sched.steps:
        for name in sorted(kernel_reads(step) if isinstance(step, Kernel) else step.reads()):
            out.setdefault(name, []).append(step.name)
    for o in graph.outputs:
        if o.kind == "ref" and o.ref is not None:
            out.setdefault(o.ref.buf, []).append("output")
    return out


def _describe(step: Any, read_by: dict[str, list[str]]) -> str:
    if isinstance(step, Kernel):
        ops = ", ".join(short_op(o) for o in step.origins()) or "(no ATen op recorded)"
        bufs = ", ".join(n.buf.name for n in step.nodes)
        text = f"{step.name} [{kernel_shape(step)}]: {ops}\n      computes {bufs}"
        stored = [f"{n.buf.name} (read by {', '.join(read_by[n.buf.name])})" for n in step.nodes
                  if n.buf.name in read_by]
        if stored:
            text += "\n      stores " + "; ".join(stored)
        return text
    if isinstance(step, Extern):
        return f"{step.name} [library call]: {short_op(step.target)}"
    return f"{step.name} [output {getattr(step, 'item', '')} of {getattr(step, 'source', '')}]"


def explain_graph(label: str, graph: GraphIR, sched: Schedule) -> list[str]:
    """A graph's steps in order, what each kernel computes and stores (and who reads it
    from memory), and between adjacent steps why they are not one kernel."""
    read_by = readers(graph, sched)
    kernels = [s for s in sched.steps if isinstance(s, Kernel)]
    calls = [s for s in sched.steps if isinstance(s, Extern)]
    out = [f"graph {label}: {plural(len(kernels), 'kernel')}, {plural(len(calls), 'library call')}"]
    for i, step in enumerate(sched.steps):
        out.append("  " + _describe(step, read_by))
        if i + 1 < len(sched.steps):
            why = pair_reason(sched, step, sched.steps[i + 1])
            out.append(textwrap.fill(why, width=100, initial_indent="    | not fused: ",
                                     subsequent_indent="    |   "))
    return out


def explain_model(model: Model, target: str = "c", out_dir: str | pathlib.Path = "trebuchet-explain",
                  ) -> str:
    """The whole explanation as text."""
    import trebuchet

    lines = [f"trebuchet explain: {model.description}, target {target}", ""]
    info = graph_breaks(model)
    nb = len(info["breaks"])
    lines.append(f"TorchDynamo captured {info['graphs']} graph{'s' if info['graphs'] != 1 else ''} "
                 f"with {nb} graph break{'s' if nb != 1 else ''}" + (":" if nb else ""))
    for k, b in enumerate(info["breaks"], 1):
        lines.append(f"  break {k}" + (f" at {b['where']}" if b["where"] else "") + ":")
        for para in b["reason"].splitlines():
            if para.strip():
                lines.append(textwrap.fill(para.strip(), width=100, initial_indent="    ",
                                           subsequent_indent="      ", break_long_words=False,
                                           break_on_hyphens=False))
    lines.append("")
    out_dir = pathlib.Path(out_dir).resolve()
    profiler.reset(forget=True)
    compiled = trebuchet.compile(model.module, target=target, profile=True, debug=True,
                                 debug_dir=str(out_dir))
    step_fn(lambda: compiled(*model.args, **model.kwargs), model.module, _training(model))()
    graphs = [g for g in profiler.graphs() if g.schedule is not None]
    for g in graphs:
        lines += explain_graph(g.label, g.ir, g.schedule) + [""]
    if not graphs:
        lines += ["no graph was compiled by Trebuchet (every graph fell back to eager: see the "
                  "warnings above)", ""]
    folders = [out_dir / f"graph{g.graph_id}_{g.kind}" for g in graphs]
    folders = [p for p in folders if p.is_dir()]
    lines.append("generated code (kernels, wrapper, ATen graph, IR):")
    lines += [f"  {p}" for p in folders] or ["  (none)"]
    profiler.reset(forget=True)
    torch._dynamo.reset()
    return "\n".join(lines) + "\n"


__all__ = ["explain_model", "graph_breaks", "pair_reason", "NotFused"]
