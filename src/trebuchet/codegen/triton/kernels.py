"""The Triton target's kernel shapes: the `@triton.jit` function of one scheduled kernel
and the Python function that launches it.

This slice writes pointwise kernels: one program per XBLOCK elements of the flattened
iteration space (`xindex`), masked loads and stores, the loop variables recovered from
`xindex` with // and % by the sizes. Sizes are runtime arguments (one kernel serves every
size of a symbolic graph); constant sizes are written into the code. Pointwise kernels
with a load transposed relative to the store are written as 2-D tiles by tiles.py, and
reductions by reductions.py and split.py. The launch function takes an optional
`tb_config` (autotune.py's choice: its block scaled, its warps).
Expressions are written by the shared emitter (codegen/emitter.py) over the op table
(ops.py). A kernel that checks data ORs its error bits into a one-element int32 tensor.
Kernels are launched with enable_fp_fusion=False: eager rounds every op, so a multiply
followed by an add must not become one fused multiply-add on the GPU.
"""
from __future__ import annotations

import sympy
import torch

from ...ir.expr import Const, Expr, Index, Load, Op, may_divide_by_zero
from ...ir.nodes import Reduction
from ...scheduler.describe import ErrorFlag, Param, Pointer, SizeSymbol, kernel_shape
from ...scheduler.kernels import Kernel
from ..emitter import Emitter
from ..indexing import print_index
from .ops import ERROR_CHECKS, HALF, TRITON_OPS, cast_code
from .ops import const_code as tl_const
from .ops import tl_type

MAX_XBLOCK = 1024      # elements per program (a power of two; smaller for small kernels)
IND = "    "


def index_code(expr: sympy.Expr) -> str:
    """An index expression over the loop variables and sizes, in int64 Triton arithmetic
    (indices are non-negative, so Triton's truncating // and % are floor division)."""
    return print_index(expr, "triton")


def launch_code(expr: sympy.Expr) -> str:
    """A size expression in the (plain Python) launch function."""
    return print_index(expr, "py")


def store_value(v: str, dtype: torch.dtype) -> str:
    """A computed value as stored into a buffer of `dtype` (float16/bfloat16 are computed
    in float32 and already rounded to their type by their cast)."""
    if dtype == torch.bfloat16:
        return f"_t_to_bf16({cast_code(v, torch.float32, dtype)})"
    if dtype == torch.float16:
        return f"{v}.to(tl.float16)"
    return v


def no_dim_reduction(buf: Reduction, body: Expr) -> Expr:
    """A reduction over no dimensions: the element itself (argmax/argmin: position 0,
    any/all: whether it is nonzero), in the buffer's dtype."""
    from ...ir.expr import cast, op
    if buf.reduce_type in ("argmax", "argmin"):
        return Const(0, torch.int64)
    if buf.reduce_type in ("any", "all"):
        return op("ne", body, Const(0, body.dtype)) if body.dtype != torch.bool else body
    return body if body.dtype == buf.dtype else cast(body, buf.dtype)


def kernel_comment(k: Kernel, note: str) -> list[str]:
    """The lines above a kernel: its ATen ops, the scheduler's note, the user's lines."""
    return [f"# {k.name}: " + ", ".join(k.origins()),
            *([f"# {note}"] if note else []),
            *([f"# from: {'; '.join(k.sources()[:6])}"] if k.sources() else [])]


def error_flag_lines(block: str, mask: str = "") -> tuple[str, str]:
    """A checking kernel's error bits: the accumulator set up before the body, and the OR
    into the flag after it (an atomic only on lanes that set a bit)."""
    cond = f"{mask} & (tb_bad != 0)" if mask else "tb_bad != 0"
    return (f"{IND}tb_bad = tl.full({block}, 0, tl.int32)",
            f"{IND}tl.atomic_or(tb_error + tl.full({block}, 0, tl.int32), tb_bad, mask={cond})")


def jit_head(fn: str, args: list[str], sizes: list[str], constexprs: list[str]) -> list[str]:
    """The decorator and signature of a jit function, and its size arguments in int64.
    Sizes are not specialized (one compiled kernel serves every size)."""
    return [f"@triton.jit{f'(do_not_specialize={sizes!r})' if sizes else ''}",
            f"def {fn}({', '.join([*args, *(f'{c}: tl.constexpr' for c in constexprs)])}):",
            *[f"{IND}{s} = {s}.to(tl.int64)" for s in sizes]]


