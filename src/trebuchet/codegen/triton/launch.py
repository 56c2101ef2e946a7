"""The Triton target's launcher: writes the generated module into the cache folder
(`@triton.jit` reads its functions' source from a file), imports it and returns each
kernel's launch function; the wrapper passes tensors, sizes as ints and the error flag
(a one-element int32 tensor the kernels OR their error bits into).

In this slice the kernels run on CPU tensors under Triton's interpreter
(TRITON_INTERPRET=1); without it, loading fails with a clear error and the graph runs
eagerly (CUDA tensors are not lowered yet).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import re
import sys
import tempfile
from typing import TYPE_CHECKING, Callable

import torch

from ...scheduler.describe import ErrorFlag, Param
from ..target import GeneratedCode
from .ops import TritonUnsupported

if TYPE_CHECKING:
    from ...config import Options
    from ...runtime.cache_files import CacheItem

CACHE_FOLDER = "triton"          # under the cache folder: tb_<sha256 prefix>.py
PREFIX = "tb_"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def module_path(source: str, root: pathlib.Path) -> pathlib.Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    return root / CACHE_FOLDER / f"{PREFIX}{digest}.py"


def _write(path: pathlib.Path, source: str) -> None:
    """Atomically (a temporary file renamed into place); an existing equal file is kept."""
    if path.exists() and path.read_text() == source:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(source)
    os.replace(tmp, path)


def load(code: GeneratedCode, options: Options) -> dict[str, Callable]:
    """Kernel name -> its launch function, "_module" and "kernel_error"."""
    if not interpreting():
        raise TritonUnsupported("the Triton target runs CPU tensors under TRITON_INTERPRET=1 "
                                "only in this version (CUDA tensors are not lowered yet)")
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise TritonUnsupported(f"the Triton target needs triton installed: {e}") from None
    path = module_path(code.source, options.cache_path())
    try:
        _write(path, code.source)
    except OSError:
        path = module_path(code.source, pathlib.Path(tempfile.gettempdir()) / "trebuchet")
        _write(path, code.source)
    name = f"trebuchet_triton_{path.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    callables: dict[str, Callable] = {k: _quiet(getattr(module, fn))
                                      for k, fn in code.functions.items()}
    callables["_module"] = module
    callables["kernel_error"] = ErrorTensor()
    return callables


def _quiet(fn: Callable) -> Callable:
    """The interpreter computes masked-off lanes with numpy (0/0 there is harmless): no
    floating-point warnings from it."""
    import numpy

    def call(*args: object) -> None:
        with numpy.errstate(all="ignore"):
            fn(*args)
    call.__name__ = getattr(fn, "__name__", "kernel")
    return call


class ErrorTensor:
    """The error flag: a one-element int32 tensor the kernels `atomic_or` their bits into
    (bit values as the C prelude's TB_*); true when set. Made at the first call, not at
    load time (a compile runs under a fake tensor mode)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._flag: torch.Tensor | None = None

    @property
    def flag(self) -> torch.Tensor:
        if self._flag is None:
            self._flag = torch.zeros(1, dtype=torch.int32, device=self.device)
        return self._flag

    def __bool__(self) -> bool:
        return bool(self.flag.item())

    def take(self) -> int:
        bits = int(self.flag.item())
        self.flag.zero_()
        return bits


def launch_arg(param: Param) -> str:
    """The wrapper's argument for `param`: tensors and sizes as they are, the flag's tensor."""
    if isinstance(param, ErrorFlag):
        return "kernel_error.flag"
    return param.name


def cache_items(root: pathlib.Path) -> list[CacheItem]:
    """The generated modules under `root` (and unfinished writes), recognised by their
    exact names, for clear-cache (which removes the folder once it is left empty)."""
    from ...runtime.cache_files import CacheItem, children, is_file
    folder = root / CACHE_FOLDER
    items = []
    for p in children(folder) if folder.is_dir() and not folder.is_symlink() else []:
        if is_file(p) and re.fullmatch(PREFIX + r"[0-9a-f]{24}\.py", p.name):
            items.append(CacheItem("kernels", [p], []))
        elif is_file(p) and re.fullmatch(r"\.tmp-[A-Za-z0-9_]+\.py", p.name):
            items.append(CacheItem("temp", [p], []))
    return items
