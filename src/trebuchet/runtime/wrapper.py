"""Generate the Python function that runs one compiled graph.

The wrapper is straight-line Python source: bind size symbols from the inputs,
allocate buffers, call kernels (their arguments written by the target's
`launch_arg`) and externs as ATen calls, drop buffers after their last use
(reusing same-sized kernel buffers), and return the outputs. No per-op interpretation happens at run time.

Buffers are allocated on the graph's device. Kernels that check data (out-of-range
indices, integer division by zero) set error bits that the wrapper turns into eager's
exception. Where the flag is host memory (C) it is read after each such kernel; where
the target keeps it in device memory (`Target.defers_errors`: Triton), each checking
kernel gets its own slot and the wrapper reads them all once, at the end of the call,
a synchronization per call rather than per kernel. It reads them earlier only before a
library call that is not a matmul, convolution or attention (an op that might itself
fail on values computed from a bad index, e.g. a device-side assert on the GPU).

With a `ProfilePlan` (the `profile` option) each kernel call and each extern
call is bracketed by clock reads that add its time and bytes to the profiler,
and the whole call is timed too; without one the source has no timing code.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import sympy
import torch

from ..codegen.indexing import print_index
from ..ir.expr import INDEX_ERROR, INDEX_ERRORS, ZERO_DIVISION_ERROR
from ..ir.nodes import (SOURCE_VALUE, Buffer, BufferRef, Extern, ExternOutput, GraphIR, OpaqueInput,
                        contiguous_strides, op_short_name, product)
from ..scheduler.describe import ErrorFlag, Param
from ..scheduler.kernels import Kernel, Schedule, kernel_reads
from ..scheduler.reuse import owned_buffers, writes_in_place
from .buffers import BufferSlots, alias
from .profiler import ProfilePlan


def py(expr: Any) -> str:
    """Python source for a size/index expression or a constant argument."""
    if isinstance(expr, sympy.Expr):
        if expr.is_number and not expr.is_integer:
            return repr(float(expr))
        if isinstance(expr, sympy.logic.boolalg.BooleanAtom):
            return repr(bool(expr))
        return print_index(expr, "py")
    if isinstance(expr, (sympy.logic.boolalg.BooleanAtom,)):
        return repr(bool(expr))
    return repr(expr)


def shape_code(shape: Any) -> str:
    items = [py(s) for s in shape]
    return "(" + "".join(f"{i}, " for i in items) + ")"


class WrapperWriter:
    def __init__(self, graph: GraphIR, sched: Schedule, internal: set[str],
                 params: dict[str, list[Param]], launch_arg: Callable[[Param], str],
                 profile: ProfilePlan | None = None, defers_errors: bool = False,
                 routes: dict[tuple, Callable] | None = None, over_new_results: bool = False):
        self.g, self.sched, self.internal, self.params = graph, sched, internal, params
        self.routes = routes or {}         # (ATen op, dtype) -> the function called instead
        self.over_new_results = over_new_results   # kernels may write over library results
        self.launch_arg = launch_arg
        self.profile = profile
        self.defers_errors = defers_errors
        self.error_ops: list[str] = []     # deferred checks: the ops of each checking kernel
        self.pending = False               # a checking kernel ran since the flags were read
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.slots = 0          # allocation sites (see buffers.py)
        # Buffers over memory the wrapper keeps across calls (a slot, or memory a slot's
        # buffer handed on); the rest of the owned ones are a library call's new results.
        self.kept: set[str] = set()

    def const(self, value: Any, prefix: str = "c") -> str:
        name = f"{prefix}{len(self.consts)}"
        self.consts[name] = value
        return name

    def arg_code(self, x: Any) -> str:
        if isinstance(x, BufferRef):
            return self.ref_code(x)
        if isinstance(x, OpaqueInput):
            return x.name
        if isinstance(x, list):
            return "[" + ", ".join(self.arg_code(v) for v in x) + "]"
        if isinstance(x, tuple):
            return "(" + "".join(self.arg_code(v) + ", " for v in x) + ")"
        if isinstance(x, sympy.Basic):
            return py(x)
        if isinstance(x, float) and not math.isfinite(x):
            return f"float('{x}')"
        if isinstance(x, (int, float, bool, str, type(None))):
            return repr(x)
        return self.const(x)

    def ref_code(self, ref: BufferRef) -> str:
        buf = self.g.buffer(ref.buf)
        if tuple(ref.shape) == tuple(buf.shape) and tuple(ref.stride) == tuple(buf.stride) \
                and ref.offset == 0:
            return ref.buf
        return (f"as_strided({ref.buf}, {shape_code(ref.shape)}, {shape_code(ref.stride)}, "
                f"{ref.buf}.storage_offset() + {py(ref.offset)})")

    def write(self) -> str:
        g = self.g
        L = self.lines
        L.append("def call(args):")
        if self.profile:
            L.append("    _prof_call = ns()")
        for b in [*g.inputs, *g.opaque_inputs]:
            L.append(f"    {b.name} = args[{b.position}]")
        for c in g.constants:
            L.append(f"    {c.name} = {self.const(c.value, 'k')}")
        for sym, source in g.symbol_sources.items():
            L.append(f"    {sym} = {source.read_code()}")
            if source.formula != SOURCE_VALUE:
                L.append(f"    {sym} = {py(source.formula.subs(SOURCE_VALUE, sym))}")
        L.append("    args.clear()")
        if self.defers_errors and any(isinstance(p, ErrorFlag) for ps in self.params.values()
                                      for p in ps):
            L.append("    kernel_errors = kernel_error.slots")
        last_use = self._last_uses()
        outputs = {o.ref.buf for o in g.outputs if o.kind == "ref"}
        owned = owned_buffers(g, self.sched, self.internal)
        read_later = {r for s in self.sched.steps
                      for r in (kernel_reads(s) if isinstance(s, Kernel) else s.reads())}
        pool: dict[tuple, list[str]] = {}
        unused: set[str] = set()
        taken: set[str] = set()      # dead inputs whose memory a kernel output took over
        for step_no, step in enumerate(self.sched.steps):
            if isinstance(step, Kernel):
                dying = [r for r in sorted(kernel_reads(step))
                         if last_use.get(r) == step_no and r in owned]
                self._kernel(step, pool, dying, taken)
            elif isinstance(step, ExternOutput):
                if step.name not in read_later and step.name not in outputs:
                    unused.add(step.name)  # e.g. attention's logsumexp: no layout copy
                else:
                    path = "".join(f"[{i}]" for i in step.item)
                    L.append(f"    {step.name} = {step.source}{path}")
                    self._fix_layout(step)
            else:
                self._extern(step, pool)
            for name in sorted(n for n, last in last_use.items() if last == step_no):
                if name in outputs or name in self.internal or name in unused or name in taken:
                    continue
                buf = g.buffer(name)
                # Memory the wrapper keeps waits in the pool for a later buffer of the same
                # size; a library call's new result is freed at once, so the allocator hands
                # its block to the next call's result. (Pooled until the end of the call, the
                # oneDNN products of ViT-Tiny inference grew the heap by 49 MB per call,
                # which glibc gave back at its end: 20,700 page faults per call, +25 ms.)
                if name in owned and name in self.kept \
                        and tuple(buf.stride) == tuple(contiguous_strides(buf.shape)):
                    pool.setdefault(self._pool_key(buf), []).append(name)
                    continue
                L.append(f"    del {name}")
        self._check_pending()
        rets = []
        for o in g.outputs:
            if o.kind == "none":
                rets.append("None")
            elif o.kind == "value":
                rets.append(self.arg_code(o.value))
            else:
                rets.append(self.ref_code(o.ref))
        if self.profile:
            L.append("    _prof_out = (" + "".join(r + ", " for r in rets) + ")")
            L.append(f"    {self.const(self.profile.graph.add, 'pg')}(ns() - _prof_call)")
            L.append("    return _prof_out")
        else:
            L.append("    return (" + "".join(r + ", " for r in rets) + ")")
        return "\n".join(L) + "\n"

    def _pool_key(self, buf: Buffer) -> tuple:
        return (buf.dtype, str(product(buf.shape)))

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for k, step in enumerate(self.sched.steps):
            reads = kernel_reads(step) if isinstance(step, Kernel) else step.reads()
            for r in reads:
                last[r] = k
            if isinstance(step, Kernel):
                for n in step.nodes:
                    last.setdefault(n.buf.name, k)
            else:
                last.setdefault(step.name, k)
        return last

    def _kernel(self, k: Kernel, pool: dict[tuple, list[str]], dying: list[str],
                taken: set[str]) -> None:
        """Give the kernel's outputs memory (in place of a dying input where the kernel
        allows it, else a pooled dead buffer of the same size, else a fresh one), then call it."""
        L = self.lines
        hosts: list[str] = []
        for n in k.nodes:
            if n.buf.name in self.internal:
                continue
            b = n.buf
            # Over a library call's new result (a convolution's) only with
            # `over_new_results`: the output then lives on in that allocation, and is freed
            # after its last reader as the result would have been (not pooled). In inference
            # graphs the result is still in cache and no new memory is written
            # (MobileNetV3-Small inference 4-7% faster, ResNet-18 2.5%, no page faults in
            # fresh processes); in training graphs the heap grew and shrank with it (ViT-Tiny
            # training 4,500 -> 14,500 page faults per step, 9% slower).
            host = next((x for x in dying if (x in self.kept or self.over_new_results)
                         and x not in taken and writes_in_place(k, n, x)), None)
            if host is not None:
                if host in self.kept:
                    self.kept.add(b.name)
                taken.add(host)
                hosts.append(host)
                L.append(f"    {b.name} = alias({host}, {shape_code(b.shape)}, "
                         f"{shape_code(b.stride)}, {host}.storage_offset())")
            else:
                self._allocate(b, pool)
        checks = any(isinstance(p, ErrorFlag) for p in self.params[k.name])
        if checks and self.defers_errors:
            slot = f"kernel_errors[{len(self.error_ops)}]"
            args = [slot if isinstance(p, ErrorFlag) else self.launch_arg(p)
                    for p in self.params[k.name]]
            self.error_ops.append(", ".join(k.origins()))
            self.pending = True
        else:
            args = [self.launch_arg(p) for p in self.params[k.name]]
        self._timed(k.name, [f"    {k.name}({', '.join(args)})"])
        if checks and not self.defers_errors:
            L.append(f"    if kernel_error: raise_kernel_error(kernel_error.take(), "
                     f"{', '.join(k.origins())!r})")
        for host in hosts:
            L.append(f"    del {host}")

    def _allocate(self, b: Buffer, pool: dict[tuple, list[str]]) -> None:
        """Memory for b: a pooled dead buffer of the same size, else its own slot."""
        free = pool.get(self._pool_key(b))
        if free and tuple(b.stride) == tuple(contiguous_strides(b.shape)):
            old = free.pop()
            if old in self.kept:
                self.kept.add(b.name)
            self.lines.append(f"    {b.name} = alias({old}, {shape_code(b.shape)}, "
                              f"{shape_code(b.stride)}, {old}.storage_offset()); del {old}")
        else:
            self.kept.add(b.name)
            self.lines.append(f"    {b.name} = alloc({self.slots}, {shape_code(b.shape)}, "
                              f"{shape_code(b.stride)}, {self.const(b.dtype, 'dt')})")
            self.slots += 1

    def _check_pending(self) -> None:
        """Read the deferred error flags, when a checking kernel ran since the last read."""
        if self.pending:
            self.lines.append("    check_kernel_errors(kernel_error, kernel_error_ops)")
            self.pending = False

    def _extern(self, e: Extern, pool: dict[tuple, list[str]]) -> None:
        if op_short_name(e.target) not in VALUE_SAFE:
            self._check_pending()
        args = ", ".join(self.arg_code(a) for a in e.args)
        kwargs = ", ".join(f"{k}={self.arg_code(v)}" for k, v in e.kwargs.items())
        route = self.routes.get((e.target, e.dtype))
        if route is not None and not e.kwargs and not e.multi:
            # Another library's call for this op, chosen by the pipeline (runtime/onednn.py);
            # its result is new memory, laid out as traced (contiguous), checked as any extern's.
            self._timed(e.name, [f"    {e.name} = {self.const(route, 'op')}({args})",
                                 self._fix_layout_line(e)])
            return
        out_variant = OUT_VARIANTS.get(e.target)
        if out_variant is not None and not e.multi:
            # The result goes to memory the wrapper keeps (a dead buffer or a slot kept
            # across calls) instead of a new allocation per call: BERT's matmuls ran ~4%
            # faster so on the 2-core CPU we measure on (8 GEMMs: 203 -> 195 ms).
            self._allocate(e, pool)
            kwargs = ", ".join(x for x in (kwargs, f"out={e.name}") if x)
            fn = self.const(FAST_BINDINGS.get(out_variant, out_variant), "op")
            self._timed(e.name, [f"    {fn}({', '.join(x for x in (args, kwargs) if x)})"])
            return
        fn = self.const(FAST_BINDINGS.get(e.target, e.target), "op")
        lines = [f"    {e.name} = {fn}({', '.join(x for x in (args, kwargs) if x)})"]
        if not e.multi:
            lines.append(self._fix_layout_line(e))
        self._timed(e.name, lines)

    def _timed(self, step: str, lines: list[str]) -> None:
        """Emit a step's lines, between clock reads when profiling."""
        entry = self.profile.steps.get(step) if self.profile else None
        if entry is None:
            self.lines.extend(lines)
            return
        stats, nbytes = entry
        self.lines.append("    _prof_t = ns()")
        self.lines.extend(lines)
        self.lines.append(f"    {self.const(stats.add, 'pr')}(ns() - _prof_t, {py(nbytes)})")

    def _fix_layout(self, b: Buffer) -> None:
        self.lines.append(self._fix_layout_line(b))

    def _fix_layout_line(self, b: Buffer) -> str:
        """Kernels index extern results with the strides traced; enforce them."""
        return (f"    {b.name} = fix_layout({b.name}, {shape_code(b.shape)}, "
                f"{shape_code(b.stride)})")


