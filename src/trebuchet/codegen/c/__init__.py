"""The C target: C with OpenMP, one translation unit per graph, built by the system C
compiler and called through ctypes.

    ops.py       the op table and C types (expressions go through codegen/emitter.py)
    kernels.py   the kernel shapes: pointwise, strip-mined pointwise, row, column, scalar
    unit.py      the translation unit: prelude.h, the kernels, shared identical kernels
    launch.py    build (runtime/cbuild.py) and bind the kernels; the wrapper's arguments
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ...runtime import cbuild
from ...scheduler.describe import Param
from ..target import GeneratedCode, Target
from . import launch
from .kernels import KernelWriter
from .ops import C_OPS, op_code
from .unit import PRELUDE, generate

if TYPE_CHECKING:
    import pathlib

    from ...config import Options
    from ...runtime.cache_files import CacheItem
    from ...scheduler.kernels import Kernel


class CTarget(Target):
    name = "c"
    device = "cpu"
    float_sum_dtype = torch.float64       # float sums accumulate in double: cheap on a CPU
    ops = C_OPS
    limits = {"column_width": KernelWriter.COLUMN_WIDTH, "column_items": KernelWriter.COLUMN_ITEMS,
              "column_chunk_rows": KernelWriter.COLUMN_CHUNK_ROWS,
              "row_cache_elements": KernelWriter.ROW_CACHE_LIMIT,
              "stage_block": KernelWriter.STAGE_BLOCK}
    source_file = "kernels.c"
    background_build = True                  # cbuild runs the C compiler's processes

    def generate(self, kernels: list[Kernel], internal: set[str], params: dict[str, list[Param]],
                 notes: dict[str, str]) -> GeneratedCode:
        return generate(kernels, internal, params, notes)

    def load(self, code: GeneratedCode, options: Options) -> dict[str, Callable]:
        return launch.load(code, options)

    def options_key(self, options: Options) -> str:
        return f"{options.compiler()}|{options.cflags}"

    def cache_items(self, root: pathlib.Path) -> list[CacheItem]:
        return cbuild.cache_items(root)

    def launch_arg(self, param: Param) -> str:
        return launch.launch_arg(param)


TARGET = CTarget()

__all__ = ["TARGET", "CTarget", "PRELUDE", "generate", "op_code", "C_OPS", "KernelWriter"]
