"""The compile pipeline for one ATen graph, as a list of named passes.

    lower      ATen FX graph -> GraphIR            (lowering/)
    schedule   GraphIR -> kernels + externs        (scheduler/)
    codegen    kernels -> the target's source      (codegen/<target>, found by name)
    wrap       straight-line Python caller         (runtime/wrapper.py)
    build      source -> callables, disk cache     (the target's `load`; for C on a
                                                   background thread, see `Building`)

The first four produce an Artifact (plain data), which the whole-graph cache
(runtime/graph_cache.py) stores, so a new process compiling the same graph skips
them; `instantiate_artifact` then builds the kernels and binds the wrapper.

Before the passes, the target is chosen by the device of the graph's tensors
(`codegen/target.py` `choose`: "auto" is C for CPU tensors, Triton for CUDA tensors).
A target that executes the IR itself (the reference) stops after `lower`.
With debug on, each pass's output is written to the debug folder. With the
`cudagraphs` option, a static-shape CUDA inference graph is then captured and
replayed as a CUDA graph (runtime/cudagraphs.py).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import itertools
import logging
import os
import pathlib
import threading
import time
from typing import Any, Callable, Collection, Iterator

import torch

from .. import stats
from ..codegen.target import Target, choose, get_target
from ..config import Options, configure_logging
from ..ir.nodes import GraphIR, Reduction, Scatter
from ..lowering import OpCounts, lower_graph
from ..lowering.graph import graph_device
from ..scheduler.cost import describe_bytes, kernel_bytes
from ..scheduler.describe import internal_buffers, kernel_params
from ..scheduler.kernels import Kernel, schedule
from . import cudagraphs, graph_cache, onednn, profiler
from .wrapper import instantiate, write_wrapper

_graph_ids = itertools.count()
log = logging.getLogger("trebuchet")


def compile_graph(gm: torch.fx.GraphModule, options: Options, kind: str = "forward",
                  free_outputs: Collection[int] = ()) -> Callable:
    """Compile one ATen graph; returns a boxed callable (takes the argument list) whose
    `output_strides` lists, per output, the strides the compiler chose for it (None: eager's).
    `kind`: "inference", "forward" or "backward"; `free_outputs`: the output positions
    whose layout is the compiler's to choose (a forward graph's saved activations).

    A generating target looks the graph up in the whole-graph cache first (not in
    debug mode, which always runs every pass so it can write their output, nor with
    profiling, whose wrapper counts into this process's profiler).

    Python's cyclic garbage collector is paused while the passes run: they allocate many
    small objects (sympy expressions, IR nodes) that live until the end, and the collections
    they set off rescan every object of the process (0.25 s of a ViT-Tiny training step's
    1.1 s compile on the benchmark machine). Cycles made meanwhile are collected after."""
    with _collector_paused():
        return _compile_graph(gm, options, kind, free_outputs)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _compile_graph(gm: torch.fx.GraphModule, options: Options, kind: str,
                   free_outputs: Collection[int]) -> Callable:
    start = time.perf_counter()
    graph_id = next(_graph_ids)
    configure_logging()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("graph %d (%s): compiling %d ATen ops", graph_id, kind, _op_count(gm))
    device = graph_device(gm) if gm is not None else None
    target = choose(options.target, device.type if device else None)
    try:
        return _compile(gm, options, kind, graph_id, target, device, start, frozenset(free_outputs))
    except Exception:
        if not options.strict:       # it falls back to eager: counted for its target too
            stats.record_target(target.name, graph_fallbacks=1)
        raise


def _compile(gm: torch.fx.GraphModule, options: Options, kind: str, graph_id: int,
             target: Target, device: torch.device | None, start: float,
             free_outputs: frozenset[int]) -> Callable:
    if target.executes_ir:
        counts = OpCounts()
        debug = _debug_dir(options, graph_id, kind, gm)
        graph = lower_graph(gm, counts, options.inline_limit, _type(device), target.float_sum_dtype)
        if debug:
            (debug / "ir.txt").write_text(format_ir(graph))
        stats.record(graphs=1, kernels=sum(1 for b in graph.buffers if hasattr(b, "body")),
                     compile_seconds=time.perf_counter() - start, lowered_ops=counts.lowered,
                     extern_ops=counts.extern, fallback_ops=counts.fallback, target=target.name)
        return target.run_ir(graph)
    key, artifact = None, None
    if options.graph_cache and not options.debug and not options.profile:
        try:
            key = graph_cache.graph_key(gm, options, target.name,
                                        f"{kind}|{sorted(free_outputs)}|"
                                        f"{onednn.applies(_type(device), options.matmul)}")
        except graph_cache.Uncacheable:
            key = None
        artifact = graph_cache.load(options.cache_path(), key) if key else None
    hit = artifact is not None
    if artifact is None:
        artifact = compile_artifact(gm, options, graph_id, kind, target, device, free_outputs)
        if key:
            graph_cache.store(options.cache_path(), key, artifact)
    n_ops = _op_count(gm)

    def finished(fn: Callable, seconds: float) -> Callable:
        if log.isEnabledFor(logging.INFO):
            log.info("graph %d (%s): %d ATen ops -> %d kernels, %d library calls, %d fallback ops "
                     "in %.2f s%s", graph_id, kind, n_ops, artifact.n_kernels,
                     sum(artifact.op_counts["extern"].values()), sum(artifact.op_counts["fallback"].values()),
                     seconds, " (graph cache hit)" if hit else "")
        stats.record(graphs=1, kernels=artifact.n_kernels, compile_seconds=seconds,
                     graph_cache_hits=int(hit), lowered_ops=artifact.op_counts["lowered"],
                     extern_ops=artifact.op_counts["extern"], fallback_ops=artifact.op_counts["fallback"],
                     kernel_ops=artifact.kernel_ops, target=target.name)
        return fn

    if _builds_in_background(options, target, artifact):
        passes = time.perf_counter() - start          # then the build's own seconds
        return Building(lambda: _timed_build(artifact, options), artifact.output_strides,
                        lambda fn, build: finished(fn, passes + build),
                        lambda: stats.record_target(target.name, graph_fallbacks=1))
    fn = instantiate_artifact(artifact, options)
    if options.cudagraphs:
        fn = cudagraphs.wrap(fn, lambda: instantiate_artifact(artifact, options), gm, kind, device,
                             options.profile)
    fn.output_strides = artifact.output_strides
    return finished(fn, time.perf_counter() - start)


# Kernel builds run on one background thread (the C compiler runs in its own processes;
# the thread waits for them), so a compile returns while they run and what comes next
# overlaps them: TorchDynamo finishing the frame, AOTAutograd compiling the backward graph.
# The graph's first call waits for its build (`Building.wait`). Strict mode, debug,
# profiling and CUDA graphs build before returning, as do targets other than C (Triton
# compiles each kernel at its first launch).
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _builder() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                          thread_name_prefix="trebuchet-build")
    return _executor


def _forget_builder() -> None:
    """In a forked child: the parent's build thread does not exist here."""
    global _executor
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_builder)


