"""The torch.compile backend: TorchDynamo hands us an FX graph; AOTAutograd
(with our decomposition table) splits it into forward and backward ATen
graphs; each goes through the compile pipeline. A graph that fails to compile
runs eagerly with a warning saying why (strict mode raises instead). Between the
two graphs of a training step: the layouts the forward compile chose for the saved
activations (see "Saved activations in another layout" below).
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
from ..lowering.storage import graph_returns, same_layout
from ..runtime import onednn
from ..runtime.pipeline import Building, compile_graph
from ..warn import warn_user
from .decompositions import decomposition_table


def _safe_compiler(options: Options, kind: str) -> Callable:
    def compiler(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        traced = _restride_inputs(gm, example_inputs) if kind == "backward" else {}

        def fallback(e: Exception) -> Callable:
            """The graph run eagerly after a failed compile (in strict mode: the error)."""
            if options.strict:
                if isinstance(e, TrebuchetCompileError):
                    raise e
                raise TrebuchetCompileError(f"compiling the {kind} graph failed: "
                                            f"{type(e).__name__}: {e}") from e
            stats.record(graph_fallbacks=1)
            where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            at = f" (at {where.filename.split('/')[-1]}:{where.lineno})" if where else ""
            warn_user(f"trebuchet: compiling the {kind} graph failed, running it eagerly: "
                      f"{type(e).__name__}: {e}{at}", TrebuchetWarning)
            return _eager_with_traced_inputs(gm, traced)

        try:
            fn = compile_graph(gm, options, kind, _saved_activations(gm, example_inputs, kind))
            _report_output_strides(getattr(fn, "output_strides", None))
        except Exception as e:  # noqa: BLE001 - any failure falls back, never a wrong answer
            return fallback(e)
        if isinstance(fn, Building):
            fn = _built_or_eager(fn, fallback)
        fn._boxed_call = True  # type: ignore[attr-defined]
        return _backward_inputs_checked(fn, gm) if kind == "backward" else fn

    return compiler


def _built_or_eager(building: Building, fallback: Callable[[Exception], Callable]) -> Callable:
    """A graph whose kernels build in the background (runtime/pipeline.py): its first call
    waits for the build, and a failed build falls back as a failed compile does."""
    fn: Callable | None = None

    def run(args: list) -> Any:
        nonlocal fn
        if fn is None:
            try:
                fn = building.wait()
            except Exception as e:  # noqa: BLE001 - as in the compiler: fall back
                fn = fallback(e)
        return fn(args)

    return run


# Saved activations in another layout
#
# Our forward graph may return the activations it saves for the backward graph in the
# layout plan's channels-last layout (lowering/layout.py). The forward compiler reports
# each output's strides to AOTAutograd (`TracingContext.output_strides`, as the protocol
# AOTAutograd defines for compilers that choose layouts); AOTAutograd then hands the
# backward compiler fake inputs with those strides, whose graph nodes still carry the
# traced ones. Only the saved tensors change: the outputs a user sees keep eager's layout.

def _saved_activations(gm: torch.fx.GraphModule, example_inputs: list, kind: str) -> range:
    """The forward graph's output positions holding tensors saved for backward, whose
    layout is the compiler's to choose (none with symbolic sizes: AOTAutograd takes
    integer strides)."""
    tc = torch._guards.TracingContext.try_get()
    meta = getattr(tc, "fw_metadata", None)
    if kind != "forward" or meta is None:
        return range(0)
    if any(isinstance(d, torch.SymInt) for t in example_inputs if isinstance(t, torch.Tensor)
           for d in (*t.shape, *t.stride())):
        return range(0)
    try:
        saved = meta.tensors_saved_for_backwards_slice
    except Exception:       # noqa: BLE001 - metadata of another torch version: choose nothing
        return range(0)
    return range(*saved.indices(len(graph_returns(gm))))


def _report_output_strides(strides: list | None) -> None:
    """Tell AOTAutograd the strides of the outputs whose layout we chose."""
    tc = torch._guards.TracingContext.try_get()
    if strides and any(s is not None for s in strides) and tc is not None \
            and isinstance(tc.output_strides, list):
        tc.output_strides.extend(strides)


def _restride_inputs(gm: torch.fx.GraphModule, example_inputs: list) -> dict:
    """Give a backward graph's placeholders the strides AOTAutograd passes (those the
    forward compiler reported for saved activations); returns the traced values replaced."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    traced = {}
    if len(placeholders) != len(example_inputs):
        return traced
    for k, (node, example) in enumerate(zip(placeholders, example_inputs)):
        val = node.meta.get("val")
        if (isinstance(val, torch.Tensor) and isinstance(example, torch.Tensor)
                and val.shape == example.shape and val.stride() != example.stride()):
            traced[k] = val
            node.meta["val"] = example
    return traced


