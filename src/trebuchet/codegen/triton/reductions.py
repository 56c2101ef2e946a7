"""The Triton target's reduction kernels: row, column and scalar (scheduler/describe.py
`kernel_shape`), the `@triton.jit` function of one scheduled kernel and the Python
function that launches it.

Values are 2-D blocks of XBLOCK outputs by RBLOCK elements of the reduced axis: a row
kernel's block is [XBLOCK, RBLOCK], reduced over axis 1 (one or a few rows per program,
the row contiguous along the block's fast axis); a column kernel's is [RBLOCK, XBLOCK],
reduced over axis 0 (adjacent outputs along the fast axis, rows streamed); a scalar
kernel is a row kernel with one row. Row-level values are [XBLOCK, 1] (or [1, XBLOCK]).

A row is persistent when its length fits `persistent_rblock` (RBLOCK = the next power of
two of the row, the whole row in registers: each scheduler stage is straight-line code
over the same block, so layer norm's statistics and its normalization read the row
once); else it is looped, each stage one loop over the row in RBLOCK chunks, with
elementwise accumulators reduced after the loop. A row length known only at run time
gets both functions and the launcher picks one. Column kernels always loop over rows.

Reductions combine with Triton's own combine functions (`tl.reduce` with
`tl.standard`'s sum/max/min: the interpreter runs them with numpy, and they stay
callable when triton was imported before TRITON_INTERPRET=1) in the body's dtype
(float16/bfloat16 are computed in float32; sums in the dtype lowering chose). Max/min
and argmax/argmin propagate NaN as eager (Triton's max drops it: a NaN count is reduced
beside); argmax/argmin give the first position of the extreme (or of the first NaN),
from min-reductions of positions. No atomics: the results do not depend on timing.
"""
from __future__ import annotations

import sympy
import torch

from ...ir.expr import Const, Expr, Index, Load, Op, may_divide_by_zero, walk
from ...ir.nodes import Reduction
from ...scheduler.describe import ErrorFlag, Param, SizeSymbol, kernel_shape
from ...scheduler.kernels import Kernel, KernelNode
from ..emitter import Emitter
from .kernels import (IND, error_flag_lines, index_code, jit_head, kernel_comment, launch_code,
                      store_value)
from .ops import ERROR_CHECKS, HALF, TRITON_OPS, cast_code, tl_type
from .ops import const_code as tl_const

# Rows up to this many elements are reduced in one block (a Target limit, see __init__).
PERSISTENT_RBLOCK = 8192
# Elements of a persistent block (XBLOCK rows of RBLOCK): small rows share a program.
ROW_TILE = 4096
# RBLOCK of a looped row (rows longer than the persistent limit).
LOOP_RBLOCK = 2048
# A column kernel's tile: at most COLUMN_XBLOCK adjacent outputs, COLUMN_TILE elements.
COLUMN_XBLOCK = 128
COLUMN_TILE = 4096

INT32_MAX = 2 ** 31 - 1


def _identity(rt: str, dtype: torch.dtype) -> str:
    """The value a masked-off element contributes (as Triton source)."""
    if rt in ("sum", "any"):
        return "0"
    if rt in ("prod", "all"):
        return "1"
    big = rt in ("max", "argmax")
    if dtype.is_floating_point:
        return 'float("-inf")' if big else 'float("inf")'
    info = torch.iinfo(torch.int8 if dtype == torch.bool else dtype)
    return str(info.min if big else info.max)


def _symbols(e: sympy.Expr) -> set[str]:
    return {str(s) for s in sympy.sympify(e).free_symbols}