def _builds_in_background(options: Options, target: Target, artifact: graph_cache.Artifact) -> bool:
    return (artifact.code is not None and target.background_build and not options.strict
            and not options.debug and not options.profile and not options.cudagraphs)


def _timed_build(artifact: graph_cache.Artifact, options: Options) -> tuple[Callable, float]:
    start = time.perf_counter()
    fn = instantiate_artifact(artifact, options)
    return fn, time.perf_counter() - start


class Building:
    """A compiled graph whose kernels are being built in the background. `wait()`
    finishes the build (raising its error: the caller falls back, frontend/backend.py);
    a call waits first. `output_strides` is known before the build ends. In a process
    forked before the build ended (its thread is not there), `wait()` builds itself."""

    def __init__(self, build: Callable[[], tuple[Callable, float]], output_strides: list,
                 finished: Callable[[Callable, float], Callable], failed: Callable[[], None]):
        self._build, self._finished, self._failed = build, finished, failed
        self._future = _builder().submit(build)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._fn: Callable | None = None
        self.output_strides = output_strides

    def wait(self) -> Callable:
        with self._lock:
            if self._fn is None:
                try:
                    if os.getpid() != self._pid and not self._future.done():
                        fn, seconds = self._build()
                    else:
                        fn, seconds = self._future.result()
                except Exception:
                    self._failed()
                    raise
                self._fn = self._finished(fn, seconds)
            return self._fn

    def __call__(self, args: list) -> Any:
        return (self._fn or self.wait())(args)


