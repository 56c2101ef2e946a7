"""The Triton target's scatter kernel: the jit functions of a `Scatter` (indexed writes in
entry order: index_put accumulating, scatter_add; see ir/nodes.py) and the Python function
launching them.

Two launches, in order on the stream. `_kN_init` writes the initial contents over the
flattened output, one program per XBLOCK elements (as a pointwise kernel). `_kN` takes one
program per XBLOCK points (the flattened outer loops); each runs the entries serially,
`for r0 in tl.range(rnumel, num_stages=1)`, loading the values so far, combining and storing
them, masked by the block's points, then a barrier. Distinct points write distinct elements,
and what a program stores at one entry is visible to all its threads at the next (the
barrier; no load is pipelined ahead of the store), so every element receives its entries in
increasing order: the same bits as eager's serial CPU kernel, without atomics.
"""
from __future__ import annotations

import sympy

from ...ir.expr import Op, may_divide_by_zero, walk
from ...ir.nodes import Scatter, index_vars, linear_index
from ...scheduler.describe import ErrorFlag, Param, SizeSymbol
from ...scheduler.kernels import Kernel
from ..emitter import Emitter
from .kernels import (IND, MAX_XBLOCK, TritonKernelWriter, error_flag_lines, index_code, jit_head,
                      kernel_comment, launch_code, store_value, unflatten)
from .ops import ERROR_CHECKS, TRITON_OPS

# Points per program of the entries' kernel (fewer than a pointwise block: each program
# runs every entry, so more, smaller programs spread the work over the device).
SCATTER_XBLOCK = 128


class TritonScatterWriter(TritonKernelWriter):
    """Writes the two jit functions and the launch function of one scatter kernel."""

    def __init__(self, kernel: Kernel, internal: set[str], params: list[Param], note: str = ""):
        Emitter.__init__(self, TRITON_OPS)
        self.k, self.internal, self.param_list, self.note = kernel, internal, params, note
        self.node = kernel.nodes[0]
        assert isinstance(self.node.buf, Scatter), kernel.name
        self.loop_vars: set[str] = set()
        self.indent = IND

    def op_code(self, node: Op, args: list[str]) -> str:
        check = ERROR_CHECKS.get(node.op)
        if check is not None and (node.op == "check_index" or may_divide_by_zero(node)):
            self.lines.append(f"{self.indent}tb_bad = tb_bad | {check(node, args)}")
        return Emitter.op_code(self, node, args)

    @staticmethod
    def _checks(roots: list) -> bool:
        return any(isinstance(e, Op) and (e.op == "check_index" or may_divide_by_zero(e))
                   for r in roots for e in walk(r))

    def _function(self, fn: str, loops: list[tuple[sympy.Symbol, sympy.Expr]], extra: list[str],
                  body: list[str], checks: bool) -> list[str]:
        """A jit function over a flattened index of `loops` running `body` (masked by xmask)."""
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)] + extra
        head = [*jit_head(fn, [*names, "xnumel", *extra], sizes, ["XBLOCK"]),
                f"{IND}xindex = tl.program_id(0).to(tl.int64) * XBLOCK + tl.arange(0, XBLOCK)",
                f"{IND}xmask = xindex < xnumel",
                *unflatten("xindex", loops, "".join(body))]
        if checks and any(isinstance(p, ErrorFlag) for p in self.param_list):
            setup, flag = error_flag_lines("[XBLOCK]", "xmask")
            return head + [setup] + body + [flag]
        return head + body

    def _init(self) -> list[str]:
        b = self.node.buf
        ivars = index_vars(len(b.shape))
        self.loop_vars = {str(v) for v in ivars}
        self.lines, self.indent = [], IND
        self.scopes.append({})
        v = self.var(b.init, IND)
        store = linear_index(ivars, b.stride)
        self.lines.append(f"{IND}tl.store({b.name} + {self._block(index_code(store), store)}, "
                          f"{store_value(v, b.dtype)}, mask=xmask)")
        self.scopes.pop()
        return self._function(f"_{self.k.name}_init", list(zip(ivars, b.shape)), [], self.lines,
                              self._checks([b.init]))

    def _entries(self) -> list[str]:
        k, n = self.k, self.node
        self.loop_vars = {str(v) for v in k.outer_vars}
        ind = IND * 2
        self.lines, self.indent = [], ind
        self.scopes.append({})
        offset = self._block(index_code(n.store_index), n.store_index)
        if n.dynamic is not None:
            offset = f"{offset} + {self.var(n.dynamic, ind)}"
        v = self.var(n.body, ind)
        self.lines.append(f"{ind}tl.store({n.buf.name} + {offset}, {store_value(v, n.buf.dtype)}, "
                          "mask=xmask)")
        self.scopes.pop()
        # No software pipelining (a load of the next entry must not run before this entry's
        # store), and a barrier after each entry: a block's lanes may be held by several
        # threads (replicated layouts), and the one that stores is not always the one that
        # loads the value at the next entry.
        body = [f"{IND}for {k.inner_vars[0]} in tl.range(0, rnumel, num_stages=1):", *self.lines,
                f"{ind}tl.debug_barrier()"]
        roots = [n.body, *([n.dynamic] if n.dynamic is not None else [])]
        return self._function(f"_{k.name}", list(zip(k.outer_vars, k.outer)), ["rnumel"], body,
                              self._checks(roots))

    def write(self) -> str:
        k, b = self.k, self.node.buf
        names = [p.name for p in self.param_list]
        numel = sympy.Mul(*b.shape) if b.shape else sympy.Integer(1)
        points = sympy.Mul(*k.outer) if k.outer else sympy.Integer(1)
        launch = [f"def {k.name}({', '.join([*names, 'tb_config=None'])}):",
                  f"{IND}xnumel = {launch_code(numel)}",
                  f"{IND}if xnumel > 0:",
                  f"{IND}{IND}xblock = min({MAX_XBLOCK}, max(16, triton.next_power_of_2(xnumel)))",
                  f"{IND}{IND}_{k.name}_init[(triton.cdiv(xnumel, xblock),)]"
                  f"({', '.join([*names, 'xnumel'])}, XBLOCK=xblock, num_warps=4, "
                  "enable_fp_fusion=False)",
                  f"{IND}pnumel, rnumel = {launch_code(points)}, {launch_code(k.inner[0])}",
                  f"{IND}if pnumel > 0 and rnumel > 0:",
                  f"{IND}{IND}xblock = min({SCATTER_XBLOCK}, max(16, triton.next_power_of_2(pnumel)))",
                  f"{IND}{IND}_{k.name}[(triton.cdiv(pnumel, xblock),)]"
                  f"({', '.join([*names, 'pnumel', 'rnumel'])}, XBLOCK=xblock, num_warps=4, "
                  "enable_fp_fusion=False)",
                  f'{k.name}.tb_shape = "scatter"']
        return "\n".join([*kernel_comment(k, self.note), *self._init(), "", "",
                          *kernel_comment(k, self.note), *self._entries(), "", "", *launch])