# Library calls with an out= form writing a result of the traced layout (contiguous).
OUT_VARIANTS = {
    torch.ops.aten.mm.default: torch.ops.aten.mm.out,
    torch.ops.aten.bmm.default: torch.ops.aten.bmm.out,
    torch.ops.aten.addmm.default: torch.ops.aten.addmm.out,
    torch.ops.aten.baddbmm.default: torch.ops.aten.baddbmm.out,
}


# The public bindings of ATen ops the wrapper calls often: the same op and overload for
# the arguments the wrapper passes (tensors, int lists, out=), reached through torch's
# generated argument parser, which costs less per call than an OpOverload's (measured on
# the 2-core machine with tiny inputs: convolution 43.4 -> 40.0 us, mm.out 1.8 -> 0.9 us,
# _scaled_dot_product_flash_attention_for_cpu 6.0 -> 4.9 us; MobileNetV3-Small makes 52
# convolution calls per inference). The wrapper's arguments are plain tensors (AOTAutograd
# unwraps subclasses), so the bindings' __torch_function__ check finds nothing to do.
_aten = torch.ops.aten
FAST_BINDINGS = {op: getattr(torch, name) for op, name in [
    (_aten.convolution.default, "convolution"), (_aten.mm.out, "mm"), (_aten.bmm.out, "bmm"),
    (_aten.addmm.out, "addmm"), (_aten.baddbmm.out, "baddbmm"),
    (_aten._scaled_dot_product_flash_attention_for_cpu.default,
     "_scaled_dot_product_flash_attention_for_cpu")] if hasattr(torch, name)}


