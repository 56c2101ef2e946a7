"""The Triton target's launcher: writes the generated module into the cache folder
(`@triton.jit` reads its functions' source from a file), imports it and returns each
kernel's launch function; the wrapper passes tensors, sizes as ints and the error flag
(a one-element int32 tensor per checking kernel, in device memory, that the kernel ORs
its error bits into and the wrapper reads once per graph call).

Two ways a kernel runs:
  * under Triton's interpreter (TRITON_INTERPRET=1, CPU tensors: how CI runs it), with
    `kernel[grid](...)` as generated;
  * compiled, on a GPU: each `@triton.jit` kernel the module launches is replaced in the
    module by a `CompiledLaunch`, which compiles each specialization once with
    `JITFunction.warmup` and then launches the `CompiledKernel` directly
    (`compiled[grid](*args)`, the path Triton's fused-softmax tutorial uses), skipping
    the JIT's per-call argument binding and cache-key computation. Triton's own compile
    cache goes inside ours (`<cache>/triton/compiled/`) while we compile, unless the
    user chose one (TRITON_CACHE_DIR, or `triton.knobs.cache.dir` set in code).

The compiled path is written against Triton 3.6-3.9's documented API. It ran once on an
H200 (2026-11-30, triton 3.6: benchmarks/gpu.py, docs/benchmarks.md), after a fix found
reading Triton's source: `CompiledKernel[grid]` reads three grid dimensions where the JIT
pads a shorter grid, so a 1-D grid is padded here. CI tests its dispatch logic with a
stand-in for the JIT function (tests/test_triton_runtime.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import pathlib
import re
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from ...scheduler.describe import ErrorFlag, Param
from ..target import GeneratedCode
from .ops import TritonUnsupported

if TYPE_CHECKING:
    from ...config import Options
    from ...runtime.cache_files import CacheItem

CACHE_FOLDER = "triton"          # under the cache folder: tb_<sha256 prefix>.py
PREFIX = "tb_"
COMPILED_FOLDER = "compiled"     # under CACHE_FOLDER: Triton's compile cache, when we set it
INSTALL = "pip install trebuchet[triton]"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def triton_missing() -> str | None:
    """Why triton cannot be imported (naming the package and how to install it), or None."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return (f"the Triton target needs the 'triton' package, which cannot be imported "
                f"({e}); install it with: {INSTALL}")
    return None


def module_path(source: str, root: pathlib.Path) -> pathlib.Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    return root / CACHE_FOLDER / f"{PREFIX}{digest}.py"


def write_atomic(path: pathlib.Path, source: str, suffix: str = ".py") -> None:
    """Atomically (a temporary `.tmp-*<suffix>` file renamed into place, the name
    clear-cache knows); an existing equal file is kept."""
    if path.exists() and path.read_text() == source:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    with os.fdopen(fd, "w") as f:
        f.write(source)
    os.replace(tmp, path)


def load(code: GeneratedCode, options: Options) -> dict[str, Callable]:
    """Kernel name -> its launch function, "_module" and "kernel_error"."""
    missing = triton_missing()
    if missing:
        raise TritonUnsupported(missing)
    root = options.cache_path()
    path = module_path(code.source, root)
    try:
        write_atomic(path, code.source)
    except OSError:
        root = pathlib.Path(tempfile.gettempdir()) / "trebuchet"
        path = module_path(code.source, root)
        write_atomic(path, code.source)
    interpret = interpreting()
    # the interpreter's and the compiler's modules differ (what @triton.jit made)
    name = f"trebuchet_triton_{path.stem}{'_interpret' if interpret else ''}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not interpret:
            compile_launches(module, code.functions.values(), root / CACHE_FOLDER / COMPILED_FOLDER)
        sys.modules[name] = module
    wrap = _quiet if interpret else (lambda fn: fn)
    callables: dict[str, Callable] = {k: wrap(getattr(module, fn)) for k, fn in code.functions.items()}
    if getattr(options, "autotune", False):
        if interpret:
            _decline_autotune()
        else:
            from .autotune import AutoTuner, tune_path
            tuner = AutoTuner(tune_path(path))
            callables = {k: tuner.wrap(k, fn) for k, fn in callables.items()}
    callables["_module"] = module
    callables["kernel_error"] = ErrorTensor()
    return callables


_AUTOTUNE_DECLINED = False


def _decline_autotune() -> None:
    """autotune=True under the interpreter: said once per process, then the heuristic."""
    global _AUTOTUNE_DECLINED
    if not _AUTOTUNE_DECLINED:
        _AUTOTUNE_DECLINED = True
        from ...warn import warn_user
        warn_user("trebuchet: autotune=True needs a GPU (it times kernels with CUDA events); "
                  "under Triton's interpreter the launch heuristic is used")


