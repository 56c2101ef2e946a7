"""The C target's scatter kernel: the C function of a `Scatter` (indexed writes in entry
order: index_put accumulating, scatter_add; see ir/nodes.py).

Two loops in one function. First the initial contents over the whole output (a pointwise
loop, parallel, the innermost dim `omp simd`). Then the entries: work items are tiles of
the points (the outer point, a tile of adjacent positions of the last dim), in parallel;
each runs the entries serially, in increasing order, and within one entry the positions of
its tile as a `omp simd` loop (distinct positions write distinct elements). So every
element receives its entries one after another in entry order, whatever the thread count:
the same bits as eager's serial kernel. What does not vary along the tile (the entry's
checked index, its row offset) is computed once per entry.
"""
from __future__ import annotations

from ...ir.expr import Expr, Load, walk
from ...ir.nodes import Scatter, index_vars, linear_index
from ..indexing import print_index
from .kernels import KernelWriter, _depends_on

# Fewer outer points than this: the last dim is split in tiles so the threads have work ...
SCATTER_ITEMS = 16
# ... of at least this many positions each.
SCATTER_MIN_TILE = 64


class ScatterWriter(KernelWriter):
    """Writes the C function of one scatter kernel (scheduler: outer loops = the points,
    the one inner loop = the entries)."""

    def write(self) -> str:
        node = self.k.nodes[0]
        assert isinstance(node.buf, Scatter), self.k.name
        lines = self._kernel_head()
        lines.append("    // the initial contents")
        lines.extend(self._init_loop(node.buf))
        lines.append("    // the entries, in order for every element")
        lines.extend(self._entries_loop(node))
        lines.extend(self._function_end())
        return "\n".join(lines)

    def _init_loop(self, b: Scatter) -> list[str]:
        ivars = index_vars(len(b.shape))
        names = [str(v) for v in ivars]
        sizes = [print_index(s) for s in b.shape]
        ind = "    " * (len(names) + 1)
        self.lines = []
        self.scopes.append({})
        v = self.var(b.init, ind)
        store = print_index(linear_index(ivars, b.stride))
        self.lines.append(f"{ind}{b.name}[{store}] = {self.store_code(b.init, v, b.dtype)};")
        self.scopes.pop()
        return self.loop_nest(names, sizes, self.lines, list(range(len(names))))

    def _entry(self, node, indent: str) -> list[str]:
        """One entry's work at one point: the values, then the store."""
        self.lines = []
        self.scopes.append({})
        b = node.buf
        offset = print_index(node.store_index)
        if node.dynamic is not None:
            offset = f"{offset} + {self.var(node.dynamic, indent)}"
        v = self.var(node.body, indent)
        self.lines.append(f"{indent}{b.name}[{offset}] = {self.store_code(node.body, v, b.dtype)};")
        self.scopes.pop()
        return self.lines

    def _entries_loop(self, node) -> list[str]:
        k = self.k
        r, n_entries = str(k.inner_vars[0]), print_index(k.inner[0])
        loop = f"for (int64_t {r} = 0; {r} < {n_entries}; ++{r}) {{"
        if not k.outer:                      # one point: the entries one after another
            return [f"    {loop}", *self._entry(node, "        "), "    }"]
        pv = [str(v) for v in k.outer_vars]
        sizes = [print_index(s) for s in k.outer]
        last = pv[-1]
        outer = " * ".join(f"({s})" for s in sizes[:-1]) or "1"
        L = [f"    const int64_t n_outer = {outer}, n_last = {sizes[-1]};",
             "    int64_t width = n_last;",
             f"    if (n_outer > 0 && n_outer < {SCATTER_ITEMS}) {{",
             f"        const int64_t want = ({SCATTER_ITEMS} + n_outer - 1) / n_outer;",
             "        width = ((n_last + want - 1) / want + 15) / 16 * 16;",
             f"        if (width < {SCATTER_MIN_TILE}) width = {SCATTER_MIN_TILE};",
             "    }",
             "    const int64_t n_tile = n_last > 0 ? (n_last + width - 1) / width : 0;",
             f"    #pragma omp parallel for if(n_outer * n_last * ({n_entries}) > 32768){self.err}",
             "    for (int64_t item = 0; item < n_outer * n_tile; ++item) {",
             "        const int64_t o = item / n_tile, tile = item % n_tile;",
             *self._unflatten("o", pv[:-1], sizes[:-1], "        "),
             f"        const int64_t {last}_b = tile * width;",
             f"        const int64_t {last}_e = {last}_b + width < n_last ? {last}_b + width : n_last;",
             f"        {loop}"]
        # once per entry: what does not vary along the tile (never the values so far)
        self.lines = []
        self.scopes.append({})
        name = node.buf.name
        tile_var = {k.outer_vars[-1]}

        def varies(e: Expr) -> bool:
            return _depends_on(e, tile_var) or any(isinstance(x, Load) and x.buf == name
                                                   for x in walk(e))

        self.hoist([node.body, *([node.dynamic] if node.dynamic is not None else [])], varies,
                   " " * 12)
        L.extend(self.lines)
        L.append(f"            #pragma omp simd{self.err}")
        L.append(f"            for (int64_t {last} = {last}_b; {last} < {last}_e; ++{last}) {{")
        L.extend(self._entry(node, " " * 16))
        self.scopes.pop()
        L += ["            }", "        }", "    }"]
        return L
