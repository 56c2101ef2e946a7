"""The compile pipeline for one ATen graph, as a list of named passes.

    lower      ATen FX graph -> GraphIR            (lowering/)
    schedule   GraphIR -> kernels + externs        (scheduler/)
    codegen    kernels -> one C translation unit   (codegen/c.py)
    build      C -> shared library, disk cache     (runtime/cbuild.py)
    wrap       straight-line Python caller         (runtime/wrapper.py)

The reference target stops after `lower` and executes the IR with torch ops.
With debug on, each pass's output is written to the debug folder.
"""
from __future__ import annotations

import ctypes
import itertools
import time
from typing import Callable

import torch

from .. import stats
from ..codegen import c as c_codegen
from ..codegen.reference import Executor
from ..config import Options
from ..ir.expr import loads
from ..ir.nodes import GraphIR, Reduction
from ..lowering import OpCounts, lower_graph
from ..scheduler.cost import describe_bytes, kernel_bytes
from ..scheduler.kernels import Kernel, Schedule, kernel_reads, schedule
from . import cbuild, profiler
from .wrapper import build_wrapper

_graph_ids = itertools.count()


def internal_buffers(graph: GraphIR, sched: Schedule) -> set[str]:
    """Buffers that live only in registers: read nowhere but their own kernel, as locals."""
    outside: set[str] = {o.ref.buf for o in graph.outputs if o.kind == "ref"}
    for step in sched.steps:
        if isinstance(step, Kernel):
            outside |= kernel_reads(step)
        else:
            outside |= step.reads()
    internal = set()
    for step in sched.steps:
        if not isinstance(step, Kernel):
            continue
        for node in step.nodes:
            name = node.buf.name
            if name in outside:
                continue
            ok = True
            for other in step.nodes:
                for ld in loads(other.body):
                    if ld.buf != name:
                        continue
                    if ld.dynamic is not None:
                        ok = False
                    elif (node.level == "full" and not isinstance(node.buf, Reduction)
                          and (other.stage != node.stage or other.level != "full")):
                        ok = False
            if ok:
                internal.add(name)
    return internal


def compile_graph(gm: torch.fx.GraphModule, options: Options, kind: str = "forward") -> Callable:
    """Compile one ATen graph; returns a boxed callable (takes the argument list)."""
    start = time.perf_counter()
    graph_id = next(_graph_ids)
    debug = options.debug_path() / f"graph{graph_id}_{kind}" if options.debug else None
    if debug:
        debug.mkdir(parents=True, exist_ok=True)
        (debug / "aten_graph.txt").write_text(gm.print_readable(print_output=False))
    counts = OpCounts()
    graph = lower_graph(gm, counts, options.inline_limit)             # lower
    if debug:
        (debug / "ir.txt").write_text(format_ir(graph))
    kernel_ops: list[list[str]] = []
    if options.resolved_target() == "reference":
        fn: Callable = Executor(graph)
        n_kernels = sum(1 for b in graph.buffers if hasattr(b, "body"))
    else:
        sched = schedule(graph)                                       # schedule
        kernels = [s for s in sched.steps if isinstance(s, Kernel)]
        internal = internal_buffers(graph, sched)
        notes = {k.name: f"{k.kind()} kernel; moves {describe_bytes(kernel_bytes(graph, k, internal))}"
                 for k in kernels}
        source, sigs, functions = c_codegen.generate(kernels, internal, notes)  # codegen
        callables: dict[str, Callable] = {}
        if kernels:
            lib_path = cbuild.build(source, options.compiler(), options.cflags,  # build
                                    options.cache_path())
            lib = cbuild.load(lib_path)
            for k in kernels:
                f = getattr(lib, functions[k.name])
                f.argtypes = [ctypes.c_void_p if s.startswith("ptr") else ctypes.c_int64
                              for s in sigs[k.name]]
                f.restype = None
                callables[k.name] = f
            callables["_lib"] = lib
        plan = profiler.register(graph_id, kind, graph, sched, internal) if options.profile else None
        fn, wrapper_src = build_wrapper(graph, sched, internal, sigs, callables, plan)  # wrap
        if debug:
            (debug / "kernels.c").write_text(source)
            (debug / "wrapper.py").write_text(wrapper_src)
        n_kernels = len(kernels)
        kernel_ops = [k.origins() for k in kernels]
    stats.record(graphs=1, kernels=n_kernels, compile_seconds=time.perf_counter() - start,
                 lowered_ops=counts.lowered, extern_ops=counts.extern,
                 fallback_ops=counts.fallback, kernel_ops=kernel_ops)
    return fn


def format_ir(graph: GraphIR) -> str:
    lines = [f"inputs: {', '.join(f'{b.name}{list(b.shape)}:{b.dtype}' for b in graph.inputs)}"]
    for b in graph.buffers:
        desc = type(b).__name__
        extra = ""
        if hasattr(b, "body") and b.body is not None:
            extra = f" = {b.body!r}"
        if isinstance(b, Reduction):
            desc += f"[{b.reduce_type} over {list(b.reduce_ranges)}]"
        if hasattr(b, "target") and b.target is not None:
            extra = f" = {b.target}(...)"
        lines.append(f"{b.name}: {desc} {list(b.shape)} {b.dtype}{extra}")
    lines.append(f"outputs: {[o.ref.buf if o.ref else o.value for o in graph.outputs]}")
    return "\n".join(lines) + "\n"
