"""The C target's kernel shapes: the C function of one scheduled kernel.

Kernels are written as nested loops: the outer loops parallel (OpenMP), the
innermost loop marked `omp simd` so the C compiler vectorizes it (reductions
use OpenMP reduction clauses, so no -ffast-math is needed). Expressions are
written by the shared emitter (codegen/emitter.py) over the C op table (ops.py):
each value once per scope. float16/bfloat16 are stored as 16-bit words and
computed in float.
"""
from __future__ import annotations

import math
from typing import Callable

import sympy
import torch

from ...ir.expr import Const, Expr, Index, Load, Op, walk
from ...ir.nodes import Reduction
from ...scheduler.describe import ErrorFlag, Param, Pointer, SizeSymbol, is_column
from ...scheduler.kernels import Kernel, KernelNode
from ..emitter import Emitter
from ..indexing import print_index
from .ops import C_OPS, STORAGE, c_const, cast_code, ctype, store_value
from .ops import load_code as c_load

REDUCE_INIT = {"sum": "0", "prod": "1", "any": "0", "all": "1"}


def specializable(kernel: Kernel) -> bool:
    """Whether `KernelWriter(..., specialize=True)` may write other code for the kernel: a
    column reduction whose sizes are all known."""
    return is_column(kernel) and all(isinstance(x, (int, sympy.Integer))
                                     for x in (*kernel.outer, *kernel.inner))


