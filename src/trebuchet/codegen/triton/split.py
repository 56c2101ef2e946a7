"""Reductions split over the reduced axis, in two passes, for kernels with few outputs:
a scalar reduction (everything to one value) over many elements, or a column reduction
(bias gradients, sums over the batch) with too few tiles of outputs to fill the device.
`_kernelN_partial` reduces each chunk of rows (of elements, for a scalar) to partial
results (one program per (tile of outputs, chunk)), `_kernelN_combine` reduces each
output's partial results in chunk order and computes the kernel's epilogue. The chunks
depend only on the sizes, so the result is the same bits on every run (no atomics).

A scalar kernel splits above the target's `scalar_split` elements; a column kernel when
it has fewer than `SPLIT_PROGRAMS` programs and at least `SPLIT_ROWS` rows per chunk.
Otherwise (and for kernels of more than one stage: variance's second pass needs the
first's result) the kernel runs as reductions.py writes it.

argmax/argmin keep each chunk's extreme and its first position; the combine takes the
first position among the chunks holding the overall extreme (or a NaN).
"""
from __future__ import annotations

import sympy
import torch

from ...ir.nodes import Reduction
from ...scheduler.describe import Pointer, SizeSymbol, kernel_shape
from ...scheduler.kernels import Kernel, KernelNode
from .kernels import IND, error_flag_lines, jit_head
from .ops import tl_type
from .reductions import COLUMN_TILE, LOOP_RBLOCK, TritonReductionWriter, _identity

# Scalar reductions over more elements than this are split (a Target limit, __init__).
SCALAR_SPLIT = 65536
# At most this many chunks of a scalar (the combine reduces them in one block).
MAX_PARTS = 1024
# A column kernel with fewer programs than this is split over its rows ...
SPLIT_PROGRAMS = 256
# ... into chunks of at least this many rows.
SPLIT_ROWS = 256

_TORCH = {"tl.float32": "torch.float32", "tl.float64": "torch.float64", "tl.int8": "torch.int8",
          "tl.int16": "torch.int16", "tl.int32": "torch.int32", "tl.int64": "torch.int64",
          "tl.uint8": "torch.uint8", "tl.uint16": "torch.uint16", "tl.uint32": "torch.uint32",
          "tl.uint64": "torch.uint64"}


def splittable(k: Kernel, params: list) -> bool:
    """A scalar or column kernel of one stage whose epilogue needs only its reductions."""
    return (kernel_shape(k) in ("scalar", "column") and k.num_loops == 1
            and not any(n.level == "row" and n.stage == 0 for n in k.nodes)
            and any(isinstance(p, Pointer) for p in params))


