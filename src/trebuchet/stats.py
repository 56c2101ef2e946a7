"""Process-wide counters behind `trebuchet.stats()`: totals, and the same numeric
counters per target ("by_target": target name -> graphs, kernels, compile_seconds,
graph_fallbacks, graph_cache_hits)."""
from __future__ import annotations

import collections
import threading
from typing import Any

_lock = threading.Lock()
_state: dict[str, Any] = {}
PER_TARGET = ("graphs", "kernels", "compile_seconds", "graph_fallbacks", "graph_cache_hits")


def reset() -> None:
    with _lock:
        _state.clear()
        _state.update(graphs=0, kernels=0, compile_seconds=0.0, graph_fallbacks=0, graph_cache_hits=0,
                      lowered_ops=collections.Counter(), extern_ops=collections.Counter(),
                      fallback_ops=collections.Counter(), kernel_ops=[], by_target={})


reset()


def record(target: str | None = None, **values: Any) -> None:
    """Add to the totals and, with `target`, to that target's counters."""
    with _lock:
        for key, value in values.items():
            if isinstance(_state[key], collections.Counter):
                _state[key].update(value)
            elif isinstance(_state[key], list):
                _state[key].extend(value)
            else:
                _state[key] += value
        if target is not None:
            _add_target(target, values)


def record_target(target: str, **values: Any) -> None:
    """Add to one target's counters only (the totals count it elsewhere)."""
    with _lock:
        _add_target(target, values)


def _add_target(target: str, values: dict[str, Any]) -> None:
    counters = _state["by_target"].setdefault(target, {k: 0 for k in PER_TARGET})
    counters["compile_seconds"] = float(counters["compile_seconds"])
    for key, value in values.items():
        if key in PER_TARGET:
            counters[key] += value


def snapshot() -> dict[str, Any]:
    with _lock:
        out = {k: (dict(v) if isinstance(v, collections.Counter) else
                   list(v) if isinstance(v, list) else v) for k, v in _state.items()}
        out["by_target"] = {t: dict(c) for t, c in _state["by_target"].items()}
        return out