def _type(device: torch.device | None) -> str:
    return device.type if device is not None else "cpu"


def _op_count(gm: torch.fx.GraphModule | None) -> int:
    graph = getattr(gm, "graph", None)      # tests hand lowering a prepared graph, no FX graph
    return sum(1 for n in graph.nodes if n.op == "call_function") if graph is not None else 0


def compile_artifact(gm: torch.fx.GraphModule, options: Options, graph_id: int = 0,
                     kind: str = "forward", target: Target | None = None,
                     device: torch.device | None = None,
                     free_outputs: Collection[int] = ()) -> graph_cache.Artifact:
    """Run the passes: lower, schedule, codegen, write the wrapper (the build is left
    to `instantiate_artifact`). `device`: where the graph's tensors are (None: CPU).
    The layout plan (lowering/layout.py) runs on inference and backward graphs, and on
    forward graphs where it may choose the saved activations' layout."""
    target = target or get_target(options.resolved_target())
    counts = OpCounts()
    debug = _debug_dir(options, graph_id, kind, gm)
    layout_plan = kind in ("inference", "backward") or bool(free_outputs)
    graph = lower_graph(gm, counts, options.inline_limit, _type(device),     # lower
                        target.float_sum_dtype, channels_last=layout_plan, free_outputs=free_outputs)
    if debug:
        (debug / "ir.txt").write_text(format_ir(graph))
    sched = schedule(graph)                                           # schedule
    kernels = [s for s in sched.steps if isinstance(s, Kernel)]
    internal = internal_buffers(graph, sched)
    params = {k.name: kernel_params(k, internal) for k in kernels}
    notes = {k.name: f"{k.kind()} kernel; moves {describe_bytes(kernel_bytes(graph, k, internal))}"
             for k in kernels}
    code = target.generate(kernels, internal, params, notes)          # codegen
    plan = profiler.register(graph_id, kind, graph, sched, internal) if options.profile else None
    routes = onednn.ROUTES if onednn.applies(_type(device), options.matmul) else None
    wrapper = write_wrapper(graph, sched, internal, params, target.launch_arg, plan,  # wrap
                            device=str(device or "cpu"), defers_errors=target.defers_errors,
                            routes=routes, over_new_results=kind == "inference")
    if debug:
        (debug / target.source_file).write_text(code.source)
        (debug / "wrapper.py").write_text(wrapper.source)
    return graph_cache.Artifact(
        target=target.name, code=code if kernels else None, wrapper=wrapper,
        n_kernels=len(kernels),
        op_counts={"lowered": dict(counts.lowered), "extern": dict(counts.extern),
                   "fallback": dict(counts.fallback)},
        kernel_ops=[k.origins() for k in kernels],
        output_strides=[tuple(int(s) for s in o.ref.stride) if k in free_outputs and o.ref else None
                        for k, o in enumerate(graph.outputs)])


def instantiate_artifact(artifact: graph_cache.Artifact, options: Options) -> Callable:
    """Build (or find in the disk cache) the kernels and bind the wrapper to them."""
    callables: dict[str, Callable] = {}
    if artifact.code is not None:
        callables = get_target(artifact.target).load(artifact.code, options)   # build
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
        if isinstance(b, Scatter):
            desc += f"[points {list(b.ranges)}, entries r0 < {b.entries}]"
            extra = (f" = {b.init!r}; then [{b.index}"
                     f"{'' if b.dynamic is None else f' + {b.dynamic!r}'}] = {b.update!r}")
        if hasattr(b, "target") and b.target is not None:
            extra = f" = {b.target}(...)"
        lines.append(f"{b.name}: {desc} {list(b.shape)} {b.dtype}{extra}")
    lines.append(f"outputs: {[o.ref.buf if o.ref else o.value for o in graph.outputs]}")
    return "\n".join(lines) + "\n"
