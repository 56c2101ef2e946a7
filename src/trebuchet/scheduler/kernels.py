"""Group computed buffers into kernels (the fusion decisions).

Lowering already inlined single-use pointwise chains into their consumers; what
reaches here are the buffers that must exist. The scheduler walks them in
order and adds each to the open kernel when it shares the kernel's iteration
space and reads what the kernel produced only at the element (or row) being
computed; otherwise it starts a new kernel. Externs close the open kernel.

A kernel has outer loops (parallel; `x0, x1, ...`) and, for row kernels,
inner loops (`r0, ...`) run once per stage. Per outer point:

    stage 0: [row-level nodes] inner loop: pointwise nodes + reductions
    stage 1: [row-level nodes that need stage-0 reductions] inner loop ...
    ...
    final:   [row-level nodes that need the last reductions]

So layer norm (mean, variance, normalize) and softmax (max, sum, divide) are
each one kernel, with the row read from cache after the first pass.

A `Scatter` (indexed writes in entry order) is a kernel of its own: its outer loops are
its independent points, its one inner loop the entries, run serially; its values' work
is already inlined into it by lowering, and nothing else joins it.

Each decision is kept as data (`Schedule.decisions`): for every buffer, the kernel it
went into and why each earlier step it was tried against did not take it (for
`trebuchet explain`; recording changes no decision).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import sympy

from ..ir import symbolic
from ..ir.expr import Expr, loads, rewrite_indices, substitute_indices
from ..ir.simplify import simplify_index
from ..ir.nodes import (Buffer, Extern, ExternOutput, GraphIR, Pointwise, Reduction, Scatter,
                        index_vars, linear_index)


@dataclasses.dataclass(eq=False)
class KernelNode:
    """One buffer computed by a kernel, with its body in the kernel's loop variables."""

    buf: Pointwise | Reduction | Scatter
    body: Expr
    store_index: sympy.Expr
    stage: int
    level: str            # "full" (inside the inner loop), "row" (once per outer point)
    dynamic: Expr | None = None   # a Scatter's data-dependent part of the store offset


def node_exprs(n: KernelNode) -> list[Expr]:
    """Every expression a node computes: its body, and for a Scatter its store's dynamic
    offset and its initial contents (over the output's own vars i0..)."""
    if isinstance(n.buf, Scatter):
        return [n.body, *(e for e in (n.dynamic, n.buf.init) if e is not None)]
    return [n.body]


def is_scatter(k: "Kernel") -> bool:
    """Whether the kernel is a Scatter's (its entries run serially, in order)."""
    return any(isinstance(n.buf, Scatter) for n in k.nodes)


@dataclasses.dataclass(eq=False)
class Kernel:
    name: str
    outer: tuple[sympy.Expr, ...]
    inner: tuple[sympy.Expr, ...]
    nodes: list[KernelNode] = dataclasses.field(default_factory=list)

    @property
    def outer_vars(self) -> list[sympy.Symbol]:
        return index_vars(len(self.outer), "x")

    @property
    def inner_vars(self) -> list[sympy.Symbol]:
        return index_vars(len(self.inner), "r")

    def produces(self, name: str) -> KernelNode | None:
        for n in self.nodes:
            if n.buf.name == name:
                return n
        return None

    @property
    def num_loops(self) -> int:
        stages = [n.stage for n in self.nodes if n.level == "full"]
        return max(stages) + 1 if stages else 0

    def kind(self) -> str:
        """"pointwise", "reduction" (a kernel with inner loops) or "scatter"."""
        if is_scatter(self):
            return "scatter"
        if not self.inner:
            return "pointwise"
        return "reduction"

    def sources(self) -> list[str]:
        """The user's source lines behind the kernel's buffers and the ops fused into
        them (where recorded)."""
        out: list[str] = []
        for n in self.nodes:
            for src in (*(getattr(o, "source", "") for o in n.buf.origins), n.buf.source):
                if src and src not in out:
                    out.append(src)
        return out

    def origins(self) -> list[str]:
        """The ATen ops the kernel fuses, each once, as plain names."""
        out: list[str] = []
        for n in self.nodes:
            for o in n.buf.origins:
                if o and str(o) not in out:
                    out.append(str(o))
        return out


