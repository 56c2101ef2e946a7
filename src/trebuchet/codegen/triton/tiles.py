"""Pointwise kernels whose loads are transposed relative to their store, as 2-D tiles.

Over the flattened index (kernels.py) consecutive lanes step the store's contiguous (stride
1) loop variable, so a load whose stride-1 variable is another one (`x.t().contiguous()`,
`x + y.t()`, a permute moving the last dimension) reads one element per row: uncoalesced
on a GPU. Such a kernel is written as [YBLOCK, XBLOCK] tiles instead: the tile's x axis is
the store's contiguous variable, its y axis the transposed load's; the other loop variables
are recovered from the program id (one grid axis: x tiles fastest, then y tiles, then the
rest). Loads and stores take 2-D offsets and a 2-D mask, and Triton converts the layout
between them through shared memory, so both sides read and write whole rows.
`tile_axes` decides (None: the flattened kernel; also when an axis is constant and shorter
than MIN_TILE); the writer reuses the flattened writer's leaves and body, with values not
spanning both axes broadcast to the tile.
"""
from __future__ import annotations

import sympy

from ...ir.expr import loads
from ...scheduler.describe import ErrorFlag, SizeSymbol
from ...scheduler.kernels import Kernel
from .kernels import (IND, TritonKernelWriter, error_flag_lines, jit_head, kernel_comment, launch_code,
                      tunable, unflatten)

MAX_TILE = 64          # XBLOCK and YBLOCK at most (powers of two; at least MIN_TILE)
MIN_TILE = 16


def stride_one_var(index: sympy.Expr, variables: list[sympy.Symbol]) -> sympy.Symbol | None:
    """The loop variable that `index` steps by exactly 1 (its contiguous one), or None
    (none does, or only through floor division/modulo: not recognised, left flattened)."""
    for v in variables:
        if v in index.free_symbols and sympy.expand(index.subs(v, v + 1) - index) == 1:
            return v
    return None


def tile_axes(k: Kernel, internal: set[str]) -> tuple[sympy.Symbol, sympy.Symbol] | None:
    """(x, y): the store's contiguous loop variable and the first load's contiguous variable
    that differs from it; None when no load is transposed, or when either axis has a
    constant size below MIN_TILE (most of the tile would be masked off, and over the
    flattened index such a load already reads a few contiguous streams)."""
    variables = [v for v, size in zip(k.outer_vars, k.outer)
                 if not (size.is_number and int(size) < MIN_TILE)]
    if len(variables) < 2:
        return None
    stores = [n.store_index for n in k.nodes if n.buf.name not in internal]
    x = stride_one_var(stores[0], variables) if stores else None
    if x is None:
        return None
    produced = {n.buf.name for n in k.nodes}
    for n in k.nodes:
        for load in loads(n.body):
            if load.dynamic is not None or load.buf in produced:
                continue
            y = stride_one_var(load.index, variables)
            if y is not None and y != x:
                return x, y
    return None


class TileWriter(TritonKernelWriter):
    """Writes the jit function and launch function of one tiled pointwise kernel."""

    def __init__(self, kernel: Kernel, internal: set[str], params: list, note: str,
                 axes: tuple[sympy.Symbol, sympy.Symbol]):
        super().__init__(kernel, internal, params, note)
        self.x, self.y = axes

    def _block(self, code: str, expr: sympy.Expr) -> str:
        """A tile: an index without both tile axes is broadcast to [YBLOCK, XBLOCK]."""
        names = {str(s) for s in expr.free_symbols}
        if str(self.x) in names and str(self.y) in names:
            return code
        return f"({code} + tl.full([YBLOCK, XBLOCK], 0, tl.int64))"

    def write(self) -> str:
        k, x, y = self.k, self.x, self.y
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        size_of = dict(zip(k.outer_vars, k.outer))
        rest_vars = [(v, s) for v, s in size_of.items() if v not in (x, y)]
        znumel = sympy.Mul(*(s for _, s in rest_vars)) if rest_vars else sympy.Integer(1)
        body = self.body()
        head = [*kernel_comment(k, self.note),
                f"# tiled: x = {x} (the store's contiguous axis), y = {y} (a transposed load's)",
                *jit_head(f"_{k.name}", [*names, "xnumel", "ynumel"], sizes, ["YBLOCK", "XBLOCK"]),
                f"{IND}pid = tl.program_id(0).to(tl.int64)",
                f"{IND}xtiles = (xnumel + XBLOCK - 1) // XBLOCK",
                f"{IND}ytiles = (ynumel + YBLOCK - 1) // YBLOCK",
                f"{IND}{x} = (pid % xtiles) * XBLOCK + tl.arange(0, XBLOCK).to(tl.int64)[None, :]",
                f"{IND}{y} = ((pid // xtiles) % ytiles) * YBLOCK"
                f" + tl.arange(0, YBLOCK).to(tl.int64)[:, None]",
                f"{IND}xmask = ({x} < xnumel) & ({y} < ynumel)"]
        text = "".join(body)
        if any(str(v) in text for v, _ in rest_vars):
            head.append(f"{IND}zindex = pid // (xtiles * ytiles)")
        head += unflatten("zindex", rest_vars, text)
        if any(isinstance(p, ErrorFlag) for p in self.param_list):
            setup, flag = error_flag_lines("[YBLOCK, XBLOCK]", "xmask")
            head.append(setup)
            body.append(flag)
        launch = [f"def {k.name}({', '.join([*names, 'tb_config=None'])}):",
                  f"{IND}xnumel = {launch_code(size_of[x])}",
                  f"{IND}ynumel = {launch_code(size_of[y])}",
                  f"{IND}znumel = {launch_code(znumel)}",
                  f"{IND}if xnumel > 0 and ynumel > 0 and znumel > 0:",
                  f"{IND}{IND}xblock = {tile_block('xnumel')}",
                  f"{IND}{IND}yblock = {tile_block('ynumel')}",
                  *tunable(["yblock", "xblock"]),
                  f"{IND}{IND}grid = triton.cdiv(xnumel, xblock) * triton.cdiv(ynumel, yblock) * znumel",
                  f"{IND}{IND}_{k.name}[(grid,)]({', '.join([*names, 'xnumel', 'ynumel'])}, "
                  "YBLOCK=yblock, XBLOCK=xblock, num_warps=warps, enable_fp_fusion=False)",
                  f'{k.name}.tb_shape = "tile"']
        return "\n".join(head + body + ["", ""] + launch)


def tile_block(numel: str) -> str:
    """The launch function's block size along one tile axis: the axis' size rounded up to a
    power of two, between MIN_TILE and MAX_TILE (64 x 64 tiles: 16 KiB of float32 through
    shared memory for the layout conversion, and few programs under the interpreter)."""
    return f"min({MAX_TILE}, max({MIN_TILE}, triton.next_power_of_2({numel})))"


__all__ = ["TileWriter", "tile_axes", "stride_one_var", "MAX_TILE", "MIN_TILE"]