def _backward_inputs_checked(fn: Callable, gm: torch.fx.GraphModule) -> Callable:
    """A compiled backward graph that checks its inputs' strides against those it was
    compiled for (a torch that did not restride the fake inputs for the strides the
    forward compile reported would hand it saved activations in another layout)."""
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    expected = {k: v for k, v in enumerate(vals) if isinstance(v, torch.Tensor)}
    if any(not all(isinstance(d, int) for d in (*e.shape, *e.stride())) for e in expected.values()):
        return fn       # symbolic sizes: the forward compile chose no layouts (_saved_activations)
    return _inputs_in_layouts(fn, expected, warn=True)


def _eager_with_traced_inputs(gm: torch.fx.GraphModule, traced: dict) -> Callable:
    """The graph run eagerly (a compile failure's fallback), its restrided inputs first
    copied to the layout it was traced with (its view ops may need it)."""
    fn = make_boxed_func(gm)
    return _inputs_in_layouts(fn, traced, warn=False) if traced else fn


def _inputs_in_layouts(fn: Callable, expected: dict[int, torch.Tensor], warn: bool) -> Callable:
    """`fn` (boxed) given its inputs at the positions of `expected` in the layouts there. Which
    differ is found on the first call (a forward graph returns the same layouts each call);
    those are copied from then on, and with `warn` a warning says so once."""
    fix: list[int] | None = None

    def run(args: list) -> Any:
        nonlocal fix
        if fix is None:
            fix = [k for k, e in expected.items() if k < len(args) and isinstance(args[k], torch.Tensor)
                   and args[k].dim() == e.dim() and args[k].numel() > 1
                   and not same_layout(tuple(args[k].shape), args[k].stride(), e.stride())]
            if fix and warn:
                warn_user(f"trebuchet: the backward graph was given {len(fix)} input(s) in another "
                          "layout than it was compiled for; copying them", TrebuchetWarning)
        for k in fix:
            e = expected[k]
            args[k] = torch.empty_strided(e.shape, e.stride(), dtype=args[k].dtype,
                                          device=args[k].device).copy_(args[k])
        return fn(args)

    run._boxed_call = True  # type: ignore[attr-defined]
    return run


def trebuchet_backend(gm: torch.fx.GraphModule, example_inputs: list, **options: Any) -> Callable:
    """The backend registered as "trebuchet" (options as in `trebuchet.compile`;
    `torch.compile(..., options={...}, mode=...)` passes them as `options=` and `mode=`)."""
    opts = Options.from_env(**options)
    devices = {t.device.type for t in example_inputs if isinstance(t, torch.Tensor)}
    backend = aot_autograd(
        fw_compiler=_safe_compiler(opts, "forward"),
        bw_compiler=_safe_compiler(opts, "backward"),
        inference_compiler=_safe_compiler(opts, "inference"),
        decompositions=decomposition_table(
            bias_in_product=onednn.applies("cpu" if devices <= {"cpu"} else min(devices),
                                            opts.matmul)),
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