# Why a buffer did not join a step: code -> text, formatted with the recorded details.
REASONS = {
    "library": "{0} is a library call ({1}): generated kernels are not fused into it",
    "library_output": "{0} is output {1} of the library call {2} (no work of its own)",
    "reads_library": "it reads {0}, the result of a library call, so it runs after the call: "
                     "a generated kernel never spans a library call",
    "input_later": "it needs {0}, computed after {step}",
    "input_between": "it needs {0}, computed between {step} and here",
    "reduction_after_pointwise": "a reduction cannot join the pointwise kernel {step} "
                                 "(and {step}'s values do not fit its rows)",
    "space": "different iteration space: {0} against {step}'s {1}",
    "column_store": "its elements would be stored down a column of {step}, a column reduction "
                    "(one cache line per element)",
    "gather": "it reads {0} through data-dependent indices, but {step} computes {0}: a value "
              "computed in a loop is only available at the element being computed",
    "reduction_whole": "it needs the whole result of the reduction {0} (read at other positions "
                       "than {step} computes it)",
    "other_element": "it reads {0} at other elements than {step} computes it (a transpose, a "
                     "shift or a broadcast of a computed value)",
    "row_across": "it reads the per-row value {0} at positions across the row",
    "row_reads_full": "a per-row value cannot read {0}, computed per element in {step}'s inner loop",
    "lookback": "it was not tried against steps more than {0} back",
    "column_pass": "{step} reads its rows down the columns (a column reduction, done in one "
                   "pass over them): a second pass after {0} gets a kernel of its own",
    "column_prologue": "{step} reads its rows down the columns (a column reduction): it computes "
                       "per-output values only after its pass over the rows",
    "scatter": "{step} writes through data-dependent indices in entry order (a scatter): "
               "nothing else joins it",
}


@dataclasses.dataclass(frozen=True)
class NotFused:
    """Why buffer `buf` did not join step `step` (a REASONS code and its details)."""

    buf: str
    step: str
    code: str
    detail: tuple = ()

    def text(self) -> str:
        return REASONS[self.code].format(*map(str, self.detail), step=self.step)


@dataclasses.dataclass(frozen=True)
class Decision:
    """Where one buffer went (`step`: a kernel's name, or the buffer itself for a library
    call) and why the steps tried before it did not take it, nearest first."""

    buf: str
    step: str
    rejected: tuple[NotFused, ...] = ()


@dataclasses.dataclass
class Schedule:
    """Execution order: each step is a Kernel or an Extern/ExternOutput buffer."""

    steps: list[Kernel | Buffer]
    decisions: list[Decision] = dataclasses.field(default_factory=list)


def _non_one(dims: Sequence[sympy.Expr]) -> list[int]:
    return [k for k, d in enumerate(dims) if d != 1]


def _same(a: Sequence[sympy.Expr], b: Sequence[sympy.Expr]) -> bool:
    return len(a) == len(b) and all(symbolic.equal(x, y) for x, y in zip(a, b))


def _map_vars(shape: Sequence[sympy.Expr], targets: Sequence[tuple[sympy.Symbol, sympy.Expr]],
              prefix: str = "i") -> dict[sympy.Symbol, sympy.Expr] | None:
    """Express a buffer's index vars in kernel loop vars, or None if the spaces differ.

    Non-1 dims are matched in order; one buffer dim may cover several adjacent
    kernel dims (a flattened [B*S, H] buffer in a [B, S] x [H] kernel), since
    its index is then linear in theirs: i0 = x0 * S + x1.
    """
    own = index_vars(len(shape), prefix)
    tgt = [(v, s) for v, s in targets if s != 1]
    mapping: dict[sympy.Symbol, sympy.Expr] = {v: sympy.Integer(0) for v in own}
    t = 0
    for k in _non_one(shape):
        if t >= len(tgt):
            return None
        group = [tgt[t]]
        t += 1
        size: sympy.Expr = group[0][1]
        while not symbolic.equal(size, shape[k]):
            if t >= len(tgt) or len(group) > 8:
                return None
            group.append(tgt[t])
            size = size * tgt[t][1]
            t += 1
            if size.is_number and shape[k].is_number and size > shape[k]:
                return None
        index: sympy.Expr = sympy.Integer(0)
        for v, s in group:
            index = index * s + v
        mapping[own[k]] = sympy.expand(index)
    if t != len(tgt):
        return None
    return mapping


