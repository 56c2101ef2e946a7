"""The machine's two roofs, measured in the same run as the report: copy bandwidth
(runtime/profiler.py's, the one `profile_report()` uses) and float32 matrix-product
FLOP/s (torch.mm, the library the compiled graphs call)."""
from __future__ import annotations

import time

import torch

from ..runtime import profiler

MM_SIZE = 1024
MM_RUNS = 5


def peak_flops() -> float:
    """FLOP/s of a float32 [N, N] @ [N, N] product, median of a few runs (threads as set)."""
    a = torch.randn(MM_SIZE, MM_SIZE)
    b = torch.randn(MM_SIZE, MM_SIZE)
    out = torch.empty(MM_SIZE, MM_SIZE)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(MM_RUNS):
        start = time.perf_counter_ns()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter_ns() - start)
    return 2 * MM_SIZE ** 3 / min(times) * 1e9     # a roof: the best run, not the typical


def measure() -> dict[str, float]:
    """{"copy_gbps", "peak_gflops", "threads"}"""
    return {"copy_gbps": profiler.copy_bandwidth(), "peak_gflops": peak_flops() / 1e9,
            "threads": torch.get_num_threads()}
