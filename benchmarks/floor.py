"""How far Trebuchet could get past the default backend if its own work cost nothing.

    python benchmarks/floor.py                                  # the 14 workloads of issue 11
    python benchmarks/floor.py --workloads resnet18_infer_contiguous bf16_train --rounds 4

For each workload of benchmarks/cnn.py and benchmarks/bf16.py, in one process: the step
time of the default backend and of Trebuchet, and Trebuchet's own time within the step
from its profiler (`profile=True`): its kernels and its wrapper (the compiled graphs'
time outside kernels and library calls). What is left, the floor, is what Trebuchet
cannot remove by better kernels: library calls (convolutions, matmuls, attention:
the same ATen calls for both backends), autograd, the optimizer step and the loss
outside the graphs. `bound` = the default backend's time / the floor: the speed-up over
the default backend with kernels and wrapper free. The geomean of the bounds caps the
geomean issue 11 asks for (1.1x) at this machine's library speed.

Rounds alternate the two backends; medians of `--rounds` rounds of `--inner` steps. The
profiled Trebuchet runs a little slower than unprofiled (a clock read around each step).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

import torch

import bf16
import cnn
import common
from common import machine_info, machine_line


def _profiled(backend: str, fn: Any) -> Any:
    if backend == "trebuchet":
        import trebuchet
        return trebuchet.compile(fn, profile=True)
    return common.make_callable(backend, fn)


def workloads(names: list[str]) -> list[cnn.Workload]:
    args = argparse.Namespace(models=list(cnn.MODELS), modes=["infer", "train"],
                              layouts=["contiguous", "channels_last"], batch=8, train_batch=4,
                              size=224, workloads=bf16.WORKLOADS)
    everything = cnn.cnn_workloads(args) + bf16.bf16_workloads(args)
    return [w for w in everything if not names or w.name in names]


def measure(w: cnn.Workload, rounds: int, inner: int) -> dict[str, float]:
    import trebuchet

    cnn.make_callable = _profiled          # the workloads' setup compiles through it
    torch._dynamo.reset()
    trebuchet.reset()
    steps = {}
    for backend in ("inductor", "trebuchet"):
        step, inputs = w.setup(backend)
        for _ in range(3):
            step(*inputs)
        steps[backend] = step
    times: dict[str, list[float]] = {b: [] for b in steps}
    own: list[float] = []
    wrapper: list[float] = []
    for _ in range(rounds):
        for backend, step in steps.items():
            trebuchet.profile_reset()
            start = time.perf_counter()
            for _ in range(inner):
                step(*inputs)
            times[backend].append((time.perf_counter() - start) / inner)
            if backend == "trebuchet":
                data = trebuchet.profile_data()
                kernels = sum(s["ns"] for s in data["steps"] if s["kind"] != "extern") / 1e9 / inner
                externs = sum(s["ns"] for s in data["steps"] if s["kind"] == "extern") / 1e9 / inner
                graphs = sum(g["ns"] for g in data["graphs"]) / 1e9 / inner
                own.append(kernels)
                wrapper.append(graphs - kernels - externs)
    inductor, ours = statistics.median(times["inductor"]), statistics.median(times["trebuchet"])
    floor = ours - statistics.median(own) - statistics.median(wrapper)
    return {"inductor": inductor, "trebuchet": ours, "kernels": statistics.median(own),
            "wrapper": statistics.median(wrapper), "floor": floor}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=[])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--inner", type=int, default=3)
    args = p.parse_args(argv)
    print(machine_line(machine_info()))
    print("command: python " + " ".join(sys.argv))
    print(f"{'workload':40s} {'inductor ms':>11s} {'trebuchet ms':>12s} {'ratio':>6s} {'kernels ms':>10s} "
          f"{'wrapper ms':>10s} {'floor ms':>8s} {'bound':>6s}")
    rows = []
    for w in workloads(args.workloads):
        r = measure(w, args.rounds, args.inner)
        rows.append(r)
        print(f"{w.name:40s} {r['inductor'] * 1e3:11.1f} {r['trebuchet'] * 1e3:12.1f} "
              f"{r['inductor'] / r['trebuchet']:5.2f}x {r['kernels'] * 1e3:10.1f} {r['wrapper'] * 1e3:10.1f} "
              f"{r['floor'] * 1e3:8.1f} {r['inductor'] / r['floor']:5.2f}x", flush=True)
    if rows:
        def geomean(values: list[float]) -> float:
            return math.exp(statistics.mean(math.log(v) for v in values))
        print(f"geomean of Trebuchet's speed-up over the default backend: "
              f"{geomean([r['inductor'] / r['trebuchet'] for r in rows]):.3f}x; with kernels and wrapper "
              f"free (bound): {geomean([r['inductor'] / r['floor'] for r in rows]):.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