class _Builder:
    """Places buffers into kernels in order; any recent kernel may take a buffer."""

    # How many earlier kernels a buffer may join (bounds the scheduling cost).
    LOOKBACK = 8

    def __init__(self, graph: GraphIR):
        self.graph = graph
        self.steps: list[Kernel | Buffer] = []
        self.step_of: dict[str, int] = {b.name: -1 for b in graph.inputs}
        self.count = 0
        self.decisions: list[Decision] = []

    def add(self, buf: Buffer) -> None:
        if isinstance(buf, (Extern, ExternOutput)):
            self.steps.append(buf)
            self.step_of[buf.name] = len(self.steps) - 1
            why = (NotFused(buf.name, "", "library", (buf.name, buf.target)) if isinstance(buf, Extern)
                   else NotFused(buf.name, "", "library_output", (buf.name, buf.item, buf.source)))
            self.decisions.append(Decision(buf.name, buf.name, (why,)))
            return
        if isinstance(buf, Scatter):
            self.new_scatter(buf)
            self.decisions.append(Decision(buf.name, self.steps[-1].name))
            return
        assert isinstance(buf, (Pointwise, Reduction))
        deps = buf.reads()
        rejected: list[NotFused] = []
        last = max(-1, len(self.steps) - 1 - self.LOOKBACK)
        for pos in range(len(self.steps) - 1, last, -1):
            k = self.steps[pos]
            if not isinstance(k, Kernel):
                if k.name in deps or (isinstance(k, Extern) and k.multi and any(
                        self.step_of.get(d) == pos for d in deps)):
                    rejected.append(NotFused(buf.name, k.name, "reads_library", (k.name,)))
                    break
                continue
            # Everything buf reads from outside k must exist before k runs.
            if any(self.step_of.get(d, -1) >= pos and k.produces(d) is None for d in deps):
                if any(self.step_of.get(d, -1) > pos for d in deps):
                    d = next(d for d in deps if self.step_of.get(d, -1) > pos)
                    rejected.append(NotFused(buf.name, k.name, "input_later", (d,)))
                    break
                d = next(d for d in deps if self.step_of.get(d, -1) >= pos and k.produces(d) is None)
                rejected.append(NotFused(buf.name, k.name, "input_between", (d,)))
                continue
            why: list[tuple] = []
            node = _place(k, buf, why)
            if node is None and isinstance(buf, Reduction) and not k.inner:
                node = self._regroup(pos, buf)
                k = self.steps[pos]
            if node is not None:
                k.nodes.append(node)
                self.step_of[buf.name] = pos
                self.decisions.append(Decision(buf.name, k.name, tuple(rejected)))
                return
            rejected.extend(NotFused(buf.name, k.name, code, detail) for code, detail in why[:1])
        else:
            if last >= 0:
                rejected.append(NotFused(buf.name, self.steps[last].name, "lookback", (self.LOOKBACK,)))
        self.new_kernel(buf)
        self.decisions.append(Decision(buf.name, self.steps[-1].name, tuple(rejected)))

    def _regroup(self, pos: int, buf: Reduction) -> KernelNode | None:
        """Turn pointwise kernel `pos` into a row kernel that also computes reduction
        `buf` over the same elements (a stored sum of embeddings, then its layer norm).
        Returns buf's node, or None when the kernel's buffers do not fit that shape."""
        old = self.steps[pos]
        assert isinstance(old, Kernel)
        k = Kernel(old.name, tuple(buf.shape), tuple(buf.reduce_ranges))
        for n in old.nodes:
            placed = _place(k, n.buf)
            if placed is None:
                return None
            k.nodes.append(placed)
        node = _place(k, buf)
        if node is not None:
            self.steps[pos] = k
        return node

    def new_scatter(self, buf: Scatter) -> None:
        """A Scatter's own kernel: outer loops over its points, one inner loop over its
        entries (r0), its expressions in those loop variables."""
        k = Kernel(f"kernel{self.count}", tuple(buf.ranges), (buf.entries,))
        self.count += 1
        mapping = dict(zip(index_vars(len(buf.ranges)), k.outer_vars))
        ranges = dict(zip(k.outer_vars, k.outer)) | {k.inner_vars[0]: buf.entries}

        def local(e: Expr) -> Expr:
            return rewrite_indices(substitute_indices(e, mapping), lambda x: simplify_index(x, ranges))

        store = simplify_index(buf.index.subs(mapping, simultaneous=True), ranges)
        k.nodes.append(KernelNode(buf, local(buf.update), store, 0, "full",
                                  local(buf.dynamic) if buf.dynamic is not None else None))
        self.steps.append(k)
        self.step_of[buf.name] = len(self.steps) - 1

    def new_kernel(self, buf: Pointwise | Reduction) -> None:
        if isinstance(buf, Reduction):
            k = Kernel(f"kernel{self.count}", tuple(buf.shape), tuple(buf.reduce_ranges))
        else:
            k = Kernel(f"kernel{self.count}", tuple(buf.shape), ())
        self.count += 1
        node = _place(k, buf)
        assert node is not None, buf
        k.nodes.append(node)
        self.steps.append(k)
        self.step_of[buf.name] = len(self.steps) - 1


