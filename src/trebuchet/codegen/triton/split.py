"""Scalar reductions (everything to one value) split over many programs, in two passes:
`_kernelN_partial` reduces each chunk of the elements to a partial result (one program
per chunk), `_kernelN_combine` reduces the partial results in chunk order in one program
and computes the kernel's epilogue. The chunks depend only on the element count, so the
result is the same bits on every run (no atomics). Below the target's `scalar_split`
limit the kernel runs as one program (reductions.py), as do kernels with more than one
stage (variance's second pass needs the first's result).

argmax/argmin keep each chunk's extreme and its first position; the combine takes the
first position among the chunks holding the overall extreme (or a NaN).
"""
from __future__ import annotations

import sympy
import torch

from ...ir.nodes import Reduction
from ...scheduler.describe import Pointer, SizeSymbol, kernel_shape
from ...scheduler.kernels import Kernel, KernelNode
from .kernels import IND, jit_head
from .ops import tl_type
from .reductions import LOOP_RBLOCK, TritonReductionWriter, _identity

# Scalar reductions over more elements than this are split (a Target limit, __init__).
SCALAR_SPLIT = 65536
# At most this many chunks (the combine reduces them in one block).
MAX_PARTS = 1024

_TORCH = {"tl.float32": "torch.float32", "tl.float64": "torch.float64", "tl.int8": "torch.int8",
          "tl.int16": "torch.int16", "tl.int32": "torch.int32", "tl.int64": "torch.int64",
          "tl.uint8": "torch.uint8", "tl.uint16": "torch.uint16", "tl.uint32": "torch.uint32",
          "tl.uint64": "torch.uint64"}


def splittable(k: Kernel, params: list) -> bool:
    """A scalar kernel of one stage whose epilogue needs only its reductions."""
    return (kernel_shape(k) == "scalar" and k.num_loops == 1
            and not any(n.level == "row" and n.stage == 0 for n in k.nodes)
            and any(isinstance(p, Pointer) for p in params))