class TritonKernelWriter(Emitter):
    """Writes the jit function and the launch function of one pointwise kernel."""

    def __init__(self, kernel: Kernel, internal: set[str], params: list[Param], note: str = ""):
        super().__init__(TRITON_OPS)
        assert kernel_shape(kernel) == "pointwise", kernel.name
        self.k, self.internal, self.param_list, self.note = kernel, internal, params, note
        self.loop_vars = {str(v) for v in kernel.outer_vars}
        self.checks = any(isinstance(p, ErrorFlag) for p in params)

    # ---- the leaves of expressions ----
    def const_code(self, node: Const) -> str:
        return tl_const(node.value, node.dtype)

    def _block(self, code: str, expr: sympy.Expr) -> str:
        """A block of XBLOCK lanes: an index without loop variables is broadcast."""
        if {str(s) for s in expr.free_symbols} & self.loop_vars:
            return code
        return f"({code} + tl.full([XBLOCK], 0, tl.int64))"

    def index_code(self, node: Index) -> str:
        code = self._block(index_code(node.expr), node.expr)
        return code if node.dtype == torch.int64 else cast_code(code, torch.int64, node.dtype)

    def load_code(self, node: Load) -> str:
        offset = index_code(node.index)
        if node.dynamic is not None:
            offset = f"{offset} + {self._lookup(node.dynamic)}"
        else:
            offset = self._block(offset, node.index)
        tl_type(node.dtype)
        code = f"tl.load({node.buf} + {offset}, mask=xmask, other=0)"
        return f"{code}.to(tl.float32)" if node.dtype in HALF else code

    def declare(self, name: str, node: Expr, code: str) -> str:
        return f"{name} = {code}"

    def op_code(self, node: Op, args: list[str]) -> str:
        check = ERROR_CHECKS.get(node.op)
        if check is not None and (node.op == "check_index" or may_divide_by_zero(node)):
            self.lines.append(f"{IND}tb_bad = tb_bad | {check(node, args)}")
        return super().op_code(node, args)

    # ---- structure ----
    def body(self) -> list[str]:
        """The lines computing each node and storing those not kept in registers (masked
        by `xmask`); they become `self.lines`."""
        self.lines = []
        for n in self.k.nodes:
            if isinstance(n.buf, Reduction):      # over no dimensions: the element itself
                v = self.var(no_dim_reduction(n.buf, n.body), IND)
            else:
                v = self.var(n.body, IND)
            self.local[n.buf.name] = v
            if n.buf.name not in self.internal:
                offset = self._block(index_code(n.store_index), n.store_index)
                self.lines.append(f"{IND}tl.store({n.buf.name} + {offset}, "
                                  f"{store_value(v, n.buf.dtype)}, mask=xmask)")
        return self.lines

    def write(self) -> str:
        k = self.k
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        numel = sympy.Mul(*k.outer) if k.outer else sympy.Integer(1)
        body = self.body()
        head = [*kernel_comment(k, self.note),
                *jit_head(f"_{k.name}", [*names, "xnumel"], sizes, ["XBLOCK"]),
                f"{IND}xindex = tl.program_id(0).to(tl.int64) * XBLOCK + tl.arange(0, XBLOCK)",
                f"{IND}xmask = xindex < xnumel",
                *unflatten("xindex", list(zip(k.outer_vars, k.outer)), "".join(body))]
        if self.checks:
            setup, flag = error_flag_lines("[XBLOCK]", "xmask")
            head.append(setup)
            body.append(flag)
        launch = [f"def {k.name}({', '.join([*names, 'tb_config=None'])}):",
                  f"{IND}xnumel = {launch_code(numel)}",
                  f"{IND}if xnumel > 0:",
                  f"{IND}{IND}xblock = min({MAX_XBLOCK}, max(16, triton.next_power_of_2(xnumel)))",
                  *tunable(["xblock"]),
                  f"{IND}{IND}_{k.name}[(triton.cdiv(xnumel, xblock),)]"
                  f"({', '.join([*names, 'xnumel'])}, XBLOCK=xblock, num_warps=warps, "
                  "enable_fp_fusion=False)",
                  f'{k.name}.tb_shape = "pointwise"']
        return "\n".join(head + body + ["", ""] + launch)


def unflatten(index: str, loops: list[tuple[sympy.Symbol, sympy.Expr]], body: str) -> list[str]:
    """The lines recovering the loop variables (last fastest, written first) from a flat
    `index` over `loops` (variable, size), skipping those the body does not use."""
    lines, rest = [], sympy.Integer(1)
    for v, size in reversed(loops):
        if str(v) in body:
            q = index if rest == 1 else f"({index} // {index_code(rest)})"
            lines.append(f"{IND}{v} = {q}" if v == loops[0][0] else
                         f"{IND}{v} = {q} % {index_code(size)}")
        rest = rest * size
    return lines


def tunable(blocks: list[str]) -> list[str]:
    """The launch function's lines choosing warps (4) and, under an autotuned config
    (`tb_config`, passed by codegen/triton/autotune.py), scaling its blocks."""
    lhs = f"({', '.join(blocks)},)"
    return [f"{IND}{IND}warps = 4",
            f"{IND}{IND}if tb_config is not None:",
            f"{IND}{IND}{IND}{lhs}, warps = _t_tuned({lhs}, tb_config)"]


__all__ = ["TritonKernelWriter", "MAX_XBLOCK", "index_code", "launch_code", "Pointer"]
