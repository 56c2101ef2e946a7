"""Timing several ways of running the same work, as the benchmarks do: interleaved
rounds (each way once per round, the order rotated every round, so load that comes
and goes hits each alike), the median and quartiles, and a warning when the spread
says the machine is too busy for a stable figure. Used by `trebuchet report` and the
demo."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

# quartile spread (q3 - q1) / median above which a figure is called unstable
BUSY_SPREAD = 0.2


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Each function once per round, the order rotated every round; ns per call."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter_ns()
            fns[n]()
            times[n].append(time.perf_counter_ns() - start)
    return times


def summary(ns: list[float]) -> dict[str, float]:
    """Median, quartiles and minimum in ms, and the number of rounds."""
    q = statistics.quantiles(ns, n=4) if len(ns) >= 2 else [ns[0]] * 3
    return {"median_ms": statistics.median(ns) / 1e6, "q1_ms": q[0] / 1e6, "q3_ms": q[2] / 1e6,
            "min_ms": min(ns) / 1e6, "rounds": len(ns)}


def spread(s: dict[str, float]) -> float:
    return (s["q3_ms"] - s["q1_ms"]) / s["median_ms"] if s["median_ms"] else 0.0


def busy_note(*summaries: dict[str, float]) -> str | None:
    """A warning when a quartile spread is too wide for the median to mean much."""
    worst = max(spread(s) for s in summaries)
    if worst <= BUSY_SPREAD:
        return None
    return (f"note: the quartiles spread {100 * worst:.0f} % around the median: the machine is "
            "busy, so this figure is not stable; rerun on a quiet machine (or with more rounds)")