def _place(k: Kernel, buf: Pointwise | Reduction, why: list[tuple] | None = None) -> KernelNode | None:
    """Where `buf` goes in kernel k, or None when it cannot join it (and then, given a
    `why` list, the REASONS code and its details are appended to it)."""
    outer = list(zip(k.outer_vars, k.outer))
    inner = list(zip(k.inner_vars, k.inner))
    if why is None:
        why = []
    if is_scatter(k):
        why.append(("scatter", ()))
        return None
    if isinstance(buf, Reduction):
        if not k.inner and k.nodes:
            why.append(("reduction_after_pointwise", ()))
            return None
        m = _map_vars(buf.shape, outer)
        rm = _map_vars(buf.reduce_ranges, inner, "r")
        if m is None or rm is None:
            why.append(("space", (_Space(buf.shape, buf.reduce_ranges), _Space(k.outer, k.inner))))
            return None
        mapping = {**m, **rm}
        level = "full"
    else:
        mapping = _map_vars(buf.shape, outer + inner)
        level = "full"
        if mapping is None and k.inner:
            mapping = _map_vars(buf.shape, outer)
            level = "row"
        if mapping is None:
            why.append(("space", (_Space(buf.shape, ()), _Space(k.outer, k.inner))))
            return None
    ranges = dict(outer + inner)
    body = rewrite_indices(substitute_indices(buf.body, mapping),
                           lambda e: simplify_index(e, ranges))
    own = index_vars(len(buf.shape))
    store = simplify_index(linear_index([mapping[v] for v in own], buf.stride), ranges)
    if k.inner and level == "full" and isinstance(buf, Pointwise):
        step = store.coeff(k.inner_vars[-1])
        if step != 0 and step != 1:
            # Its elements would be written across the rows of a strided (column)
            # reduction, one cache line per element: it gets a kernel of its own.
            why.append(("column_store", ()))
            return None
    stage = 0
    for ld in loads(body):
        producer = k.produces(ld.buf)
        if producer is None:
            continue
        if ld.dynamic is not None or not symbolic.equal(ld.index, producer.store_index):
            why.append(("gather" if ld.dynamic is not None else "reduction_whole"
                        if isinstance(producer.buf, Reduction) else "other_element", (ld.buf,)))
            return None
        if producer.level == "row" and level == "full" and ld.index.free_symbols & set(k.inner_vars):
            why.append(("row_across", (ld.buf,)))
            return None
        if isinstance(producer.buf, Reduction) or producer.level == "row":
            after = producer.stage + (1 if isinstance(producer.buf, Reduction) else 0)
        else:
            after = producer.stage
            if level == "row":
                why.append(("row_reads_full", (ld.buf,)))
                return None   # a row-level value cannot read a full-iteration one
        stage = max(stage, after)
    if ((stage > 0 and level == "full") or (stage == 0 and level == "row")) and k.outer \
            and reads_columns(k, [n.body for n in k.nodes if n.level == "full"]):
        # A column reduction reads each row once and computes per-output values after
        # it (describe.is_column): a later pass over the rows (a variance after its mean
        # over a channels-last batch) streams memory as its own column kernel instead of
        # striding across it as a row kernel.
        if level == "row":
            why.append(("column_prologue", ()))
        else:
            first = next(n.buf.name for n in k.nodes if isinstance(n.buf, Reduction))
            why.append(("column_pass", (first,)))
        return None
    return KernelNode(buf, body, store, stage, level)


def reads_columns(k: Kernel, bodies: Sequence[Expr]) -> bool:
    """Whether a reduction kernel's loads in `bodies` are contiguous along its outputs
    (the last outer loop) and not along its reduced axis: it reads rows down the columns."""
    if not k.inner or not k.outer:
        return False
    last, rlast = k.outer_vars[-1], k.inner_vars[-1]
    lds = [ld for b in bodies for ld in loads(b)]
    if not lds or any(ld.dynamic is not None for ld in lds):
        return False
    unit_outer = any(ld.index.coeff(last) == 1 for ld in lds)
    # Loads that do not vary along the outputs (a per-row scale, the softmax sums of
    # a cross-entropy gradient) are the same for a whole row of outputs: they do not
    # make the rows contiguous.
    unit_inner = any(ld.index.coeff(rlast) == 1 and ld.index.has(last) for ld in lds)
    return unit_outer and not unit_inner


def schedule(graph: GraphIR) -> Schedule:
    b = _Builder(graph)
    for buf in graph.buffers:
        b.add(buf)
    return Schedule(b.steps, b.decisions)


@dataclasses.dataclass(frozen=True)
class _Space:
    """An iteration space, printed only when a reason is shown: [8, 128] x [768] (reduced)."""

    outer: tuple
    inner: tuple

    def __str__(self) -> str:
        text = "[" + ", ".join(map(str, self.outer)) + "]"
        return text + (" x [" + ", ".join(map(str, self.inner)) + "] (reduced)" if self.inner else "")


def kernel_reads(k: Kernel) -> set[str]:
    produced = {n.buf.name for n in k.nodes}
    return {ld.buf for n in k.nodes for e in node_exprs(n) for ld in loads(e)} - produced


__all__ = ["Kernel", "KernelNode", "Schedule", "Decision", "NotFused", "REASONS", "schedule",
           "kernel_reads", "node_exprs", "is_scatter"]