# Library calls that compute garbage, never fail, on values computed from a bad index: the
# deferred error flags need not be read before them.
VALUE_SAFE = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "dot", "mv", "addmv",
              "convolution", "convolution_backward", "linear",
              "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_flash_attention_for_cpu_backward",
              "_scaled_dot_product_attention_math", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_efficient_attention_backward",
              "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward",
              "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward"}


def check_kernel_errors(kernel_error: Any, ops: list[str]) -> None:
    """Raise for the first checking kernel (in call order) whose flag slot has bits set;
    one read of the flags (`take_all`, None while a CUDA graph is being captured)."""
    bits = kernel_error.take_all()
    for b, o in zip(bits or (), ops):
        if b:
            raise_kernel_error(b, o)


def raise_kernel_error(bits: int, ops: str) -> None:
    """Raise what eager raises for the error bits a kernel set (ir/expr.py INDEX_ERRORS;
    any other bit: integer division by zero). The flag itself is the target's: its
    `load` provides `kernel_error` (true when set; `take()` reads and clears the bits)."""
    for bit, error in INDEX_ERRORS.items():
        if bits & bit:
            raise error(f"{INDEX_ERROR}; in the kernel fusing {ops}")
    raise RuntimeError(f"{ZERO_DIVISION_ERROR}; in the kernel fusing {ops}")