class KernelWriter(Emitter):
    """Writes the C function for one scheduled kernel."""

    def __init__(self, kernel: Kernel, internal: set[str], params: list[Param], note: str = "",
                 specialize: bool = False):
        super().__init__(C_OPS)
        self.note = note
        # Write only the code of the sizes' own case where the writer knows it at compile
        # time (a column reduction's split): less C, but kernels that differ only in sizes
        # may then differ in code, so unit.py asks for it only where they still share.
        self.specialize = specialize
        self.k = kernel
        self.internal = internal
        self.param_list = params
        # A kernel that checks data (TB_CHECK_INDEX, TB_CHECK_DIVISOR set the local
        # `tb_bad`) ORs it over every worksharing or simd loop, then into *tb_error.
        self.err = " reduction(|:tb_bad)" if self.reports_errors() else ""
        # Whether the kernel calls the prelude's float32 t_sinf/t_cosf, whose out-of-line
        # huge-argument path the unit then compiles in (T_SINCOS).
        self.sincos = False
        # (buffer, load index) -> (a pointer computed before the innermost loop, the
        # index from it)
        self.load_offsets: dict[tuple[str, sympy.Expr], tuple[str, str]] = {}

    # ---- the leaves of expressions, in C ----
    def const_code(self, node: Const) -> str:
        return c_const(node.value, node.dtype)

    def index_code(self, node: Index) -> str:
        return cast_code(print_index(node.expr), torch.int64, node.dtype) \
            if node.dtype != torch.int64 else print_index(node.expr)

    def load_code(self, node: Load) -> str:
        buf, index = (self.load_offsets.get((node.buf, node.index))
                      or (node.buf, print_index(node.index)))
        if node.dynamic is not None:
            index = f"{index} + {self._lookup(node.dynamic)}"
        return c_load(buf, index, node.dtype)

    def declare(self, name: str, node: Expr, code: str) -> str:
        return f"const {ctype(node.dtype)} {name} = {code};"

    def op_code(self, node: Op, args: list[str]) -> str:
        if node.op in ("sin", "cos") and ctype(node.args[0].dtype) == "float":
            self.sincos = True        # ops.py writes t_sinf / t_cosf
        return super().op_code(node, args)

    # ---- structure ----
    def write(self) -> str:
        k = self.k
        outer_vars = [str(v) for v in k.outer_vars]
        body_indent = "    " * (len(outer_vars) + 1)
        self.lines = []
        n_loops = k.num_loops
        if is_column(self.k):   # the shape the scheduler describes
            return self._column_kernel()
        if not k.inner:
            staged = self._plan_stages()
            if staged:
                return self._staged_kernel(staged)
            hoisted = self._hoist_pointwise()
            self._pointwise_body()
            return self._wrap_outer(self.lines, hoisted)
        else:
            self.row_cache = self._plan_row_cache()
            for slot, (e, _) in enumerate(self.row_cache.items()):
                size = " * ".join(print_index(r) for r in k.inner)
                self.lines.append(f"{body_indent}{ctype(e.dtype)} row{slot}[{size}];")
            for stage in range(n_loops + 1):
                self._row_nodes(stage, body_indent)
                if stage < n_loops:
                    self._inner_loop(stage, body_indent)
            inner_code = self.lines
        return self._wrap_outer(inner_code)

    # Column (outer) reductions: a work item accumulates at most this many adjacent
    # outputs (its tile, split by the number of reductions in the kernel) ...
    COLUMN_WIDTH = 1024
    # ... when there are fewer tiles than this, the reduced rows are split in chunks ...
    COLUMN_ITEMS = 16
    # ... of at least this many rows each.
    COLUMN_CHUNK_ROWS = 128
    # Rows folded per pass over a tile (each accumulator loaded and stored once per pass) ...
    COLUMN_UNROLL = 8
    # ... but 2 for a body of more than 10 distinct nodes (normalization backwards' weight
    # gradients): GCC unrolls the pass, and 8 copies of a large body cost it more than
    # they gain. Compiled alone, the 6 column kernels of bf16-autocast BERT training's
    # backward graph took 0.99 s at 8 rows per pass, 0.57 s at 2; the training steps ran
    # as fast (A/B in one process, 12 rounds: that BERT step 95.9 vs 94.9 ms, ResNet-18
    # 123.6 vs 122.0 ms, MobileNetV3-Small 29.8 vs 29.7 ms), and their first steps took
    # 0.1-0.6 s less.
    COLUMN_UNROLL_LARGE = 2
    COLUMN_LARGE_BODY = 10
    # Partial results of a split whose sizes are all known go on the stack up to this many
    # bytes (no allocation, so no fallback to write for its failure).
    COLUMN_STACK_PARTS = 64 * 1024
    @staticmethod
    def _column_acc_type(n: KernelNode) -> str:
        return "int" if n.buf.reduce_type in ("any", "all") else ctype(n.body.dtype)

    @staticmethod
    def _column_merge(n: KernelNode, acc: str, idx: str, value: str, pos: str) -> str:
        """C statement folding `value` (an element at row `pos`, or the partial result of a
        later chunk with its index `pos`) into the accumulator `acc` (`idx`: its index)."""
        rt = n.buf.reduce_type
        if rt in ("argmax", "argmin"):
            # the first position of the extreme; the first NaN wins over everything
            cmp = ">" if rt == "argmax" else "<"
            better = f"({value} {cmp} {acc})"
            if n.body.dtype.is_floating_point:
                better = f"({acc} == {acc} && ({value} {cmp} {acc} || {value} != {value}))"
            return (f"{{ const int b_ = {better}; {acc} = b_ ? {value} : {acc}; "
                    f"{idx} = b_ ? {pos} : {idx}; }}")
        return {"sum": f"{acc} += {value};", "prod": f"{acc} *= {value};",
                "max": f"{acc} = T_MAXC({acc}, {value});", "min": f"{acc} = T_MINC({acc}, {value});",
                "any": f"{acc} |= ({value} != 0);", "all": f"{acc} &= ({value} != 0);"}[rt]

    def _column_epilogue(self, full: list[KernelNode], accs: dict[str, tuple[str, str]],
                         ind: str) -> list[str]:
        """Stores of one column's results (given their accumulator and index expressions)
        and the row-level nodes computed from them."""
        self.lines = []
        self.scopes.append({})
        for n in full:
            t = ctype(n.buf.dtype)
            acc, idx = accs[n.buf.name]
            val = {"any": f"({acc} != 0)", "all": f"({acc} != 0)", "argmax": idx,
                   "argmin": idx}.get(n.buf.reduce_type, acc)
            self.lines.append(f"{ind}const {t} v_{n.buf.name} = ({t}){val};")
            self.local[n.buf.name] = f"v_{n.buf.name}"
            self._store(n, f"v_{n.buf.name}", ind)
        for n in self.k.nodes:
            if n.level == "row":
                v = self.var(n.body, ind)
                self.local[n.buf.name] = v
                self._store(n, v, ind)
        self.scopes.pop()
        for n in self.k.nodes:
            self.local.pop(n.buf.name, None)
        return self.lines

    def _column_kernel(self) -> str:
        """Outputs [n_outer x n_col] (the last kept dim contiguous), each reduced over n_row
        strided rows. A work item is (outer point, tile of adjacent columns, chunk of rows):
        it keeps one accumulator per column of its tile and streams its rows, so reads are
        contiguous along each row. With few tiles the rows are split into chunks; every
        chunk writes partial results, and a second pass combines them in chunk order. The
        split depends only on the sizes, so results are the same bits whatever the thread
        count or timing."""
        k = self.k
        full = [n for n in k.nodes if n.level == "full"]
        is_arg = {n.buf.name: n.buf.reduce_type in ("argmax", "argmin") for n in full}
        W, U, split, on_stack, aligned = self._column_plan(full, is_arg)
        items, min_rows = self.COLUMN_ITEMS, self.COLUMN_CHUNK_ROWS
        ov = [str(v) for v in k.outer_vars]
        rv = [str(v) for v in k.inner_vars]
        osizes = [print_index(s) for s in k.outer]
        rsizes = [print_index(s) for s in k.inner]
        last = ov[-1]

        def prod(xs: list[str]) -> str:
            return " * ".join(f"({x})" for x in xs) if xs else "1"

        L = [f"// {k.name}: " + ", ".join(k.origins()),
             "// column reduction: work items are (outer point, tile of <= "
             f"{W} adjacent outputs, chunk of rows);",
             "// each keeps one accumulator per output and streams its rows. With fewer than "
             f"{items} tiles the rows",
             f"// are split into chunks (>= {min_rows} rows) whose partial results a second "
             "pass combines in chunk",
             "// order: the split depends only on the sizes, so the result never depends on "
             "the threads.",
             *([f"// {self.note}"] if self.note else []),
             *([f"// from: {'; '.join(k.sources()[:6])}"] if k.sources() else []),
             f"void {k.name}({', '.join(self.params()) or 'void'}) {{",
             *self._error_start(),
             f"    const int64_t n_outer = {prod(osizes[:-1])};",
             f"    const int64_t n_col = {osizes[-1]};",
             f"    const int64_t n_row = {prod(rsizes)};",
             "    if (n_outer == 0 || n_col == 0) return;",
             f"    int64_t n_tile = (n_col + {W - 1}) / {W};",
             "    const int64_t width = ((n_col + n_tile - 1) / n_tile + 15) / 16 * 16;",
             "    n_tile = (n_col + width - 1) / width;",
             "    int64_t n_chunk = 1;",
             f"    if (n_outer * n_tile < {items} && n_outer * n_col * n_row > 32768) {{",
             f"        n_chunk = ({items} + n_outer * n_tile - 1) / (n_outer * n_tile);",
             f"        if (n_chunk > n_row / {min_rows}) n_chunk = n_row / {min_rows};",
             "        if (n_chunk < 1) n_chunk = 1;",
             "    }"]
        # partial results of each chunk: [n_chunk][n_outer][n_col] per accumulator
        parts: list[tuple[str, str]] = []
        for n in full:
            parts.append((f"part_{n.buf.name}", self._column_acc_type(n)))
            if is_arg[n.buf.name]:
                parts.append((f"parti_{n.buf.name}", "int64_t"))
        # With every size known, the split is known too, and only its code is written (C
        # the compiler would otherwise optimize before dropping it): one chunk, no partial
        # results; or small partial results on the stack, no allocation that may fail.
        n_split = split[0] if split else 0
        if n_split == 1:
            parts = []
        elif on_stack:
            for p, at in parts:
                L.append(f"    {at} {p}[{split[1]}];")
        else:
            for p, at in parts:
                L.append(f"    {at}* {p} = 0;")
            L.append("    if (n_chunk > 1) {")
            for p, at in parts:
                L.append(f"        {p} = ({at}*)malloc(sizeof({at}) * n_chunk * n_outer * n_col);")
            L.append(f"        if ({' || '.join(f'!{p}' for p, _ in parts)}) {{  // no memory: one chunk")
            for p, _ in parts:
                L.append(f"            free({p}); {p} = 0;")
            L.append("            n_chunk = 1;")
            L.append("        }")
            L.append("    }")
        L.append("    #pragma omp parallel if((n_outer * n_col * n_row) > 32768)")
        L.append("    {")
        L.append(f"        #pragma omp for schedule(static){self.err}")
        L.append("        for (int64_t item = 0; item < n_outer * n_tile * n_chunk; ++item) {")
        ind = " " * 12
        L.append(f"{ind}const int64_t chunk = item % n_chunk, tile = item / n_chunk % n_tile;")
        L.append(f"{ind}const int64_t o = item / n_chunk / n_tile;")
        L.extend(self._unflatten("o", ov[:-1], osizes[:-1], ind))
        L.append(f"{ind}const int64_t {last}_b = tile * width;")
        L.append(f"{ind}const int64_t {last}_e = {last}_b + width < n_col ? {last}_b + width : n_col;")
        # Rows go by in groups of U (below); with the sizes known, chunks start at multiples
        # of U, so that no chunk has a remainder when the row count is one.
        if aligned:
            L.append(f"{ind}const int64_t r_b = chunk * n_row / n_chunk / {U} * {U};")
            L.append(f"{ind}const int64_t r_e = chunk + 1 == n_chunk ? n_row : "
                     f"(chunk + 1) * n_row / n_chunk / {U} * {U};")
        else:
            L.append(f"{ind}const int64_t r_b = chunk * n_row / n_chunk, "
                     "r_e = (chunk + 1) * n_row / n_chunk;")
        for n in full:
            rt, name = n.buf.reduce_type, n.buf.name
            init = REDUCE_INIT.get(rt) or _extreme(n.body.dtype, rt in ("max", "argmax"))
            L.append(f"{ind}{self._column_acc_type(n)} acc_{name}[{W}];")
            fill = f"acc_{name}[j] = {init};"
            if is_arg[name]:
                L.append(f"{ind}int64_t arg_{name}[{W}];")
                fill += f" arg_{name}[j] = r_b;"
            L.append(f"{ind}for (int64_t j = 0; j < {last}_e - {last}_b; ++j) {{ {fill} }}")
        # Rows go by in groups of U (COLUMN_UNROLL): each accumulator is loaded once, folds the
        # group's rows in row order (the same order as one at a time), and is stored once.
        if len(rv) > 1:   # the row's index in each reduced dim, advanced with carries
            L.extend(self._unflatten("r_b", [f"{v}_n" for v in rv], rsizes, ind, const=False))
        L.append(f"{ind}int64_t rr = r_b;")
        L.append(f"{ind}for (; rr + {U} <= r_e; rr += {U}) {{")
        L.extend(self._column_rows(full, is_arg, U, ind + "    "))
        L.append(f"{ind}}}")
        if not aligned:
            L.append(f"{ind}for (; rr < r_e; ++rr) {{")
            L.extend(self._column_rows(full, is_arg, 1, ind + "    "))
            L.append(f"{ind}}}")
        j = f"[{last} - {last}_b]"
        direct = [f"{ind}    for (int64_t {last} = {last}_b; {last} < {last}_e; ++{last}) {{",
                  *self._column_epilogue(
                      full, {n.buf.name: (f"acc_{n.buf.name}{j}", f"arg_{n.buf.name}{j}")
                             for n in full}, ind + " " * 8),
                  f"{ind}    }}"]
        at = f"[(chunk * n_outer + o) * n_col + {last}]"
        partial = [f"{ind}    for (int64_t {last} = {last}_b; {last} < {last}_e; ++{last}) {{"]
        for n in full:
            partial.append(f"{ind}        part_{n.buf.name}{at} = acc_{n.buf.name}{j};")
            if is_arg[n.buf.name]:
                partial.append(f"{ind}        parti_{n.buf.name}{at} = arg_{n.buf.name}{j};")
        partial.append(f"{ind}    }}")
        if n_split == 1:
            L.extend(direct)
        elif on_stack:
            L.extend(partial)
        else:
            L += [f"{ind}if (n_chunk == 1) {{", *direct, f"{ind}}} else {{", *partial, f"{ind}}}"]
        L.append("        }")
        if n_split != 1:
            L.extend(self._column_combine(full, is_arg, ov, osizes, last))
        L.append("    }")
        if not on_stack:
            for p, _ in parts:
                L.append(f"    free({p});")
        L.extend(self._function_end())
        return "\n".join(L)

    def _column_plan(self, full: list[KernelNode], is_arg: dict[str, bool]
                     ) -> tuple[int, int, tuple[int, int, int] | None, bool, bool]:
        """A column kernel's tile width, rows folded per pass, its split when specialized
        (`_static_split`), whether the partial results then go on the stack, and whether
        every chunk's rows are a multiple of the rows per pass (no remainder loop)."""
        n_arrays = len(full) + sum(is_arg.values())
        W = max(64, self.COLUMN_WIDTH // n_arrays // 16 * 16)
        U = self._column_group(full)
        split = self._static_split(W)
        on_stack = bool(split) and split[0] > 1 and split[1] * 8 * n_arrays <= self.COLUMN_STACK_PARTS
        aligned = bool(split) and split[2] % U == 0
        return W, U, split, on_stack, aligned

    def split_case(self) -> tuple | None:
        """Which code the specialized kernel holds: (one chunk, the partial results' stack
        size or None, no remainder loop); None where it holds every case. Kernels of one
        body keep sharing it, specialized, when their cases are equal (unit.py)."""
        full = [n for n in self.k.nodes if n.level == "full"]
        _, _, split, on_stack, aligned = self._column_plan(
            full, {n.buf.name: n.buf.reduce_type in ("argmax", "argmin") for n in full})
        if split is None:
            return None
        return split[0] == 1, split[1] if on_stack else None, aligned

    def _static_split(self, W: int) -> tuple[int, int, int] | None:
        """(chunks, partial results per accumulator, rows) when every size is known: the
        split the C code computes at run time (`_column_kernel`), done here."""
        k = self.k
        if not self.specialize or not specializable(k):
            return None
        n_outer = math.prod(int(x) for x in k.outer[:-1])
        n_col, n_row = int(k.outer[-1]), math.prod(int(x) for x in k.inner)
        if n_outer == 0 or n_col == 0:
            return None
        n_tile = (n_col + W - 1) // W
        width = ((n_col + n_tile - 1) // n_tile + 15) // 16 * 16
        n_tile = (n_col + width - 1) // width
        n_chunk = 1
        if n_outer * n_tile < self.COLUMN_ITEMS and n_outer * n_col * n_row > 32768:
            n_chunk = (self.COLUMN_ITEMS + n_outer * n_tile - 1) // (n_outer * n_tile)
            n_chunk = max(1, min(n_chunk, n_row // self.COLUMN_CHUNK_ROWS))
        return n_chunk, n_chunk * n_outer * n_col, n_row

    def _column_combine(self, full: list[KernelNode], is_arg: dict[str, bool], ov: list[str],
                        osizes: list[str], last: str) -> list[str]:
        """The second pass of a column kernel whose rows were split in chunks: each output's
        partial results combined in chunk order."""
        L = []
        L.append("        if (n_chunk > 1) {")
        L.append("            // combine the chunks' partial results, in chunk order")
        L.append(f"            #pragma omp for schedule(static){self.err}")
        L.append("            for (int64_t oc = 0; oc < n_outer * n_col; ++oc) {")
        ind = " " * 16
        L.append(f"{ind}const int64_t o = oc / n_col, {last} = oc % n_col;")
        L.extend(self._unflatten("o", ov[:-1], osizes[:-1], ind))
        for n in full:
            name = n.buf.name
            L.append(f"{ind}{self._column_acc_type(n)} a_{name} = part_{name}[oc];")
            if is_arg[name]:
                L.append(f"{ind}int64_t ai_{name} = parti_{name}[oc];")
            at = "[c * n_outer * n_col + oc]"
            merge = self._column_merge(n, f"a_{name}", f"ai_{name}", f"part_{name}{at}",
                                       f"parti_{name}{at}")
            L.append(f"{ind}for (int64_t c = 1; c < n_chunk; ++c) {merge}")
        L.extend(self._column_epilogue(
            full, {n.buf.name: (f"a_{n.buf.name}", f"ai_{n.buf.name}") for n in full}, ind))
        L.append("            }")
        L.append("        }")
        return L

    def _column_group(self, full: list[KernelNode]) -> int:
        """Rows folded per pass: COLUMN_UNROLL, or COLUMN_UNROLL_LARGE for a body of more
        than COLUMN_LARGE_BODY distinct nodes (over the kernel's reductions)."""
        size = sum(len(walk(n.body)) for n in full)
        return self.COLUMN_UNROLL if size <= self.COLUMN_LARGE_BODY else self.COLUMN_UNROLL_LARGE

    def _column_rows(self, full: list[KernelNode], is_arg: dict[str, bool], group: int,
                     ind: str) -> list[str]:
        """The loop over a tile's columns folding rows rr .. rr + group - 1 into them (the
        body is written once, in a loop over the group that the C compiler unrolls)."""
        k = self.k
        last = str(k.outer_vars[-1])
        rv = [str(v) for v in k.inner_vars]
        rsizes = [print_index(s) for s in k.inner]
        L: list[str] = []
        if len(rv) > 1:
            L.append(f"{ind}int64_t " + ", ".join(f"{v}_g[{group}]" for v in rv) + ";")
            carry = f"{ind}for (int u = 0; u < {group}; ++u) {{ "
            carry += " ".join(f"{v}_g[u] = {v}_n;" for v in rv) + " "
            for d in range(len(rv) - 1, 0, -1):
                carry += f"if (++{rv[d]}_n == {rsizes[d]}) {{ {rv[d]}_n = 0; "
            L.append(carry + f"++{rv[0]}_n;" + " }" * (len(rv) - 1) + " }")
        L.append(f"{ind}#pragma omp simd{self.err}")
        L.append(f"{ind}for (int64_t {last} = {last}_b; {last} < {last}_e; ++{last}) {{")
        ind2 = ind + "    "
        j = f"[{last} - {last}_b]"

        def accumulators(load: bool) -> None:
            """Each accumulator (and argmax/argmin position) from its tile array into a
            local, or back."""
            for n in full:
                name = n.buf.name
                pairs = [(f"a_{name}", f"acc_{name}{j}", self._column_acc_type(n))]
                if is_arg[name]:
                    pairs.append((f"ai_{name}", f"arg_{name}{j}", "int64_t"))
                for local, tile, ctype_ in pairs:
                    L.append(f"{ind2}{ctype_} {local} = {tile};" if load else f"{ind2}{tile} = {local};")

        accumulators(load=True)
        L.append(f"{ind2}for (int u = 0; u < {group}; ++u) {{")
        if len(rv) == 1:
            L.append(f"{ind2}    const int64_t {rv[0]} = rr + u;")
        else:
            L.append(f"{ind2}    const int64_t " + ", ".join(f"{v} = {v}_g[u]" for v in rv) + ";")
        self.lines = []
        self.scopes.append({})
        for n in full:
            value = self.var(n.body, ind2 + "    ")
            self.lines.append(f"{ind2}    " + self._column_merge(
                n, f"a_{n.buf.name}", f"ai_{n.buf.name}", value, "(rr + u)"))
        self.scopes.pop()
        L.extend(self.lines)
        L.append(f"{ind2}}}")
        accumulators(load=False)
        L.append(f"{ind}}}")
        return L

    @staticmethod
    def _unflatten(flat: str, names: list[str], sizes: list[str], ind: str,
                   const: bool = True) -> list[str]:
        """Declare `names` as the row-major multi-index of the flat index `flat`."""
        if not names:
            return []
        q = "const int64_t" if const else "int64_t"
        if len(names) == 1:
            return [f"{ind}{q} {names[0]} = {flat};"]
        out = [f"{ind}int64_t {flat}_rest = {flat};"]
        for d in range(len(names) - 1, 0, -1):
            out.append(f"{ind}{q} {names[d]} = {flat}_rest % ({sizes[d]}); {flat}_rest /= ({sizes[d]});")
        out.append(f"{ind}{q} {names[0]} = {flat}_rest;")
        return out

    # A row is kept in a per-thread scratch array when it is this small (elements).
    ROW_CACHE_LIMIT = 16384

    def _plan_row_cache(self) -> dict[Expr, int]:
        """Expensive per-element values needed again in a later pass over the row.

        They are computed once, in the first pass, into a scratch row that stays in
        cache (e.g. GELU before layer norm: erf once per element, not three times).
        Returns each value with the stage that computes it.
        """
        k = self.k
        if k.num_loops < 2 or not all(r.is_number for r in k.inner):
            return {}
        if int(math.prod(int(r) for r in k.inner)) > self.ROW_CACHE_LIMIT:
            return {}
        rvars = set(k.inner_vars)
        # Ordered containers only: the generated text must not depend on hashing
        # order, or the disk cache misses in every new process.
        first: dict[Expr, int] = {}
        later: dict[Expr, None] = {}
        for n in sorted(k.nodes, key=lambda n: n.stage):
            if n.level != "full":
                continue
            for e in walk(n.body):
                if e in first and first[e] < n.stage:
                    later[e] = None
                first.setdefault(e, n.stage)
        chosen = [e for e in later if isinstance(e, Op) and _expensive(e)
                  and _depends_on(e, rvars)]
        inner = {c for e in chosen for c in walk(e) if c is not e}
        keep = {e: None for e in chosen if e not in inner}
        # A value inside a kept one is kept too if a later pass also uses it on its own.
        for n in k.nodes:
            if n.level == "full":
                for e in _walk_pruned(n.body, set(keep)):
                    if e in inner and e in first and first[e] < n.stage and e in later:
                        keep[e] = None
        return {e: first[e] for e in chosen if e in keep}

    # Pointwise kernels with several transcendental calls run their innermost loop in
    # blocks of this many elements, one vectorized loop per call (see _staged_kernel).
    STAGE_BLOCK = 256
    STAGE_MIN_INNER = 64

    def _plan_stages(self) -> list[Expr]:
        """The transcendental values a pointwise kernel computes in separate loops.

        A fused chain such as tanh(sin(x) * x) is one long dependency chain per element:
        the CPU's out-of-order window holds too few elements' worth of it to keep the
        vector units busy. Computing each call for a block of elements in its own loop
        (into a small array that stays in L1) keeps each loop short, so consecutive
        elements overlap. Returns the values to store, in dependency order (the last
        call stays in the final loop), or [] when the kernel is better left as one loop.
        """
        k = self.k
        if not k.outer:
            return []
        inner = k.outer[-1]
        if sympy.sympify(inner).is_number and int(inner) < self.STAGE_MIN_INNER:
            return []
        produced = {n.buf.name for n in k.nodes}
        calls: dict[Expr, None] = {}
        for n in k.nodes:
            for e in walk(n.body):
                if isinstance(e, Load) and e.buf in produced:
                    return []        # a node reads another's value: keep one loop
                if isinstance(e, Op) and e.op in _STAGED and e.dtype.is_floating_point:
                    calls[e] = None
        heavy = list(calls)
        return heavy[:-1] if len(heavy) >= 2 else []

    def _staged_kernel(self, staged: list[Expr]) -> str:
        """The innermost loop strip-mined into blocks; within a block, one simd loop per
        staged value (stored to a block-local array), then the loop computing the
        outputs. Everything else is recomputed where needed (loads, cheap arithmetic)."""
        k = self.k
        B = self.STAGE_BLOCK
        vars_ = [str(v) for v in k.outer_vars]
        sizes = [print_index(s) for s in k.outer]
        v, n = vars_[-1], sizes[-1]
        lines = self._kernel_head()
        work = " * ".join(f"({s})" for s in sizes)
        indent = "    "
        if len(vars_) > 1:
            lines.append(f"{indent}#pragma omp parallel for collapse({len(vars_) - 1}) "
                         f"if(({work}) > 32768){self.err}")
            for i in self._loop_order()[:-1]:
                var, size = vars_[i], sizes[i]
                lines.append(f"{indent}for (int64_t {var} = 0; {var} < {size}; ++{var}) {{")
                indent += "    "
        else:
            lines.append(f"{indent}#pragma omp parallel for if(({work}) > 32768){self.err}")
        lines.append(f"{indent}for (int64_t {v}_b = 0; {v}_b < {n}; {v}_b += {B}) {{")
        indent += "    "
        lines.append(f"{indent}const int64_t {v}_e = {v}_b + {B} < {n} ? {v}_b + {B} : {n};")
        for i, e in enumerate(staged):
            lines.append(f"{indent}{ctype(e.dtype)} stage{i}[{B}] __attribute__((aligned(64)));")
        body = indent + "    "
        slot = f"[{v} - {v}_b]"
        loop = f"for (int64_t {v} = {v}_b; {v} < {v}_e; ++{v}) {{"

        def stage_loop(i: int, fn: Callable[[], None], pragma: str | None) -> None:
            self.lines = []
            self.scopes.append({e: f"stage{j}{slot}" for j, e in enumerate(staged[:i])})
            fn()
            self.scopes.pop()
            if pragma:
                lines.append(f"{indent}{pragma}{self.err}")
            lines.extend([f"{indent}{loop}", *self.lines, f"{indent}}}"])

        def store(i: int, call: str | None = None) -> Callable[[], None]:
            def fn() -> None:
                e = staged[i]
                if call is None:
                    self.lines.append(f"{body}stage{i}{slot} = {self.var(e, body)};")
                    return
                x = self.var(e.args[0], body)
                self.lines.append(f"{body}stage{i}{slot} = {call}({x});")
                if call.endswith("_small"):
                    self.lines.append(f"{body}key{i} = key{i} > t_sincos_key({x}) ? key{i} : "
                                      f"t_sincos_key({x});")
            return fn

        for i, e in enumerate(staged):
            if e.op in ("sin", "cos") and ctype(e.dtype) == "float":
                # sin/cos of a block without a call per vector: the Cody-Waite path, and
                # the block again with the full routine if an argument was out of its range
                lines.append(f"{indent}int32_t key{i} = 0;")
                self.sincos = True
                stage_loop(i, store(i, f"t_{e.op}f_small"), f"#pragma omp simd reduction(max:key{i})")
                lines.append(f"{indent}if (T_SINCOS_HUGE(key{i})) {{")
                indent += "    "
                body += "    "
                stage_loop(i, store(i, f"t_{e.op}f"), None)
                indent = indent[:-4]
                body = body[:-4]
                lines.append(f"{indent}}}")
            else:
                stage_loop(i, store(i), "#pragma omp simd")
        stage_loop(len(staged), lambda: self._pointwise_body(body), "#pragma omp simd")
        while len(indent) > 4:
            indent = indent[:-4]
            lines.append(f"{indent}}}")
        lines.extend(self._function_end())
        return "\n".join(lines)

    def _pointwise_body(self, indent: str | None = None) -> None:
        """All dims are loops; the innermost one is vectorized."""
        k = self.k
        indent = indent or "    " * (len(k.outer) + 1)
        for node in k.nodes:
            if isinstance(node.buf, Reduction) and node.buf.reduce_type in ("argmax", "argmin"):
                v = "((int64_t)0)"          # a reduction over no dims: the only position
            else:
                v = self.var(node.body, indent)   # ... or the element itself
            self.local[node.buf.name] = v
            self._store(node, v, indent)

    def _hoist_pointwise(self) -> list[str]:
        """The lines computing, once per run of the innermost loop, the values that do
        not vary along it (a batch norm's per-channel scale and shift over a feature
        map): they go before that loop. Only when the loop is known to run (a static,
        positive size): a hoisted load must not read where no element is."""
        k = self.k
        if len(k.outer) < 2:
            return []
        size = sympy.sympify(k.outer[-1])
        if not size.is_number or int(size) < 2:
            return []
        last = k.outer_vars[-1]
        produced = {n.buf.name for n in k.nodes}
        indent = "    " * len(k.outer)
        self.hoist([n.body for n in k.nodes], lambda e: _depends_on(e, {last}) or any(
            isinstance(x, Load) and x.buf in produced for x in walk(e)), indent)
        self._hoist_indices(last, produced, indent)
        hoisted, self.lines = self.lines, []
        return hoisted

    def _hoist_indices(self, last: sympy.Symbol, produced: set[str], indent: str) -> None:
        """Index arithmetic that does not vary along the innermost loop, computed before
        it: index values (a pooling window's argmax positions) and the non-affine part of
        load offsets (a padded window's clamped row and column), as a pointer to the
        row's start. Left in the loop, a clamp makes the C compiler vectorize the load as a
        gather, and an integer offset (under -fwrapv) keeps it from vectorizing at all.
        Loads already hoisted, and values of this kernel's own buffers, get no pointer."""
        for n in self.k.nodes:
            for e in walk(n.body):
                if self._find(e) is not None:
                    continue
                if isinstance(e, Index) and not e.expr.has(last):
                    self.var(e, indent)
                elif (isinstance(e, Load) and e.buf not in produced
                      and (e.buf, e.index) not in self.load_offsets):
                    index = sympy.expand(e.index)
                    step = index.coeff(last)
                    rest = sympy.expand(index - step * last)
                    if rest.has(last) or step.has(last) or rest.is_polynomial():
                        continue         # varies otherwise, or affine: the compiler sees it
                    name = f"row{len(self.load_offsets)}_{e.buf}"
                    self.lines.append(f"{indent}const {STORAGE[e.dtype]}* const {name} = "
                                      f"{e.buf} + ({print_index(rest)});")
                    self.load_offsets[e.buf, e.index] = (name, print_index(step * last))

    def _row_nodes(self, stage: int, indent: str) -> None:
        for node in self.k.nodes:
            if node.level == "row" and node.stage == stage:
                v = self.var(node.body, indent)
                self.local[node.buf.name] = v
                self._store(node, v, indent)

    def _inner_loop(self, stage: int, indent: str) -> None:
        k = self.k
        nodes = [n for n in k.nodes if n.level == "full" and n.stage == stage]
        reductions = [n for n in nodes if isinstance(n.buf, Reduction)]
        accs: dict[str, tuple[str, KernelNode]] = {}
        clauses: list[str] = []
        vectorize = True
        for n in reductions:
            acc = f"acc_{n.buf.name}"
            rt = n.buf.reduce_type
            at = ctype(n.body.dtype) if rt not in ("any", "all") else "int"
            if rt in ("sum", "prod", "any", "all"):
                self.lines.append(f"{indent}{at} {acc} = {REDUCE_INIT[rt]};")
                clauses.append(f"reduction({ {'sum': '+', 'prod': '*', 'any': '|', 'all': '&'}[rt] }:{acc})")
            elif rt in ("max", "min"):
                init = _extreme(n.body.dtype, rt == "max")
                self.lines.append(f"{indent}{at} {acc} = {init};")
                clauses.append(f"reduction({rt}:{acc})")
                if n.body.dtype.is_floating_point:
                    self.lines.append(f"{indent}int nan_{n.buf.name} = 0;")
                    clauses.append(f"reduction(|:nan_{n.buf.name})")
            else:  # argmax / argmin: first index of the extreme, NaN wins
                init = _extreme(n.body.dtype, rt == "argmax")
                self.lines.append(f"{indent}{at} {acc} = {init};")
                self.lines.append(f"{indent}int64_t arg_{n.buf.name} = 0;")
                self.lines.append(f"{indent}int first_{n.buf.name} = 1;")
                vectorize = False
            accs[n.buf.name] = (acc, n)
        self._hoist_invariants(nodes, indent)
        rvars = [str(v) for v in k.inner_vars]
        loop_indent = indent
        for d, (v, size) in enumerate(zip(rvars, k.inner)):
            extra = (" " + " ".join(clauses)) if clauses else ""
            if not k.outer and len(rvars) == 1 and vectorize:
                # A reduction to a scalar: split the reduced axis over the threads.
                self.lines.append(f"{loop_indent}#pragma omp parallel for simd{extra} "
                                  f"if(({print_index(size)}) > 32768){self.err}")
            elif d == len(rvars) - 1 and vectorize:
                self.lines.append(f"{loop_indent}#pragma omp simd{extra}{self.err}")
            self.lines.append(f"{loop_indent}for (int64_t {v} = 0; {v} < {print_index(size)}; ++{v}) {{")
            loop_indent += "    "
        flat = print_index(_flat_r(k))
        cached = {e: f"row{slot}[{flat}]" for slot, (e, first) in enumerate(self.row_cache.items())
                  if first < stage}
        self.scopes.append(cached)
        for n in nodes:
            value = self.var(n.body, loop_indent)
            if n.buf.name in accs:
                self._combine(n, accs[n.buf.name][0], value, loop_indent)
            else:
                self.local[n.buf.name] = value
                self._store(n, value, loop_indent)
        for slot, (e, first) in enumerate(self.row_cache.items()):
            if first == stage:
                self.lines.append(f"{loop_indent}row{slot}[{flat}] = {self._lookup(e)};")
        self.scopes.pop()
        for n in nodes:
            if n.buf.name not in accs:
                self.local.pop(n.buf.name, None)   # not visible after the loop
        for _ in rvars:
            loop_indent = loop_indent[:-4]
            self.lines.append(f"{loop_indent}}}")
        for name, (acc, n) in accs.items():
            rt = n.buf.reduce_type
            out = f"v_{name}"
            t = ctype(n.buf.dtype)
            if rt in ("max", "min") and n.body.dtype.is_floating_point:
                val = f"(nan_{name} ? NAN : {acc})"
            elif rt in ("argmax", "argmin"):
                val = f"arg_{name}"
            elif rt in ("any", "all"):
                val = f"({acc} != 0)"
            else:
                val = acc
            self.lines.append(f"{indent}const {t} {out} = ({t}){val};")
            self.local[name] = out
            self._store(n, out, indent)

    def _hoist_invariants(self, nodes: list[KernelNode], indent: str) -> None:
        """Emit before the inner loop the largest subexpressions that do not vary along
        it (e.g. an embedding row's checked index, computed once per row, not per element)."""
        rvars = set(self.k.inner_vars)
        # values of this loop's nodes (earlier stages' results are locals by now)
        in_loop = {n.buf.name for n in self.k.nodes if n.level == "full"} - set(self.local)
        self.hoist([n.body for n in nodes], lambda e: _depends_on(e, rvars) or any(
            isinstance(x, Load) and x.buf in in_loop for x in walk(e)), indent)

    def _combine(self, n: KernelNode, acc: str, value: str, indent: str) -> None:
        rt = n.buf.reduce_type
        if rt == "sum":
            self.lines.append(f"{indent}{acc} += {value};")
        elif rt == "prod":
            self.lines.append(f"{indent}{acc} *= {value};")
        elif rt == "any":
            self.lines.append(f"{indent}{acc} |= ({value} != 0);")
        elif rt == "all":
            self.lines.append(f"{indent}{acc} &= ({value} != 0);")
        elif rt in ("max", "min"):
            cmp = ">" if rt == "max" else "<"
            self.lines.append(f"{indent}{acc} = ({value} {cmp} {acc}) ? {value} : {acc};")
            if n.body.dtype.is_floating_point:
                self.lines.append(f"{indent}nan_{n.buf.name} |= ({value} != {value});")
        else:
            cmp = ">" if rt == "argmax" else "<"
            name = n.buf.name
            pos = print_index(_flat_r(self.k))
            self.lines.append(
                f"{indent}if (first_{name} || ({acc} == {acc} && ({value} {cmp} {acc} || "
                f"{value} != {value}))) {{ {acc} = {value}; arg_{name} = {pos}; first_{name} = 0; }}")

    def _store(self, node: KernelNode, value: str, indent: str) -> None:
        name = node.buf.name
        if name in self.internal:
            return
        self.lines.append(f"{indent}{name}[{print_index(node.store_index)}] = "
                          f"{self.store_code(node.body, value, node.buf.dtype)};")

    def store_code(self, body: Expr, value: str, dtype: torch.dtype) -> str:
        """`value` (the emitted `body`, or another value) as stored into a `dtype` buffer. A
        float rounded to the stored type is stored as the float: the store rounds it the
        same way (rounding a rounded value changes nothing), rather than rounding twice."""
        if (isinstance(body, Op) and body.op == "cast" and body.dtype == dtype
                and dtype in (torch.bfloat16, torch.float16) and value == self._find(body)
                and ctype(body.args[0].dtype) == "float" and self._find(body.args[0]) is not None):
            value = self._find(body.args[0])
        return store_value(value, dtype)

    def _kernel_head(self) -> list[str]:
        k = self.k
        params = self.params()
        return [f"// {k.name}: " + ", ".join(k.origins()),
                *([f"// {self.note}"] if self.note else []),
                *([f"// from: {'; '.join(k.sources()[:6])}"] if k.sources() else []),
                f"void {k.name}({', '.join(params) if params else 'void'}) {{",
                *self._error_start()]

    def _error_start(self) -> list[str]:
        return ["    int tb_bad = 0;"] if self.err else []

    def _function_end(self) -> list[str]:
        return ["    if (tb_bad) *tb_error |= tb_bad;", "}"] if self.err else ["}"]

    def _loop_order(self) -> list[int]:
        """A pointwise kernel's outer loops in its first output's memory order (largest
        stride first; the vectorized last loop stays innermost), so that its stores
        stream through memory: a [B, H, L, D] result stored [B, L, H, D]-ordered for
        attention is written row after row, not head after head."""
        k = self.k
        n = len(k.outer)
        node = next((nd for nd in k.nodes if nd.buf.name not in self.internal), None)
        if k.inner or n < 3 or node is None:
            return list(range(n))
        coeffs = [node.store_index.coeff(v) for v in k.outer_vars[:-1]]
        if not all(c.is_number for c in coeffs):
            return list(range(n))
        return sorted(range(n - 1), key=lambda d: (-int(coeffs[d]), d)) + [n - 1]

    def _wrap_outer(self, body: list[str], hoisted: list[str] = ()) -> str:
        """The loops around `body`; `hoisted` lines go just before the innermost loop."""
        k = self.k
        sizes = [print_index(s) for s in k.outer]
        lines = self._kernel_head()
        lines += self.loop_nest([str(v) for v in k.outer_vars], sizes, body, self._loop_order(),
                                [print_index(r) for r in k.inner], hoisted)
        lines.extend(self._function_end())
        return "\n".join(lines)

    def loop_nest(self, vars_: list[str], sizes: list[str], body: list[str], order: list[int],
                  inner: list[str] = (), hoisted: list[str] = ()) -> list[str]:
        """Parallel loops over `vars_` (in `order`) around `body`. With no `inner` (reduced)
        loops in the body, the innermost of them is the vectorized one (`omp simd`), the
        others are collapsed across the threads; `hoisted` lines go before the innermost."""
        if not vars_:
            return list(body)
        work = " * ".join(f"({s})" for s in sizes + list(inner)) or "1"
        n_par = len(vars_) if inner else max(len(vars_) - 1, 0)
        if inner or len(vars_) > 1:
            lines = [f"    #pragma omp parallel for collapse({max(n_par, 1)}) "
                     f"if(({work}) > 32768){self.err}"]
        else:
            lines = [f"    #pragma omp parallel for simd if(({work}) > 32768){self.err}"]
        indent = "    "
        for d, i in enumerate(order):
            if d == len(vars_) - 1:
                lines.extend(hoisted)
                if not inner and len(vars_) > 1:
                    lines.append(f"{indent}#pragma omp simd{self.err}")
            lines.append(f"{indent}for (int64_t {vars_[i]} = 0; {vars_[i]} < {sizes[i]}; ++{vars_[i]}) {{")
            indent += "    "
        lines.extend(body)
        for _ in vars_:
            indent = indent[:-4]
            lines.append(f"{indent}}}")
        return lines

    def params(self) -> list[str]:
        """The C declarations of the kernel's parameters, in call order."""
        return [_declaration(p) for p in self.param_list]

    def reports_errors(self) -> bool:
        """Whether the kernel checks data eager raises on: it takes the error flag."""
        return any(isinstance(p, ErrorFlag) for p in self.param_list)


def _declaration(p: Param) -> str:
    if isinstance(p, Pointer):
        return f"{'const ' if p.role == 'in' else ''}{STORAGE[p.dtype]}* {p.name}"
    if isinstance(p, SizeSymbol):
        return f"int64_t {p.name}"
    return f"int* {p.name}"


# Calls worth a loop of their own when a pointwise kernel makes several.
_STAGED = {"exp", "expm1", "log", "log1p", "log2", "log10", "erf", "erfc", "tanh", "sigmoid",
           "pow", "sin", "cos", "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh",
           "atanh", "lgamma", "atan2"}

_COSTLY = {"exp", "expm1", "log", "log1p", "log2", "log10", "erf", "erfc", "tanh", "sigmoid",
           "pow", "sin", "cos", "tan", "sinh", "cosh", "asin", "acos", "atan", "asinh", "acosh",
           "atanh", "lgamma", "atan2", "sqrt", "rsqrt", "truediv"}


def _expensive(e: Expr) -> bool:
    ops = [n for n in walk(e) if isinstance(n, Op)]
    return len(ops) >= 4 or any(n.op in _COSTLY for n in ops)


def _walk_pruned(root: Expr, stop: set[Expr]) -> list[Expr]:
    """Nodes reachable from root without entering the nodes in `stop`."""
    seen: set[Expr] = set()
    stack = [root]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if e in stop and e is not root:
            continue
        stack.extend(e.children())
    return list(seen)


def _depends_on(e: Expr, rvars: set) -> bool:
    for n in walk(e):
        if isinstance(n, Load) and n.index.free_symbols & rvars:
            return True
        if isinstance(n, Index) and n.expr.free_symbols & rvars:
            return True
    return False


def _flat_r(k: Kernel) -> sympy.Expr:
    from ...ir.nodes import contiguous_strides, linear_index
    return linear_index(k.inner_vars, contiguous_strides(k.inner))


def _extreme(dtype: torch.dtype, is_max: bool) -> str:
    if dtype.is_floating_point:
        return "(-INFINITY)" if is_max else "INFINITY"
    if dtype == torch.bool:
        return "0" if is_max else "1"
    info = torch.iinfo(dtype)
    v = info.min if is_max else info.max
    return c_const(v, dtype)