def _quiet(fn: Callable) -> Callable:
    """The interpreter computes masked-off lanes with numpy (0/0 there is harmless): no
    floating-point warnings from it."""
    import numpy

    def call(*args: object) -> None:
        with numpy.errstate(all="ignore"):
            fn(*args)
    call.__name__ = getattr(fn, "__name__", "kernel")
    return call


# ---- the compiled path (a GPU) -----------------------------------------------------------

def compile_launches(module: Any, launch_functions: Any, cache: pathlib.Path) -> None:
    """Replace, in `module`, each jit kernel a launch function starts (named `_<launch
    function>`, kernels.py's convention, or `_<launch function>_<variant>`: a reduction's
    looped, partial and combine kernels) by a `CompiledLaunch`; the launch functions find
    it there when they run."""
    from triton.runtime.jit import JITFunction
    prefixes = {f"_{fn}" for fn in launch_functions}
    for name, jit in list(vars(module).items()):
        if isinstance(jit, JITFunction) and (name in prefixes or any(
                name.startswith(p + "_") for p in prefixes)):
            setattr(module, name, CompiledLaunch(jit, cache))


@contextlib.contextmanager
def compile_cache(folder: pathlib.Path) -> Iterator[None]:
    """Triton's compile cache in `folder` while the block runs, unless the user chose one:
    TRITON_CACHE_DIR set, or `triton.knobs.cache.dir` set in code. Triton reads the
    variable each time it opens a cache entry (3.6-3.9), so it is set for the block only
    and removed after it; it is process-wide meanwhile (a Triton compile in another thread
    at that moment would be cached in our folder too)."""
    knobs = getattr(__import__("triton"), "knobs", None)
    cache_knobs = getattr(knobs, "cache", None)
    if os.environ.get("TRITON_CACHE_DIR") or "dir" in getattr(cache_knobs, "__dict__", {}):
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TRITON_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("TRITON_CACHE_DIR", None)


_I32 = (-2 ** 31, 2 ** 31)


class CompiledLaunch:
    """Stands in its module for one `@triton.jit` kernel on a GPU: `launch[grid](*args,
    **kwargs)` as for the JIT function. Each specialization (the current device, each
    tensor's dtype and 16-byte alignment, each integer's size class and, unless the kernel
    says `do_not_specialize`, whether it is 1 or a multiple of 16, the keyword values) is
    compiled once by `JITFunction.warmup` and launched through its `CompiledKernel`. The
    key is at least as fine as the JIT's own, so a compiled kernel is never launched with
    arguments it was not specialized for. Anything else (an argument of another type)
    goes through the JIT function itself."""

    MAX_RUNNERS = 512       # launchers kept per kernel (one per grid and specialization)

    def __init__(self, jit: Any, cache: pathlib.Path):
        self.jit, self.cache = jit, cache
        params = list(inspect.signature(jit.fn).parameters.values())
        self.names = [p.name for p in params]
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        nospec = set(getattr(jit, "do_not_specialize", ()) or ())
        self.nospec = [p.name in nospec or i in nospec for i, p in enumerate(params)]
        self.compiled: dict[tuple, Any] = {}                            # key -> CompiledKernel
        self.runners: dict[tuple, tuple[Callable, tuple]] = {}          # key with grid

    def __getitem__(self, grid: tuple) -> Callable:
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def key(self, grid: tuple, args: tuple, kwargs: dict) -> tuple | None:
        """What the compiled kernel and its launcher depend on; None: not keyed here."""
        parts: list[Any] = [torch.cuda.current_device(), grid, len(args)]
        for a, nospec in zip(args, self.nospec):
            if isinstance(a, torch.Tensor):
                parts.append((a.dtype, a.data_ptr() % 16 == 0))
            elif isinstance(a, bool) or a is None:
                parts.append(a)
            elif isinstance(a, int):
                small = _I32[0] <= a < _I32[1]
                parts.append((small, a >= 2 ** 63) if nospec else (small, a == 1, a % 16 == 0))
            elif isinstance(a, float):
                parts.append(float)
            else:
                return None
        parts.append(tuple(kwargs.items()))
        return tuple(parts)

    def launch(self, grid: tuple, args: tuple, kwargs: dict) -> None:
        key = self.key(grid, args, kwargs)
        if key is None:
            self.jit[grid](*args, **kwargs)
            return
        entry = self.runners.get(key)
        if entry is None:
            entry = self.runners[key] = self._runner(key, grid, args, kwargs)
        runner, tail = entry
        runner(*args, *tail)

    def _runner(self, key: tuple, grid: tuple, args: tuple, kwargs: dict) -> tuple[Callable, tuple]:
        """The launcher for `grid` of the kernel compiled for `key` (the key without its grid),
        compiled now if it is new; and the values of the parameters after the positional
        arguments (the compiled kernel takes every parameter, constexprs included, in
        order): keywords or defaults, fixed by the key (it holds the keywords)."""
        spec = key[:1] + key[2:]
        kernel = self.compiled.get(spec)
        if kernel is None:
            with compile_cache(self.cache):
                kernel = self.compiled[spec] = self.jit.warmup(*args, grid=grid, **kwargs)
        if len(self.runners) >= self.MAX_RUNNERS:
            self.runners.clear()
        tail = tuple(kwargs[n] if n in kwargs else self.defaults[n] for n in self.names[len(args):])
        # a CompiledKernel's launcher reads grid[0], grid[1] and grid[2] (the JIT pads a
        # shorter grid with 1s; `compiled[grid]` does not): the generated code's grids are
        # 1- or 2-D
        return kernel[tuple(grid) + (1,) * (3 - len(grid))], tail