class TritonReductionWriter(Emitter):
    """Writes the jit function(s) and the launch function of one reduction kernel."""

    def __init__(self, kernel: Kernel, internal: set[str], params: list[Param], note: str = "",
                 persistent_rblock: int = PERSISTENT_RBLOCK):
        super().__init__(TRITON_OPS)
        self.shape = kernel_shape(kernel)
        assert self.shape in ("row", "column", "scalar"), kernel.name
        self.k, self.internal, self.param_list, self.note = kernel, internal, params, note
        self.limit = persistent_rblock
        self.column = self.shape == "column"
        self.axis = 0 if self.column else 1
        self.xshape = "[1, XBLOCK]" if self.column else "[XBLOCK, 1]"
        self.block = "[RBLOCK, XBLOCK]" if self.column else "[XBLOCK, RBLOCK]"
        self.xvars = {str(v) for v in kernel.outer_vars}
        self.rvars = {str(v) for v in kernel.inner_vars}
        self.checks = any(isinstance(p, ErrorFlag) for p in params)
        self.level = "row"

    # ---- the leaves of expressions ----
    def const_code(self, node: Const) -> str:
        return tl_const(node.value, node.dtype)

    def _vars(self, expr: sympy.Expr) -> tuple[bool, bool]:
        syms = _symbols(expr)
        return bool(syms & self.xvars), bool(syms & self.rvars)

    def _mask(self, has_x: bool, has_r: bool) -> str:
        if has_r:
            return "xmask & rmask" if has_x else "rmask"
        return "xmask"

    def index_code(self, node: Index) -> str:
        code = index_code(node.expr)
        has_x, has_r = self._vars(node.expr)
        if not has_x and not has_r:
            code = f"({code} + tl.full([1], 0, tl.int64))"
        elif has_r and not self.r_int64:
            code = f"({code}).to(tl.int64)"        # the positions along the row are int32
        return code if node.dtype == torch.int64 else cast_code(code, torch.int64, node.dtype)

    def load_code(self, node: Load) -> str:
        offset = index_code(node.index)
        has_x, has_r = self._vars(node.index)
        if node.dynamic is not None:
            offset = f"{offset} + {self._lookup(node.dynamic)}"
            has_x, has_r = True, self.level == "full"
        elif not has_x and not has_r:
            offset = f"({offset} + tl.full({self.xshape}, 0, tl.int64))"
            has_x = True
        tl_type(node.dtype)
        code = f"tl.load({node.buf} + {offset}, mask={self._mask(has_x, has_r)}, other=0)"
        return f"{code}.to(tl.float32)" if node.dtype in HALF else code

    def declare(self, name: str, node: Expr, code: str) -> str:
        return f"{name} = {code}"

    def op_code(self, node: Op, args: list[str]) -> str:
        check = ERROR_CHECKS.get(node.op)
        if check is not None and (node.op == "check_index" or may_divide_by_zero(node)):
            mask = "xmask & rmask" if self.level == "full" else "xmask"
            self.lines.append(f"{self.indent}tb_bad = tb_bad | tl.where({mask}, "
                              f"{check(node, args)}, 0)")
        return super().op_code(node, args)

    # ---- stores ----
    def _store(self, n: KernelNode, v: str) -> None:
        if n.buf.name in self.internal:
            return
        offset = index_code(n.store_index)
        has_x, has_r = self._vars(n.store_index)
        if n.level == "full" and not isinstance(n.buf, Reduction):
            if not (has_x and has_r):
                offset = f"({offset} + tl.full({self.block}, 0, tl.int64))"
            mask = "xmask & rmask"
        else:
            if not has_x:
                offset = f"({offset} + tl.full({self.xshape}, 0, tl.int64))"
            mask = "xmask"
        self.lines.append(f"{self.indent}tl.store({n.buf.name} + {offset}, "
                          f"{store_value(v, n.buf.dtype)}, mask={mask})")

    # ---- the reductions ----
    def _reduce_value(self, n: KernelNode, v: str) -> str:
        """`v` (this chunk's values of n's body) as the reduction combines it: masked-off
        elements replaced by the identity, bool extremes as int8."""
        rt, dt = n.buf.reduce_type, n.body.dtype
        if rt in ("any", "all"):
            return f"tl.where(rmask, {v} != 0, {_identity(rt, dt)}).to(tl.int8)"
        if dt == torch.bool:
            v = f"{v}.to(tl.int8)"
        return f"tl.where(rmask, {v}, {_identity(rt, dt)})"

    def _final(self, n: KernelNode, value: str, index: str) -> str:
        """The reduction over the block's reduced axis of `value` (per element, or the
        elementwise accumulators of a loop, with their positions `index` for argmax)."""
        rt, ax = n.buf.reduce_type, self.axis
        fl = n.body.dtype.is_floating_point
        if rt == "sum":
            return f"tl.reduce({value}, {ax}, _t_sum, keep_dims=True)"
        if rt == "prod":
            return f"tl.reduce({value}, {ax}, _t_prod, keep_dims=True)"
        if rt in ("max", "min"):
            if fl:
                return f"_t_{rt}_nan({value}, {ax})"
            return f"tl.reduce({value}, {ax}, _t_{rt}, keep_dims=True)"
        if rt in ("any", "all"):
            return f"(tl.reduce({value}, {ax}, _t_{'max' if rt == 'any' else 'min'}, " \
                   "keep_dims=True) != 0)"
        extreme = "max" if rt == "argmax" else "min"
        fn = f"_t_{extreme}_nan" if fl else f"_t_{extreme}_int"
        return f"_t_first_index({value}, {index}, {fn}({value}, {ax}), {ax})"

    def _finish(self, n: KernelNode, code: str) -> str:
        """Bind the reduction's result `code`, converted to its buffer's dtype, and store it;
        returns the name of the unconverted result."""
        rt = n.buf.reduce_type
        if rt in ("argmax", "argmin"):
            src = torch.int64
        elif rt in ("any", "all"):
            src = torch.bool
        else:
            src = torch.int8 if n.body.dtype == torch.bool else n.body.dtype
        name = f"v_{n.buf.name}"
        raw = name if src == n.buf.dtype else f"red_{n.buf.name}"
        self.lines.append(f"{self.indent}{raw} = {code}")
        if raw != name:
            self.lines.append(f"{self.indent}{name} = {cast_code(raw, src, n.buf.dtype)}")
        self.local[n.buf.name] = name
        self._store(n, name)
        return raw

    # ---- structure ----
    def _row_nodes(self, stage: int) -> None:
        self.level = "row"
        for n in self.k.nodes:
            if n.level == "row" and n.stage == stage:
                v = self.var(n.body, self.indent)
                self.local[n.buf.name] = v
                self._store(n, v)

    def _rindex(self, start: str) -> list[str]:
        """rindex (positions along the reduced axes, flattened), rmask and the r vars."""
        ar = f"tl.arange(0, RBLOCK){'[:, None]' if self.column else '[None, :]'}"
        r = ar if start == "" else f"{start} + {ar}"
        if self.r_int64:
            r = f"({r}).to(tl.int64)"
        out = [f"rindex = {r}", f"rmask = rindex < {self.rend if start else self.rnumel}"]
        rest: sympy.Expr = sympy.Integer(1)
        for v, size in reversed(list(zip(self.k.inner_vars, self.k.inner))):
            q = "rindex" if rest == 1 else f"(rindex // {index_code(rest)})"
            out.append(f"{v} = {q}" if v == self.k.inner_vars[0] else
                       f"{v} = {q} % {index_code(size)}")
            rest = rest * size
        return out

    def _stage_persistent(self, stage: int) -> None:
        self.level = "full"
        for n in self.k.nodes:
            if n.level != "full" or n.stage != stage:
                continue
            v = self.var(n.body, self.indent)
            if isinstance(n.buf, Reduction):
                key = (n.buf.reduce_type, n.body)
                if key in self.reduced:          # the same reduction of the same values
                    self._finish(n, self.reduced[key])
                    continue
                w = self._reduce_value(n, v)
                if n.buf.reduce_type in ("argmax", "argmin"):
                    self.lines.append(f"{self.indent}w_{n.buf.name} = {w}")
                    w = f"w_{n.buf.name}"
                index = "rindex" if self.r_int64 else "rindex.to(tl.int64)"
                self.reduced[key] = self._finish(n, self._final(n, w, index))
            else:
                self.local[n.buf.name] = v
                self._store(n, v)

    def _stage_looped(self, stage: int) -> None:
        nodes = [n for n in self.k.nodes if n.level == "full" and n.stage == stage]
        reductions = [n for n in nodes if isinstance(n.buf, Reduction)]
        ind = self.indent
        for n in reductions:
            rt, dt = n.buf.reduce_type, n.body.dtype
            at = "tl.int8" if rt in ("any", "all") or dt == torch.bool else tl_type(dt)
            self.lines.append(f"{ind}acc_{n.buf.name} = tl.full({self.block}, "
                              f"{_identity(rt, dt)}, {at})")
            if rt in ("argmax", "argmin"):
                self.lines.append(f"{ind}pos_{n.buf.name} = tl.full({self.block}, 0, tl.int64)")
        self.level = "row"
        self._hoist(nodes)
        self.lines.append(f"{ind}for roffset in range({self.rstart}, {self.rend}, RBLOCK):")
        self.indent = ind + IND
        self.lines.extend(f"{self.indent}{s}" for s in self._rindex("roffset"))
        self.scopes.append({})
        self.level = "full"
        for n in nodes:
            v = self.var(n.body, self.indent)
            if not isinstance(n.buf, Reduction):
                self.local[n.buf.name] = v
                self._store(n, v)
                continue
            acc, rt = f"acc_{n.buf.name}", n.buf.reduce_type
            w = self._reduce_value(n, v)
            fl = n.body.dtype.is_floating_point
            if rt == "sum":
                update = f"{acc} + {w}"
            elif rt == "prod":
                update = f"{acc} * {w}"
            elif rt in ("max", "min"):
                update = f"_t_f{rt}({acc}, {w})" if fl else \
                    f"tl.{'maximum' if rt == 'max' else 'minimum'}({acc}, {w})"
            elif rt in ("any", "all"):
                update = f"tl.{'maximum' if rt == 'any' else 'minimum'}({acc}, {w})"
            else:   # the first position of each lane's extreme (its first NaN wins)
                self.lines.append(f"{self.indent}w_{n.buf.name} = {w}")
                w, cmp = f"w_{n.buf.name}", ">" if rt == "argmax" else "<"
                better = f"({w} {cmp} {acc})"
                if fl:
                    better = f"(({acc} == {acc}) & ({better} | ({w} != {w})))"
                self.lines.append(f"{self.indent}b_{n.buf.name} = {better}")
                pos = "rindex" if self.r_int64 else "rindex.to(tl.int64)"
                self.lines.append(f"{self.indent}pos_{n.buf.name} = tl.where(b_{n.buf.name}, "
                                  f"{pos}, pos_{n.buf.name})")
                update = f"tl.where(b_{n.buf.name}, {w}, {acc})"
            self.lines.append(f"{self.indent}{acc} = {update}")
        self.scopes.pop()
        for n in nodes:
            if not isinstance(n.buf, Reduction):
                self.local.pop(n.buf.name, None)      # not visible after the loop
        self.indent = ind
        self.level = "row"
        for n in reductions:
            self._loop_result(n)

    def _loop_result(self, n: KernelNode) -> None:
        """After the loop over the row: the reduction of n's elementwise accumulators."""
        self._finish(n, self._final(n, f"acc_{n.buf.name}", f"pos_{n.buf.name}"))

    def _hoist(self, nodes: list[KernelNode]) -> None:
        """Emit before a loop the values that do not vary along the row, once per row."""
        produced = {n.buf.name for n in self.k.nodes if n.level == "full"} - set(self.local)
        self.hoist([n.body for n in nodes], lambda e: self._varies(e, produced), self.indent)

    def _varies(self, e: Expr, produced: set[str]) -> bool:
        for x in walk(e):
            if isinstance(x, Load) and (x.buf in produced or _symbols(x.index) & self.rvars):
                return True
            if isinstance(x, Index) and _symbols(x.expr) & self.rvars:
                return True
        return False

    def _needs_int64_r(self, bound: int | None) -> bool:
        """Whether positions along the row need int64 in index arithmetic: a row whose
        length is known only at run time is looped in int64; otherwise every index's
        terms in the r vars alone must stay below 2^31 in int32."""
        if bound is None:
            return True
        rv = set(self.k.inner_vars)
        exprs = [n.store_index for n in self.k.nodes]
        for n in self.k.nodes:
            for e in walk(n.body):
                if isinstance(e, Load):
                    exprs.append(e.index)
                elif isinstance(e, Index):
                    exprs.append(e.expr)
        for e in exprs:
            total = 0
            for term in sympy.Add.make_args(sympy.expand(e)):
                syms = term.free_symbols
                if not syms & rv:
                    continue
                if not syms <= rv:
                    continue           # with an int64 outer var or size: computed in int64
                coeff, rest = term.as_coeff_Mul()
                if not rest.is_Symbol or not coeff.is_number:
                    return True
                total += abs(int(coeff)) * bound
            if total > INT32_MAX:
                return True
        return False

    def _reset(self, rbound: int | None) -> None:
        """Fresh emitter state for one jit function."""
        self.r_int64 = self._needs_int64_r(rbound)
        self.lines, self.scopes, self.local, self.tmp = [], [{}], {}, 0
        self.reduced: dict[tuple[str, Expr], str] = {}
        self.indent = IND
        self.level = "row"

    def _x_head(self, body: list[str]) -> list[str]:
        """xindex (this program's outputs), xmask and the outer loop variables `body` uses."""
        out = [f"{IND}xindex = tl.program_id(0).to(tl.int64) * XBLOCK + tl.arange(0, XBLOCK)"
               f"{'[None, :]' if self.column else '[:, None]'}",
               f"{IND}xmask = xindex < {self.xnumel}"]
        text = "\n".join(body)
        rest: sympy.Expr = sympy.Integer(1)
        for v, size in reversed(list(zip(self.k.outer_vars, self.k.outer))):
            if str(v) in text:
                q = "xindex" if rest == 1 else f"(xindex // {index_code(rest)})"
                out.append(f"{IND}{v} = {q}" if v == self.k.outer_vars[0] else
                           f"{IND}{v} = {q} % {index_code(size)}")
            rest = rest * size
        return out

    def _function(self, fn: str, persistent: bool, rbound: int | None) -> list[str]:
        k = self.k
        self._reset(rbound)
        n_loops = k.num_loops
        for stage in range(n_loops + 1):
            self._row_nodes(stage)
            if stage < n_loops:
                if persistent:
                    self._stage_persistent(stage)
                else:
                    self._stage_looped(stage)
        body = self.lines
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        head = [*jit_head(fn, [*names, "xnumel", "rnumel"], sizes, ["XBLOCK", "RBLOCK"]),
                *self._x_head(body)]
        if persistent:
            head += [f"{IND}{s}" for s in self._rindex("")]
        if self.checks:
            setup, flag = error_flag_lines(self.block)
            head.append(setup)
            body.append(flag)
        return head + body

    def write(self) -> str:
        """The kernel's jit functions and its launch function."""
        functions, launch = self.parts()
        return "\n".join(functions + launch)

    def parts(self) -> tuple[list[str], list[str]]:
        """The lines of the jit functions (with the comment above them) and of the launch
        function."""
        k = self.k
        names = [p.name for p in self.param_list]
        numel = sympy.Mul(*k.outer) if k.outer else sympy.Integer(1)
        rnumel = sympy.Mul(*k.inner)
        const = rnumel.is_number
        # constant sizes written into the code: the compiler then knows the masks' (and so
        # the loads') alignment, e.g. vector loads along a row of 768
        self.xnumel = str(int(numel)) if numel.is_number else "xnumel"
        self.rnumel = str(int(rnumel)) if const else "rnumel"
        self.rstart, self.rend = "0", self.rnumel          # a looped row's range
        persistent = not self.column and (not const or int(rnumel) <= self.limit)
        looped = self.column or not const or int(rnumel) > self.limit
        out = kernel_comment(k, self.note)
        fns = {}
        if persistent:
            bound = min(int(rnumel), self.limit) if const else self.limit
            fns["persistent"] = f"_{k.name}"
            out += self._function(f"_{k.name}", True, bound) + ["", ""]
        if looped:
            fns["looped"] = f"_{k.name}_looped" if persistent else f"_{k.name}"
            out += self._function(fns["looped"], False, int(rnumel) if const else None) + ["", ""]
        call = f"({', '.join([*names, 'xnumel', 'rnumel'])}, XBLOCK=xblock, RBLOCK=rblock, " \
               "num_warps=_t_num_warps(xblock * rblock), enable_fp_fusion=False)"
        launch = [f"def {k.name}({', '.join(names)}):",
                  f"{IND}xnumel = {launch_code(numel)}",
                  f"{IND}rnumel = {launch_code(rnumel)}",
                  f"{IND}if xnumel <= 0:",
                  f"{IND}{IND}return",
                  f"{IND}rblock = triton.next_power_of_2(max(rnumel, 1))"]
        if self.column:
            launch += [f"{IND}xblock = min({COLUMN_XBLOCK}, triton.next_power_of_2(xnumel))",
                       f"{IND}rblock = min(rblock, max(1, {COLUMN_TILE} // xblock))",
                       f"{IND}{fns['looped']}[(triton.cdiv(xnumel, xblock),)]{call}"]
            return out, launch
        ind = IND * 2 if persistent and looped else IND
        go_persistent = [f"{ind}xblock = min(triton.next_power_of_2(xnumel), "
                         f"max(1, {ROW_TILE} // rblock))",
                         f"{ind}{fns.get('persistent')}[(triton.cdiv(xnumel, xblock),)]{call}"]
        go_looped = [f"{ind}xblock, rblock = 1, min(rblock, {LOOP_RBLOCK})",
                     f"{ind}{fns.get('looped')}[(xnumel,)]{call}"]
        if persistent and looped:
            launch += [f"{IND}if rblock <= {self.limit}:   # the whole row in one block",
                       *go_persistent, f"{IND}else:", *go_looped]
        else:
            launch += go_persistent if persistent else go_looped
        return out, launch


__all__ = ["TritonReductionWriter", "PERSISTENT_RBLOCK"]