class SplitWriter(TritonReductionWriter):
    """A scalar or column reduction kernel, split in two passes when it has few outputs."""

    def __init__(self, *args, scalar_split: int = SCALAR_SPLIT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.split = scalar_split
        self.reductions = [n for n in self.k.nodes if isinstance(n.buf, Reduction)]
        self.partial = False

    def _acc_type(self, n: KernelNode) -> str:
        rt, dt = n.buf.reduce_type, n.body.dtype
        return "tl.int8" if rt in ("any", "all") or dt == torch.bool else tl_type(dt)

    def _partials(self) -> list[str]:
        """The partial-result buffers ([chunk][output]: values, and positions for argmax)."""
        out = []
        for n in self.reductions:
            out.append(f"part_{n.buf.name}")
            if n.buf.reduce_type in ("argmax", "argmin"):
                out.append(f"ppos_{n.buf.name}")
        return out

    # pass 1: the loop over one chunk stores its partial results
    def _loop_result(self, n: KernelNode) -> None:
        if not self.partial:
            return super()._loop_result(n)
        rt, name, ax = n.buf.reduce_type, n.buf.name, self.axis
        acc, fl = f"acc_{name}", n.body.dtype.is_floating_point
        at = f"tl.program_id(1).to(tl.int64) * {self.xnumel} + xindex"
        if rt in ("sum", "prod"):
            value = self._final(n, acc, "")
        elif rt in ("any", "all"):
            value = f"tl.reduce({acc}, {ax}, _t_{'max' if rt == 'any' else 'min'}, " \
                    "keep_dims=True)"
        else:
            extreme = "max" if rt in ("max", "argmax") else "min"
            value = f"_t_{extreme}_{'nan' if fl else 'int'}({acc}, {ax})"
        self.lines.append(f"{self.indent}p_{name} = {value}")
        self.lines.append(f"{self.indent}tl.store(part_{name} + ({at}), p_{name}, mask=xmask)")
        if rt in ("argmax", "argmin"):
            self.lines.append(f"{self.indent}tl.store(ppos_{name} + ({at}), _t_first_index("
                              f"{acc}, pos_{name}, p_{name}, {ax}), mask=xmask)")

    def _partial_function(self, fn: str) -> list[str]:
        self.partial = True
        self._reset(None)
        self.rstart, self.rend = "rstart", "rend"
        self._stage_looped(0)
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        head = [*jit_head(fn, [*names, *self._partials(), "xnumel", "rnumel", "chunk"],
                          [*sizes, "chunk"], ["XBLOCK", "RBLOCK"]),
                *self._x_head(self.lines),
                f"{IND}rstart = tl.program_id(1).to(tl.int64) * chunk",
                f"{IND}rend = tl.minimum(rstart + chunk, {self.rnumel})"]
        if self.checks:
            setup, flag = error_flag_lines(self.block)
            head.append(setup)
            self.lines.append(flag)
        self.partial = False
        return head + self.lines

    # pass 2: each output's partial results reduced in chunk order, then the epilogue
    def _combine_function(self, fn: str) -> list[str]:
        self._reset(None)
        for n in self.reductions:
            rt, name = n.buf.reduce_type, n.buf.name
            at = f"rindex * {self.xnumel} + xindex"
            ident = _identity(rt, n.body.dtype)
            self.lines.append(f"{IND}p_{name} = tl.load(part_{name} + ({at}), "
                              f"mask=rmask & xmask, other={ident})")
            index = ""
            if rt in ("argmax", "argmin"):
                self.lines.append(f"{IND}q_{name} = tl.load(ppos_{name} + ({at}), "
                                  "mask=rmask & xmask, other=0)")
                index = f"q_{name}"
            self._finish(n, self._final(n, f"p_{name}", index))
        self._row_nodes(1)
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        arange = f"tl.arange(0, RBLOCK){'[:, None]' if self.column else '[None, :]'}"
        head = [*jit_head(fn, [*names, *self._partials(), "xnumel", "nparts"], sizes,
                          ["XBLOCK", "RBLOCK"]),
                *self._x_head(self.lines),
                f"{IND}rindex = {arange}.to(tl.int64)",
                f"{IND}rmask = rindex < nparts"]
        if self.checks:
            setup, flag = error_flag_lines(self.block)
            head.append(setup)
            self.lines.append(flag)
        return head + self.lines

    def _split_launch(self) -> list[str]:
        """The launcher's split branch: chunk sizes, partial buffers, the two passes."""
        k, I2 = self.k, IND * 2
        names = [p.name for p in self.param_list]
        if self.column:
            split = [f"{IND}tiles = triton.cdiv(xnumel, xblock)",
                     f"{IND}if tiles < {SPLIT_PROGRAMS} and rnumel >= 2 * {SPLIT_ROWS}:"
                     "   # rows in chunks, combined in order",
                     f"{I2}nparts = min(triton.cdiv(rnumel, {SPLIT_ROWS}), "
                     f"triton.cdiv({SPLIT_PROGRAMS}, tiles))",
                     f"{I2}chunk = triton.cdiv(triton.cdiv(rnumel, nparts), rblock) * rblock"]
        else:
            split = [f"{IND}if rnumel > {self.split}:   # chunks reduced by many programs, "
                     "then combined in order",
                     f"{I2}xblock = 1",
                     f"{I2}chunk = max({self.split} // 4, triton.cdiv(rnumel, {MAX_PARTS}))",
                     f"{I2}rblock = min(triton.next_power_of_2(chunk), {LOOP_RBLOCK})",
                     f"{I2}chunk = triton.cdiv(chunk, rblock) * rblock"]
        split.append(f"{I2}nparts = triton.cdiv(rnumel, chunk)")
        device = next(p.name for p in self.param_list if isinstance(p, Pointer))
        for n in self.reductions:
            t = _TORCH[self._acc_type(n)]
            split.append(f"{I2}part_{n.buf.name} = torch.empty(nparts * xnumel, dtype={t}, "
                         f"device={device}.device)")
            if n.buf.reduce_type in ("argmax", "argmin"):
                split.append(f"{I2}ppos_{n.buf.name} = torch.empty(nparts * xnumel, "
                             f"dtype=torch.int64, device={device}.device)")
        parts = ", ".join(self._partials())
        split += [f"{I2}_{k.name}_partial[(triton.cdiv(xnumel, xblock), nparts)]"
                  f"({', '.join(names)}, {parts}, xnumel, rnumel, chunk, XBLOCK=xblock, "
                  "RBLOCK=rblock, num_warps=_t_num_warps(xblock * rblock), "
                  "enable_fp_fusion=False)",
                  f"{I2}nblock = triton.next_power_of_2(nparts)",
                  f"{I2}xblock = min(xblock, max(1, {COLUMN_TILE} // nblock))",
                  f"{I2}_{k.name}_combine[(triton.cdiv(xnumel, xblock),)]({', '.join(names)}, "
                  f"{parts}, xnumel, nparts, XBLOCK=xblock, RBLOCK=nblock, "
                  "num_warps=_t_num_warps(xblock * nblock), enable_fp_fusion=False)",
                  f"{I2}return"]
        return split

    def parts(self) -> tuple[list[str], list[str]]:
        functions, launch = super().parts()
        rnumel = sympy.Mul(*self.k.inner)
        if not self.column and rnumel.is_number and int(rnumel) <= self.split:
            return functions, launch
        if self.column and rnumel.is_number and int(rnumel) < 2 * SPLIT_ROWS:
            return functions, launch
        name = self.k.name
        functions += self._partial_function(f"_{name}_partial") + ["", ""]
        functions += self._combine_function(f"_{name}_combine") + ["", ""]
        # the split goes where the launcher has chosen its blocks, before it launches
        cut = max(i for i, line in enumerate(launch) if line.startswith(f"{IND}rblock =")
                  or line.startswith(f"{IND}xblock ="))
        return functions, launch[:cut + 1] + self._split_launch() + launch[cut + 1:]


__all__ = ["SplitWriter", "splittable", "SCALAR_SPLIT"]