# ---- the error flag ----------------------------------------------------------------------

class ErrorTensor:
    """The error flags: one int32 per checking kernel of the graph, in the graph's device
    memory, that the kernels `atomic_or` their bits into (bit values as the C prelude's
    TB_*). `bind` (at instantiation) says where and how many; the tensor is made at the
    first call, not then (a compile runs under a fake tensor mode). The wrapper passes
    `slots[i]` to checking kernel i and calls `take_all()` once per graph call: one read
    of device memory (a synchronization), skipped while a CUDA graph is being captured
    (the flags keep their bits; the replaying caller reads them after the replay)."""

    def __init__(self, device: str = "cpu", n: int = 1) -> None:
        self.device, self.n = device, n
        self._flag: torch.Tensor | None = None
        self._slots: list[torch.Tensor] = []

    def bind(self, device: str, n: int) -> None:
        self.device, self.n, self._flag, self._slots = device, max(1, n), None, []

    @property
    def flag(self) -> torch.Tensor:
        if self._flag is None:
            self._flag = torch.zeros(self.n, dtype=torch.int32, device=self.device)
            self._slots = [self._flag[i:i + 1] for i in range(self.n)]
        return self._flag

    @property
    def slots(self) -> list[torch.Tensor]:
        if self._flag is None:
            self.flag
        return self._slots

    def __bool__(self) -> bool:
        return bool(self.flag.any().item())

    def take(self) -> int:
        bits = 0
        for b in self.take_all() or ():
            bits |= b
        return bits

    def take_all(self) -> list[int] | None:
        """Each checking kernel's bits (one read), cleared when any is set; None while a
        CUDA graph is being captured (reading would break the capture)."""
        flag = self.flag
        if flag.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        bits = flag.tolist()
        if any(bits):
            flag.zero_()
        return bits


def launch_arg(param: Param) -> str:
    """The wrapper's argument for `param`: tensors and sizes as they are; the flag is
    passed by the wrapper (`ErrorTensor.slots`, one per checking kernel)."""
    if isinstance(param, ErrorFlag):
        return "kernel_error.flag"
    return param.name


# ---- clear-cache -----------------------------------------------------------------------

_TRITON_KEY = re.compile(r"[A-Z2-7]{52}")          # base32 of a sha256: Triton's entry names


def cache_items(root: pathlib.Path) -> list[CacheItem]:
    """The generated modules under `root` (and unfinished writes), recognised by their
    exact names, and Triton's compile cache entries in our folder `<root>/triton/compiled/`
    (entries Triton wrote elsewhere are not ours), for clear-cache (which removes the
    folders once they are left empty)."""
    from ...runtime.cache_files import CacheItem, children, is_dir, is_file
    folder = root / CACHE_FOLDER
    items = []
    for p in children(folder) if is_dir(folder) else []:
        if is_file(p) and re.fullmatch(PREFIX + r"[0-9a-f]{24}(\.tune\.json|\.py)", p.name):
            items.append(CacheItem("kernels", [p], []))      # a module, or its autotune choices
        elif is_file(p) and re.fullmatch(r"\.tmp-[A-Za-z0-9_]+\.(py|json)", p.name):
            items.append(CacheItem("temp", [p], []))
    compiled = folder / COMPILED_FOLDER
    for entry in children(compiled) if is_dir(compiled) else []:
        if not (is_dir(entry) and _TRITON_KEY.fullmatch(entry.name)):
            continue
        files, dirs = [], []
        for p in children(entry):
            if is_file(p):
                files.append(p)
            elif is_dir(p) and p.name.startswith("tmp.pid_"):     # an interrupted write
                files += [f for f in children(p) if is_file(f)]
                dirs.append(p)
        items.append(CacheItem("kernels", files, [*dirs, entry]))
    return items
