"""The compile pipeline for one ATen graph, as a list of named passes.

    lower      ATen FX graph -> GraphIR            (lowering/)
    schedule   GraphIR -> kernels + externs        (scheduler/)
    codegen    kernels -> one C translation unit   (codegen/c.py)
    wrap       straight-line Python caller         (runtime/wrapper.py)
    build      C -> shared library, disk cache     (runtime/cbuild.py)

The first four produce an Artifact (plain data), which the whole-graph cache
(runtime/graph_cache.py) stores, so a new process compiling the same graph skips
them; `instantiate_artifact` then builds the library and binds the wrapper.

The reference target stops after `lower` and executes the IR with torch ops.
With debug on, each pass's output is written to the debug folder.
"""
from __future__ import annotations

import ctypes
import itertools
import pathlib
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
from . import cbuild, graph_cache, profiler
from .wrapper import instantiate, write_wrapper

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
    """Compile one ATen graph; returns a boxed callable (takes the argument list).

    The C target looks the graph up in the whole-graph cache first (not in debug
    mode, which always runs every pass so it can write their output, nor with profiling,
    whose wrapper counts into this process's profiler)."""
    start = time.perf_counter()
    graph_id = next(_graph_ids)
    if options.resolved_target() == "reference":
        counts = OpCounts()
        debug = _debug_dir(options, graph_id, kind, gm)
        graph = lower_graph(gm, counts, options.inline_limit)
        if debug:
            (debug / "ir.txt").write_text(format_ir(graph))
        stats.record(graphs=1, kernels=sum(1 for b in graph.buffers if hasattr(b, "body")),
                     compile_seconds=time.perf_counter() - start, lowered_ops=counts.lowered,
                     extern_ops=counts.extern, fallback_ops=counts.fallback)
        return Executor(graph)
    key, artifact = None, None
    if options.graph_cache and not options.debug and not options.profile:
        try:
            key = graph_cache.graph_key(gm, options)
        except graph_cache.Uncacheable:
            key = None
        artifact = graph_cache.load(options.cache_path(), key) if key else None
    hit = artifact is not None
    if artifact is None:
        artifact = compile_artifact(gm, options, graph_id, kind)
        if key:
            graph_cache.store(options.cache_path(), key, artifact)
    fn = instantiate_artifact(artifact, options)
    stats.record(graphs=1, kernels=artifact.n_kernels, compile_seconds=time.perf_counter() - start,
                 graph_cache_hits=int(hit), lowered_ops=artifact.op_counts["lowered"],
                 extern_ops=artifact.op_counts["extern"], fallback_ops=artifact.op_counts["fallback"],
                 kernel_ops=artifact.kernel_ops)
    return fn


def compile_artifact(gm: torch.fx.GraphModule, options: Options, graph_id: int = 0,
                     kind: str = "forward") -> graph_cache.Artifact:
    """Run the passes: lower, schedule, codegen, write the wrapper (the C build is
    left to `instantiate_artifact`)."""
    counts = OpCounts()
    debug = _debug_dir(options, graph_id, kind, gm)
    graph = lower_graph(gm, counts, options.inline_limit)             # lower
    if debug:
        (debug / "ir.txt").write_text(format_ir(graph))
    sched = schedule(graph)                                           # schedule
    kernels = [s for s in sched.steps if isinstance(s, Kernel)]
    internal = internal_buffers(graph, sched)
    notes = {k.name: f"{k.kind()} kernel; moves {describe_bytes(kernel_bytes(graph, k, internal))}"
             for k in kernels}
    source, sigs, functions = c_codegen.generate(kernels, internal, notes)  # codegen
    plan = profiler.register(graph_id, kind, graph, sched, internal) if options.profile else None
    wrapper = write_wrapper(graph, sched, internal, sigs, plan)       # wrap
    if debug:
        (debug / "kernels.c").write_text(source)
        (debug / "wrapper.py").write_text(wrapper.source)
    return graph_cache.Artifact(
        c_source=source if kernels else None, signatures=sigs, functions=functions, wrapper=wrapper,
        n_kernels=len(kernels),
        op_counts={"lowered": dict(counts.lowered), "extern": dict(counts.extern),
                   "fallback": dict(counts.fallback)},
        kernel_ops=[k.origins() for k in kernels])


def instantiate_artifact(artifact: graph_cache.Artifact, options: Options) -> Callable:
    """Build (or find in the disk cache) the kernels' library and bind the wrapper to it."""
    callables: dict[str, Callable] = {}
    if artifact.c_source is not None:
        lib_path = cbuild.build(artifact.c_source, options.compiler(), options.cflags,  # build
                                options.cache_path())
        lib = cbuild.load(lib_path)
        for name, sig in artifact.signatures.items():
            f = getattr(lib, artifact.functions[name])
            f.argtypes = [ctypes.c_void_p if s.startswith(("ptr", "err")) else ctypes.c_int64
                          for s in sig]
            f.restype = None
            callables[name] = f
        callables["_lib"] = lib
    return instantiate(artifact.wrapper, callables)


def _debug_dir(options: Options, graph_id: int, kind: str, gm: torch.fx.GraphModule
               ) -> pathlib.Path | None:
    """The graph's debug folder, with its ATen graph written (before lowering, so a
    graph that fails to compile is there too); None when debug is off."""
    if not options.debug:
        return None
    debug = options.debug_path() / f"graph{graph_id}_{kind}"
    debug.mkdir(parents=True, exist_ok=True)
    (debug / "aten_graph.txt").write_text(gm.print_readable(print_output=False))
    return debug


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
