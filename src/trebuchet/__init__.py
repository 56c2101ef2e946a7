"""Trebuchet: a fusing compiler backend for PyTorch 2.

    import torch, trebuchet
    model = torch.compile(model, backend="trebuchet")
    # or: model = trebuchet.compile(model, target="c", strict=False)
    # time every kernel: trebuchet.compile(model, profile=True); print(trebuchet.profile_report())
"""
from __future__ import annotations

import functools as _functools
from typing import TYPE_CHECKING

import torch as _torch

from . import stats as _stats
from .errors import TrebuchetCompileError, TrebuchetWarning
from .frontend.backend import make_backend as _make_backend
from .frontend.backend import register as _register
from .frontend.backend import trebuchet_backend
from .runtime import profiler as _profiler

if TYPE_CHECKING:
    from typing import Any, Callable

__version__ = "0.1.0"
__all__ = ["compile", "stats", "reset", "profile_report", "profile_reset", "profile_data",
           "trebuchet_backend", "TrebuchetCompileError", "TrebuchetWarning"]

_register()


def __dir__() -> list[str]:
    """The public API only (not the submodules and imports a module also holds)."""
    return sorted([*__all__, "__version__"])


def compile(model_or_fn: Callable, target: str | None = None, strict: bool | None = None,
            dynamic: bool | None = None, **options: Any) -> Callable:
    """`torch.compile` with the Trebuchet backend.

    target: "auto" (C for CPU tensors, Triton for CUDA tensors), "c", "triton" (CUDA
        tensors, or CPU tensors under TRITON_INTERPRET=1; needs `pip install
        trebuchet[triton]`), or "reference" (the IR executed with torch ops); default from
        TREBUCHET_TARGET, else "auto".
    strict: raise TrebuchetCompileError instead of falling back to eager; default from
        TREBUCHET_STRICT, else False.
    Other options (debug, debug_dir, cache_dir, cc, cflags, inline_limit, graph_cache,
    profile, cudagraphs, autotune) are documented in trebuchet.config.Options; they may also come as
    `options={...}`, PyTorch's convention. Types are checked here: booleans must be bool,
    inline_limit an int, paths str or os.PathLike, cflags a list of str or one str split
    as a shell would ("-O1 -g"). `mode` ("default", "reduce-overhead", "max-autotune",
    ...) is accepted and changes nothing (a warning says so); an unknown mode is a ValueError.
    """
    if target is not None:
        options["target"] = target
    if strict is not None:
        options["strict"] = strict
    compiled = _torch.compile(model_or_fn, backend=_make_backend(**options), dynamic=dynamic)
    if isinstance(compiled, _torch.nn.Module):
        compiled.forward = _raise_our_errors(compiled.forward)
        return compiled
    return _raise_our_errors(compiled)


def _raise_our_errors(fn: Callable) -> Callable:
    """TorchDynamo wraps backend errors in BackendCompilerFailed; give strict-mode
    users the TrebuchetCompileError itself."""

    @_functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _torch._dynamo.exc.BackendCompilerFailed as e:
            inner = getattr(e, "inner_exception", None)
            if isinstance(inner, TrebuchetCompileError):
                raise inner from None
            raise

    return call


def stats() -> dict[str, Any]:
    """Counters since the last reset: graphs, kernels, compile_seconds, graph_fallbacks,
    graph_cache_hits (graphs found compiled in the disk cache), lowered_ops / extern_ops /
    fallback_ops (ATen op -> count), kernel_ops (ops per kernel), and by_target (target
    name -> its graphs, kernels, compile_seconds, graph_fallbacks, graph_cache_hits; a graph
    that fails before its target is known, e.g. one mixing devices, counts in the totals only)."""
    return _stats.snapshot()


def reset() -> None:
    """Clear the counters and the in-memory caches (TorchDynamo's included), and forget
    the profiled graphs."""
    _stats.reset()
    _profiler.reset(forget=True)
    _torch._dynamo.reset()


def profile_report() -> str:
    """A table of the time of every kernel and extern call of graphs compiled with
    profile=True (or TREBUCHET_PROFILE=1) since the last reset, sorted by total time,
    with bytes moved and bandwidth as a share of the measured copy bandwidth.
    See docs/profiling.md."""
    return _profiler.report()


def profile_reset() -> None:
    """Zero the profile counters (the compiled graphs keep being profiled)."""
    _profiler.reset()


def profile_data() -> dict[str, list[dict[str, Any]]]:
    """The profile as data: "steps" (graph, name, kind, ops, calls, ns, bytes) and
    "graphs" (graph, calls, ns), for steps and graphs that ran since the last reset."""
    return _profiler.snapshot()