def fix_layout(t: torch.Tensor, shape: tuple, stride: tuple) -> torch.Tensor:
    if t is None or t.stride() == stride or t.numel() <= 1:
        return t
    out = torch.empty_strided(shape, stride, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


@dataclasses.dataclass
class WrapperCode:
    """A wrapper as data: its source, the objects its source names, its allocation sites.

    Plain data (no kernels, no libraries), so a compiled graph can be stored on disk
    and instantiated again by another process (runtime/graph_cache.py); a profiled
    wrapper names the profiler's counters and is not stored."""

    source: str
    consts: dict[str, Any]
    slots: int
    device: str = "cpu"                  # where its buffers are allocated
    error_ops: list[str] = dataclasses.field(default_factory=list)  # deferred checks' kernels


def write_wrapper(graph: GraphIR, sched: Schedule, internal: set[str],
                  params: dict[str, list[Param]], launch_arg: Callable[[Param], str],
                  profile: ProfilePlan | None = None, device: str = "cpu",
                  defers_errors: bool = False,
                  routes: dict[tuple, Callable] | None = None,
                  over_new_results: bool = False) -> WrapperCode:
    """The wrapper of a scheduled graph; `params` and `launch_arg` say how each kernel is
    called; `device`: where the graph's buffers go; `defers_errors`: the target's error
    flag is device memory, read once per call (`Target.defers_errors`); `routes`: library
    calls made through another function ((ATen op, result dtype) -> a function of the
    same arguments); `over_new_results`: kernels may write their outputs over library
    calls' new results (inference graphs)."""
    w = WrapperWriter(graph, sched, internal, params, launch_arg, profile, defers_errors, routes,
                      over_new_results)
    source = w.write()
    return WrapperCode(source, w.consts, w.slots, device, w.error_ops)


def instantiate(code: WrapperCode, kernels: dict[str, Callable]) -> Callable:
    """The callable of a wrapper, bound to its kernels and fresh buffer slots; on a CUDA
    device, run with that device current (kernels launch on the current device)."""
    slots = BufferSlots(code.slots, code.device)
    if code.error_ops:
        kernels["kernel_error"].bind(code.device, len(code.error_ops))
    namespace: dict[str, Any] = {"alloc": slots.alloc, "raise_kernel_error": raise_kernel_error,
                                 "check_kernel_errors": check_kernel_errors,
                                 "kernel_error_ops": code.error_ops,
                                 "as_strided": torch.as_strided, "alias": alias,
                                 "fix_layout": fix_layout,
                                 "ns": time.perf_counter_ns, **code.consts, **kernels}
    exec(compile(code.source, "<trebuchet-wrapper>", "exec"), namespace)
    call = namespace["call"]
    device = torch.device(code.device)
    if device.type == "cuda":
        call = _on_device(call, device.index if device.index is not None else 0)
    if code.error_ops:       # for a caller replaying the calls' kernels (runtime/cudagraphs.py)
        error, ops = kernels["kernel_error"], code.error_ops
        call.check_errors = lambda: check_kernel_errors(error, ops)
    return call


def _on_device(call: Callable, index: int) -> Callable:
    """`call` run with CUDA device `index` current."""
    def call_on_device(args: list) -> Any:
        if torch.cuda.current_device() == index:
            return call(args)
        with torch.cuda.device(index):
            return call(args)
    return call_on_device
