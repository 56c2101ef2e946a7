"""Which buffers may share memory: the facts the wrapper's buffer reuse rests on.

The wrapper (runtime/wrapper.py) runs a schedule step by step and frees each buffer
after its last use. Reusing memory within a call keeps the working set small, so
that on a CPU the data a kernel writes is still in cache when the next step reads it
and fresh lines are not fetched from memory only to be overwritten:

- pooling: a later buffer of the same size takes the memory of a dead one;
- in place: a kernel writes an output into the memory of an input that dies in that
  kernel (GELU over a matmul result, a bias added before attention, a residual sum
  before layer norm), when the kernel reads every element of that input only where
  it writes the same element of the output, and before it writes it.

Both need the dead buffer's memory to belong to the graph alone (`owned_buffers`):
written by a kernel or returned new by a library call known to allocate its result,
and never handed to a call that might return a view of it.
"""
from __future__ import annotations

from ..ir.expr import Load, walk
from ..ir.nodes import Extern, ExternOutput, GraphIR, Scatter, op_short_name
from .kernels import Kernel, KernelNode, Schedule

# Library calls whose tensor results are always new memory (never views of an input).
FRESH_RESULT_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "convolution", "_convolution",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_attention_math",
})


def fresh_result(extern: Extern) -> bool:
    """Whether the call returns new memory (so its inputs cannot alias its results)."""
    return op_short_name(extern.target) in FRESH_RESULT_OPS


def owned_buffers(graph: GraphIR, sched: Schedule, internal: set[str]) -> set[str]:
    """Buffers whose memory this graph alone refers to while they are live."""
    owned: set[str] = set()
    for step in sched.steps:
        if isinstance(step, Kernel):
            owned |= {n.buf.name for n in step.nodes if n.buf.name not in internal}
        elif isinstance(step, ExternOutput):
            source = graph.buffer(step.source)
            if isinstance(source, Extern) and fresh_result(source):
                owned.add(step.name)
        elif isinstance(step, Extern) and not step.multi and fresh_result(step):
            owned.add(step.name)
    for step in sched.steps:           # a call that may return a view of what it reads
        if isinstance(step, Extern) and not fresh_result(step):
            owned -= step.reads()
    owned -= {b.name for b in graph.inputs} | {c.name for c in graph.constants}
    owned -= {o.ref.buf for o in graph.outputs if o.kind == "ref"}
    return owned


def _order(k: Kernel, node: KernelNode) -> tuple[int, int, int]:
    """When a node is computed within one outer point: by stage, the row-level nodes
    of a stage before its inner loop, then in node order (codegen/c/kernels.py emits them so)."""
    return (node.stage, 0 if node.level == "row" else 1, k.nodes.index(node))


def writes_in_place(k: Kernel, node: KernelNode, name: str) -> bool:
    """Whether `node` may be stored into the memory of `name`, an input of kernel `k`
    that is dead after it: every load of `name` in the kernel is at the element
    `node` stores (same flat index, dtype, no data-dependent offset) and happens no
    later than that store. Then each element is read before it is overwritten, by the
    same iteration, whatever the parallel split or vector width. Never for a Scatter
    (its stores go where its indices say)."""
    if isinstance(node.buf, Scatter):
        return False
    loaders = []
    for n in k.nodes:
        lds = [e for e in walk(n.body) if isinstance(e, Load) and e.buf == name]
        if not lds:
            continue
        if any(ld.dynamic is not None or ld.dtype != node.buf.dtype
               or ld.index != node.store_index for ld in lds):
            return False
        loaders.append(n)
    return bool(loaders) and all(_order(k, n) <= _order(k, node) for n in loaders)


__all__ = ["FRESH_RESULT_OPS", "fresh_result", "owned_buffers", "writes_in_place"]
