"""The torch.compile backend: TorchDynamo hands us an FX graph; AOTAutograd
(with our decomposition table) splits it into forward and backward ATen
graphs; each goes through the compile pipeline. A graph that fails to compile
runs eagerly with a warning saying why (strict mode raises instead).
"""
from __future__ import annotations

import functools
import traceback
from typing import Any, Callable

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from .. import stats
from ..config import Options
from ..errors import TrebuchetCompileError, TrebuchetWarning
from ..runtime.pipeline import compile_graph
from ..warn import warn_user
from .decompositions import decomposition_table


def _safe_compiler(options: Options, kind: str) -> Callable:
    def compiler(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        try:
            fn = compile_graph(gm, options, kind)
        except Exception as e:  # noqa: BLE001 - any failure falls back, never a wrong answer
            if options.strict:
                if isinstance(e, TrebuchetCompileError):
                    raise
                raise TrebuchetCompileError(f"compiling the {kind} graph failed: "
                                            f"{type(e).__name__}: {e}") from e
            stats.record(graph_fallbacks=1)
            where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            at = f" (at {where.filename.split('/')[-1]}:{where.lineno})" if where else ""
            warn_user(f"trebuchet: compiling the {kind} graph failed, running it eagerly: "
                      f"{type(e).__name__}: {e}{at}", TrebuchetWarning)
            return make_boxed_func(gm)
        fn._boxed_call = True  # type: ignore[attr-defined]
        return fn

    return compiler


def trebuchet_backend(gm: torch.fx.GraphModule, example_inputs: list, **options: Any) -> Callable:
    """The backend registered as "trebuchet" (options as in `trebuchet.compile`;
    `torch.compile(..., options={...}, mode=...)` passes them as `options=` and `mode=`)."""
    opts = Options.from_env(**options)
    backend = aot_autograd(
        fw_compiler=_safe_compiler(opts, "forward"),
        bw_compiler=_safe_compiler(opts, "backward"),
        inference_compiler=_safe_compiler(opts, "inference"),
        decompositions=decomposition_table(),
    )
    return backend(gm, example_inputs)


def make_backend(**options: Any) -> Callable:
    """The backend with `options` bound; they are checked now, not at the first call
    (`mode` is checked, warned about here and then dropped: it changes nothing)."""
    Options.from_env(**options)
    return functools.partial(trebuchet_backend, **{k: v for k, v in options.items() if k != "mode"})


def register() -> None:
    from torch._dynamo.backends.registry import _BACKENDS, register_backend
    if "trebuchet" not in _BACKENDS or _BACKENDS["trebuchet"] is None:
        register_backend(trebuchet_backend, name="trebuchet")
