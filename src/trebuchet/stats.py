"""Process-wide counters behind `trebuchet.stats()`."""
from __future__ import annotations

import collections
import threading
from typing import Any

_lock = threading.Lock()
_state: dict[str, Any] = {}


def reset() -> None:
    with _lock:
        _state.clear()
        _state.update(graphs=0, kernels=0, compile_seconds=0.0, graph_fallbacks=0, graph_cache_hits=0,
                      lowered_ops=collections.Counter(), extern_ops=collections.Counter(),
                      fallback_ops=collections.Counter(), kernel_ops=[])


reset()


def record(**values: Any) -> None:
    with _lock:
        for key, value in values.items():
            if isinstance(_state[key], collections.Counter):
                _state[key].update(value)
            elif isinstance(_state[key], list):
                _state[key].extend(value)
            else:
                _state[key] += value


def snapshot() -> dict[str, Any]:
    with _lock:
        return {k: (dict(v) if isinstance(v, collections.Counter) else
                    list(v) if isinstance(v, list) else v) for k, v in _state.items()}