class SplitScalarWriter(TritonReductionWriter):
    """A scalar reduction kernel: one program below the limit, two passes above it."""

    def __init__(self, *args, scalar_split: int = SCALAR_SPLIT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.split = scalar_split
        self.reductions = [n for n in self.k.nodes if isinstance(n.buf, Reduction)]

    def _acc_type(self, n: KernelNode) -> str:
        rt, dt = n.buf.reduce_type, n.body.dtype
        return "tl.int8" if rt in ("any", "all") or dt == torch.bool else tl_type(dt)

    def _partials(self) -> list[str]:
        """The partial-result buffers (values, and positions for argmax/argmin)."""
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
        rt, name = n.buf.reduce_type, n.buf.name
        acc, fl = f"acc_{name}", n.body.dtype.is_floating_point
        at = "tl.program_id(0) + tl.full([1, 1], 0, tl.int64)"
        if rt in ("sum", "prod"):
            value = self._final(n, acc, "")
        elif rt in ("any", "all"):
            value = f"tl.reduce({acc}, 1, _t_{'max' if rt == 'any' else 'min'}, keep_dims=True)"
        else:
            extreme = "max" if rt in ("max", "argmax") else "min"
            value = f"_t_{extreme}_{'nan' if fl else 'int'}({acc}, 1)"
        self.lines.append(f"{self.indent}p_{name} = {value}")
        self.lines.append(f"{self.indent}tl.store(part_{name} + ({at}), p_{name})")
        if rt in ("argmax", "argmin"):
            self.lines.append(f"{self.indent}tl.store(ppos_{name} + ({at}), "
                              f"_t_first_index({acc}, pos_{name}, p_{name}, 1))")

    def _partial_function(self, fn: str) -> list[str]:
        self.partial = True
        self._reset(None)
        self.rstart, self.rend = "rstart", "rend"
        self._stage_looped(0)
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        head = [*jit_head(fn, [*names, *self._partials(), "rnumel", "chunk"], [*sizes, "chunk"],
                          ["XBLOCK", "RBLOCK"]),
                f"{IND}xmask = tl.full([XBLOCK, 1], 1, tl.int1)",
                f"{IND}rstart = tl.program_id(0).to(tl.int64) * chunk",
                f"{IND}rend = tl.minimum(rstart + chunk, {self.rnumel})"]
        if self.checks:
            head.append(f"{IND}tb_bad = tl.full({self.block}, 0, tl.int32)")
            self.lines.append(f"{IND}tl.atomic_or(tb_error + tl.full({self.block}, 0, "
                              "tl.int32), tb_bad, mask=tb_bad != 0)")
        self.partial = False
        return head + self.lines

    # pass 2: one program reduces the partial results in order, then the epilogue
    def _combine_function(self, fn: str) -> list[str]:
        self._reset(MAX_PARTS)
        for n in self.reductions:
            rt, name = n.buf.reduce_type, n.buf.name
            ident = _identity(rt, n.body.dtype)
            self.lines.append(f"{IND}p_{name} = tl.load(part_{name} + rindex, mask=rmask, "
                              f"other={ident})")
            index = ""
            if rt in ("argmax", "argmin"):
                self.lines.append(f"{IND}q_{name} = tl.load(ppos_{name} + rindex, mask=rmask, "
                                  "other=0)")
                index = f"q_{name}"
            self._finish(n, self._final(n, f"p_{name}", index))
        self._row_nodes(1)
        names = [p.name for p in self.param_list]
        sizes = [p.name for p in self.param_list if isinstance(p, SizeSymbol)]
        head = [*jit_head(fn, [*names, *self._partials(), "nparts"], sizes, ["XBLOCK", "RBLOCK"]),
                f"{IND}xmask = tl.full([1, 1], 1, tl.int1)",
                f"{IND}rindex = tl.arange(0, RBLOCK)[None, :]",
                f"{IND}rmask = rindex < nparts"]
        if self.checks:
            head.append(f"{IND}tb_bad = tl.full([1, RBLOCK], 0, tl.int32)")
            self.lines.append(f"{IND}tl.atomic_or(tb_error + tl.full([1, RBLOCK], 0, tl.int32), "
                              "tb_bad, mask=tb_bad != 0)")
        return head + self.lines

    def parts(self) -> tuple[list[str], list[str]]:
        self.partial = False
        functions, launch = super().parts()
        k = self.k
        names = [p.name for p in self.param_list]
        rnumel = sympy.Mul(*k.inner)
        if rnumel.is_number and int(rnumel) <= self.split:
            return functions, launch
        functions += self._partial_function(f"_{k.name}_partial") + ["", ""]
        functions += self._combine_function(f"_{k.name}_combine") + ["", ""]
        device = next(p.name for p in self.param_list if isinstance(p, Pointer))
        split = [f"{IND}if rnumel > {self.split}:   # chunks reduced by many programs, "
                 "then combined in order",
                 f"{IND}{IND}chunk = max({self.split} // 4, triton.cdiv(rnumel, {MAX_PARTS}))",
                 f"{IND}{IND}rblock = min(triton.next_power_of_2(chunk), {LOOP_RBLOCK})",
                 f"{IND}{IND}chunk = triton.cdiv(chunk, rblock) * rblock",
                 f"{IND}{IND}nparts = triton.cdiv(rnumel, chunk)"]
        for n in self.reductions:
            t = _TORCH[self._acc_type(n)]
            split.append(f"{IND}{IND}part_{n.buf.name} = torch.empty(nparts, dtype={t}, "
                         f"device={device}.device)")
            if n.buf.reduce_type in ("argmax", "argmin"):
                split.append(f"{IND}{IND}ppos_{n.buf.name} = torch.empty(nparts, "
                             f"dtype=torch.int64, device={device}.device)")
        parts = ", ".join(self._partials())
        split += [f"{IND}{IND}_{k.name}_partial[(nparts,)]({', '.join(names)}, {parts}, rnumel, "
                  "chunk, XBLOCK=1, RBLOCK=rblock, num_warps=_t_num_warps(rblock), "
                  "enable_fp_fusion=False)",
                  f"{IND}{IND}nblock = triton.next_power_of_2(nparts)",
                  f"{IND}{IND}_{k.name}_combine[(1,)]({', '.join(names)}, {parts}, nparts, "
                  "XBLOCK=1, RBLOCK=nblock, num_warps=_t_num_warps(nblock), enable_fp_fusion=False)",
                  f"{IND}{IND}return"]
        cut = next(i for i, line in enumerate(launch) if line.startswith(f"{IND}rblock ="))
        return functions, launch[:cut + 1] + split + launch[cut + 1:]


__all__ = ["SplitScalarWriter", "splittable", "SCALAR_SPLIT"]
