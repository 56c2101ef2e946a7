"""The Triton target: one Python module of `@triton.jit` kernels per graph, imported from
the cache folder; on a GPU each kernel is compiled once per specialization and launched
through its compiled form (launch.py), under Triton's interpreter with `kernel[grid](...)`.

    ops.py       the op table and Triton types (expressions go through codegen/emitter.py)
    prelude.py   `@triton.jit` helpers for primitives Triton lacks (imported by the module)
    kernels.py   the pointwise kernel shape (and what every kernel shape shares)
    tiles.py     pointwise kernels with a transposed load, as 2-D tiles
    reductions.py  row, column and scalar reduction kernels
    split.py     scalar and column reductions with few outputs: partial results, then combined
    scatter.py   a Scatter: its initial contents, then its entries in order (no atomics)
    module.py    the module: the prelude's import, each kernel and its launch function
    launch.py    write and import the module; the wrapper's arguments, the error flag
    autotune.py  autotune=True: pointwise launch configurations timed on a GPU, cached on disk

It runs CUDA tensors (`target="auto"` picks it for them) and, under TRITON_INTERPRET=1,
CPU tensors (how CI runs it). The CUDA path (compiled launch, device-resident error flag,
CUDA graphs) is written for Triton 3.6-3.9 and ran once on an H200 (torch 2.11, triton 3.6;
docs/benchmarks.md); CI tests the interpreter path and code generation for fake CUDA tensors.
Nothing here imports triton at import time: only the generated module and prelude.py do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ...scheduler.describe import Param
from ..target import GeneratedCode, Target
from . import launch
from .kernels import MAX_XBLOCK
from .module import generate
from .reductions import PERSISTENT_RBLOCK
from .split import SCALAR_SPLIT
from .ops import TRITON_OPS, TritonUnsupported

if TYPE_CHECKING:
    import pathlib

    from ...config import Options
    from ...runtime.cache_files import CacheItem
    from ...scheduler.kernels import Kernel


class TritonTarget(Target):
    name = "triton"
    device = "cuda"
    float_sum_dtype = torch.float32       # as eager's CUDA sums; float64 would cost converts
    ops = TRITON_OPS
    limits = {"xblock": MAX_XBLOCK, "persistent_rblock": PERSISTENT_RBLOCK,
              "scalar_split": SCALAR_SPLIT}
    source_file = "kernels.py"
    shapes = ("pointwise", "row", "column", "scalar", "scatter")   # kernel shapes it generates
    defers_errors = True                  # the error flag is device memory: read once per call
    devices_text = "CUDA tensors, and CPU tensors under Triton's interpreter (TRITON_INTERPRET=1)"

    def runs_on(self, device_type: str) -> bool:
        return device_type == "cuda" or (device_type == "cpu" and launch.interpreting())

    def unavailable(self) -> str | None:
        return launch.triton_missing()

    def generate(self, kernels: list[Kernel], internal: set[str], params: dict[str, list[Param]],
                 notes: dict[str, str]) -> GeneratedCode:
        return generate(kernels, internal, params, notes, self.limits)

    def load(self, code: GeneratedCode, options: Options) -> dict[str, Callable]:
        return launch.load(code, options)

    def cache_items(self, root: pathlib.Path) -> list[CacheItem]:
        return launch.cache_items(root)

    def launch_arg(self, param: Param) -> str:
        return launch.launch_arg(param)


TARGET = TritonTarget()

__all__ = ["TARGET", "TritonTarget", "TRITON_OPS", "TritonUnsupported", "generate"]
