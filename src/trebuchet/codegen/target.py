"""What a code generation target is, and the registry that finds one by name.

The pipeline (runtime/pipeline.py), the wrapper, the profiler and the graph cache
talk to a target only through this interface; each target is a module of
`codegen/` (or a package, `codegen/<name>/`) with a module attribute `TARGET`.
Its capabilities are class attributes (data), its op table among them (generating
targets write expressions with codegen/emitter.py over it); its work is a few
methods: generate the kernels' source, load that source as callables (build and
bind: the launcher), write a kernel argument for the wrapper, and, for targets
without generated code, run the IR directly.

Which target a graph gets: `choose(name, device)`; "auto" picks by the device of the
graph's tensors (`AUTO`: CPU -> c, CUDA -> triton). A target states the devices it runs
(`runs_on`) and whether what it needs is installed (`unavailable`); a graph on another
device, or a target that cannot run, fails to compile with a message saying so (the
graph runs eagerly; strict mode raises).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping

import torch

from ..errors import TrebuchetCompileError

if TYPE_CHECKING:
    import pathlib

    from ..config import Options
    from ..runtime.cache_files import CacheItem
    from ..ir.nodes import GraphIR
    from ..scheduler.describe import Param
    from ..scheduler.kernels import Kernel

# name -> module holding `TARGET` (a new target is one line here and its package)
_MODULES = {"c": "trebuchet.codegen.c", "reference": "trebuchet.codegen.reference",
            "triton": "trebuchet.codegen.triton"}
# what target="auto" means, by the device type of the graph's tensors (the Triton target
# runs CPU tensors too, but only under TRITON_INTERPRET=1: a test configuration)
AUTO = {"cpu": "c", "cuda": "triton"}
DEFAULT = AUTO["cpu"]        # "auto" for a graph without tensors, or when no graph is known
NAMES = tuple(_MODULES)


@dataclasses.dataclass
class GeneratedCode:
    """A target's output for one graph, as plain data (stored by runtime/graph_cache.py)."""

    source: str                          # the translation unit / module text
    functions: dict[str, str]            # kernel -> function it calls (identical kernels share one)
    params: dict[str, list[Param]]       # kernel -> its parameters, in call order


class Target:
    """Base of the targets. Subclasses set the attributes and implement the methods."""

    name: ClassVar[str]
    device: ClassVar[str]                       # torch device its kernels run on
    float_sum_dtype: ClassVar[torch.dtype]      # float16/bfloat16/float32 sums accumulate in it
    ops: ClassVar[Mapping[str, Callable]]       # its op table: every primitive of ir/expr.py OPS
    limits: ClassVar[Mapping[str, int]] = {}    # tiling limits of its kernel shapes
    source_file: ClassVar[str] = ""             # the debug folder's file for the source
    executes_ir: ClassVar[bool] = False         # runs the IR itself (no kernels, no wrapper)
    # `load` may run on a background thread while the compile returns (runtime/pipeline.py):
    # it spends its time waiting for a compiler's processes.
    background_build: ClassVar[bool] = False
    # Kernels report data errors into device memory that the wrapper reads once per graph
    # call (see runtime/wrapper.py) instead of after each checking kernel: reading device
    # memory is a synchronization. "kernel_error" (from `load`) then also provides
    # `bind(device, n)` (n checking kernels), `slots` (kernel i's argument) and `take_all()`.
    defers_errors: ClassVar[bool] = False
    devices_text: ClassVar[str] = ""            # where it runs, for messages (default: device)

    def runs_on(self, device_type: str) -> bool:
        """Whether its kernels run on tensors of this device type ("cpu", "cuda", ...)."""
        return device_type == self.device

    def unavailable(self) -> str | None:
        """Why it cannot run in this environment (a missing package, with how to install
        it), or None."""
        return None

    def generate(self, kernels: list[Kernel], internal: set[str], params: dict[str, list[Param]],
                 notes: dict[str, str]) -> GeneratedCode:
        """The source of the scheduled kernels (`internal`: buffers kept in registers)."""
        raise NotImplementedError(self.name)

    def load(self, code: GeneratedCode, options: Options) -> dict[str, Callable]:
        """Build `code` (cached) and return kernel name -> callable taking the arguments
        `launch_arg` writes, plus any objects that must stay alive with them and, when a
        kernel takes an `ErrorFlag`, "kernel_error" (true when set; `take()` returns and
        clears its bits), which the wrapper checks after such a kernel; for a target that
        `defers_errors`, the wrapper instead passes `kernel_error.slots[i]` to checking
        kernel i and calls `take_all()` once per call (see `defers_errors`)."""
        raise NotImplementedError(self.name)

    def options_key(self, options: Options) -> str:
        """The options this target's output depends on, for the whole-graph cache's key."""
        return ""

    def cache_items(self, root: pathlib.Path) -> list[CacheItem]:
        """The files of its build cache under `root`, for `trebuchet clear-cache`."""
        return []

    def launch_arg(self, param: Param) -> str:
        """The wrapper's Python expression passing `param` (a tensor, a size, the flag)."""
        raise NotImplementedError(self.name)

    def run_ir(self, graph: GraphIR) -> Callable:
        """For targets that execute the IR: the boxed callable running `graph`."""
        raise NotImplementedError(self.name)


def get_target(name: str) -> Target:
    """The target called `name` ("auto": the one for CPU tensors)."""
    name = DEFAULT if name == "auto" else name
    if name not in _MODULES:
        raise ValueError(f"unknown target {name!r}: expected one of {', '.join(NAMES)}")
    return importlib.import_module(_MODULES[name]).TARGET


def choose(name: str, device_type: str | None) -> Target:
    """The target for a graph whose tensors are on `device_type` (None: no tensors, as
    CPU): `name`, or for "auto" the device's target (`AUTO`). Raises TrebuchetCompileError
    when that target does not run on the device or cannot run here."""
    device_type = device_type or "cpu"
    if name == "auto":
        if device_type not in AUTO:
            raise TrebuchetCompileError(f"no target generates code for {device_type} tensors "
                                        f"(targets: {', '.join(f'{v} for {k}' for k, v in AUTO.items())})")
        name = AUTO[device_type]
    target = get_target(name)
    if not target.runs_on(device_type):
        hint = f"; target='auto' picks {AUTO[device_type]!r} for them" if device_type in AUTO else ""
        runs = target.devices_text or f"{target.device} tensors"
        raise TrebuchetCompileError(f"the graph's tensors are on {device_type}, and the "
                                    f"{target.name!r} target does not run there (it runs {runs}){hint}")
    reason = target.unavailable()
    if reason:
        raise TrebuchetCompileError(reason)
    return target
