"""The C target's launcher: builds a translation unit into a shared library (cached on
disk by runtime/cbuild.py) and binds each kernel's function with ctypes; the wrapper
passes tensors as data pointers, sizes as int64 and the error flag's address.
"""
from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Callable

from ...runtime import cbuild
from ...scheduler.describe import ErrorFlag, Param, Pointer, SizeSymbol
from ..target import GeneratedCode

if TYPE_CHECKING:
    from ...config import Options


def load(code: GeneratedCode, options: Options) -> dict[str, Callable]:
    """Kernel name -> its ctypes function, "_lib" (keeps the library loaded) and
    "kernel_error" (the error flag the wrapper passes and checks)."""
    lib = cbuild.load(cbuild.build(code.source, options.compiler(), options.cflags,
                                   options.cache_path()))
    callables: dict[str, Callable] = {}
    for name, params in code.params.items():
        f = getattr(lib, code.functions[name])
        f.argtypes = [ctypes.c_int64 if isinstance(p, SizeSymbol) else ctypes.c_void_p
                      for p in params]
        f.restype = None
        callables[name] = f
    callables["_lib"] = lib
    callables["kernel_error"] = ErrorBits()
    return callables


class ErrorBits:
    """The flag C kernels OR their error bits into (prelude.h: TB_*): a C int whose
    address the wrapper passes; true when set."""

    def __init__(self) -> None:
        self.bits = ctypes.c_int(0)
        self.address = ctypes.addressof(self.bits)

    def __bool__(self) -> bool:
        return self.bits.value != 0

    def take(self) -> int:
        bits, self.bits.value = self.bits.value, 0
        return bits


def launch_arg(param: Param) -> str:
    """The wrapper's argument for `param`."""
    if isinstance(param, Pointer):
        return f"{param.name}.data_ptr()"
    if isinstance(param, ErrorFlag):
        return "kernel_error.address"
    return param.name
