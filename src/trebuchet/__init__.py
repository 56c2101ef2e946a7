"""Trebuchet: a fusing compiler backend for PyTorch 2.

    import torch, trebuchet
    model = torch.compile(model, backend="trebuchet")
    # or: model = trebuchet.compile(model, target="c", strict=False)
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from . import stats as _stats
from .errors import TrebuchetCompileError, TrebuchetWarning
from .frontend.backend import make_backend, register, trebuchet_backend

__version__ = "0.1.0"
__all__ = ["compile", "stats", "reset", "trebuchet_backend", "TrebuchetCompileError",
           "TrebuchetWarning"]

register()


def compile(model_or_fn: Callable, target: str = "auto", strict: bool = False,
            dynamic: bool | None = None, **options: Any) -> Callable:
    """`torch.compile` with the Trebuchet backend.

    target: "auto" (C on CPU), "c", or "reference" (the IR executed with torch ops).
    strict: raise TrebuchetCompileError instead of falling back to eager.
    Other options (debug, debug_dir, cache_dir, cc, cflags) are in trebuchet.config.Options.
    """
    backend = make_backend(target=target, strict=strict, **options)
    return torch.compile(model_or_fn, backend=backend, dynamic=dynamic)


def stats() -> dict[str, Any]:
    """Counters since the last reset: graphs, kernels, compile_seconds, graph_fallbacks,
    lowered_ops / extern_ops / fallback_ops (ATen op -> count), kernel_ops (ops per kernel)."""
    return _stats.snapshot()


def reset() -> None:
    """Clear the counters and the in-memory caches (TorchDynamo's included)."""
    _stats.reset()
    torch._dynamo.reset()
