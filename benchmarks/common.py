"""Helpers shared by the benchmark scripts: backends, interleaved timing, machine info, tables,
and the targets of issue 11 (`targets`: the summary cnn.py, bf16.py and run_all.py print).

The scripts are run as files (`python benchmarks/bench.py`), so this module is
imported as `common` from the benchmarks folder. It never imports
torch._inductor: the default backend is only reached through
torch.compile(backend="inductor").
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

BACKENDS = ("eager", "inductor", "trebuchet")


def make_callable(backend: str, fn: Callable) -> Callable:
    """fn (a function or an nn.Module) as run by one backend: "eager" is fn itself."""
    if backend == "eager":
        return fn
    if backend in ("inductor", "aot_eager"):
        return torch.compile(fn, backend=backend)
    if backend == "trebuchet":
        import trebuchet

        return trebuchet.compile(fn)
    raise ValueError(f"unknown backend {backend!r}")


def time_once(fn: Callable, inputs: list[Any], inner: int) -> float:
    """Seconds per call of fn(*inputs), averaged over `inner` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn(*inputs)
    return (time.perf_counter() - start) / inner


def time_interleaved(callables: dict[str, Callable[..., Any]], inputs: list[Any], repeats: int,
                     warmup: int, batch_below: float = 0.002, max_batch: int = 50
                     ) -> dict[str, list[float]]:
    """Per-call seconds of each callable, `repeats` samples each.

    After `warmup` untimed rounds, every repeat times each callable once, in an
    order rotated by one per repeat so that drift (thermal, other load) hits each
    alike. Calls shorter than `batch_below` seconds are timed in batches of up to
    `max_batch` calls to keep timer noise down.
    """
    live = list(callables)
    for _ in range(warmup):
        for name in live:
            callables[name](*inputs)
    probe = min((time_once(callables[n], inputs, 1) for n in live), default=1.0)
    inner = max(1, min(max_batch, int(batch_below / max(probe, 1e-9))))
    samples: dict[str, list[float]] = {n: [] for n in live}
    for rep in range(repeats):
        k = rep % len(live) if live else 0
        for name in live[k:] + live[:k]:
            samples[name].append(time_once(callables[name], inputs, inner))
    return samples


def median(samples: list[float] | None) -> float | None:
    return statistics.median(samples) if samples else None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    line = (f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info['threads']} torch threads; torch {info['torch']}")
    if "transformers" in info:
        line += f", transformers {info['transformers']}"
    return line + f"; Python {info['python']}; {info['date']}"


# ---------------------------------------------------------------- formatting


STATS_KEYS = ("graphs", "kernels", "compile_seconds", "graph_fallbacks", "fallback_ops", "extern_ops")


def trebuchet_stats() -> dict[str, Any]:
    """The trebuchet.stats() counters the reports show."""
    import trebuchet

    stats = trebuchet.stats()
    return {k: stats[k] for k in STATS_KEYS}


def stats_line(stats: dict[str, Any]) -> str:
    fallback_ops = ", ".join(f"{op} x{n}" for op, n in sorted(stats["fallback_ops"].items())) or "none"
    return (f"trebuchet {stats['graphs']} graph(s), {stats['kernels']} kernels, "
            f"graph_fallbacks {stats['graph_fallbacks']}, fallback_ops: {fallback_ops}")


def ms(t: float | None, digits: int = 3) -> str:
    return "n/a" if t is None else f"{t * 1e3:.{digits}f}"


def ratio(num: float | None, den: float | None) -> str:
    return "n/a" if num is None or den is None or den == 0 else f"{num / den:.2f}x"


def format_text(rows: list[list[str]]) -> str:
    """rows[0] is the header; first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "| --- " + "| ---: " * (len(rows[0]) - 1) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return out


# ---------------------------------------------------------------- targets (issue 11)

SPEEDUP_SHARE = 0.95    # each workload: Trebuchet's speed-up over eager >= this x the default's (noise)
GEOMEAN_TARGET = 1.1    # geomean over the workloads of (Trebuchet's speed-up / the default's)
COMPILE_SHARE = 0.1     # compile time added over aot_eager: Trebuchet's <= this x the default's


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def targets(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """The targets table and its verdict lines for benchmark rows with eager, inductor and
    trebuchet medians (`median_s`) and, where measured, `compile`: `added_s` (backend ->
    compile seconds added over aot_eager) and `added_ratio` (Trebuchet's / the default's)."""
    head = ["workload", "trebuchet vs eager", "inductor vs eager", "trebuchet / inductor speed-up",
            f">= {SPEEDUP_SHARE:g}x inductor's", "not slower than eager", "compile added vs inductor's",
            f"<= {COMPILE_SHARE:g}x"]
    table, shares, fast, not_slower, cheap, added = [head], [], [], [], [], []
    for row in rows:
        t = row["median_s"]
        if not all(t.get(b) for b in ("eager", "inductor", "trebuchet")):
            continue
        ours, theirs = t["eager"] / t["trebuchet"], t["eager"] / t["inductor"]
        shares.append(ours / theirs)
        fast.append(shares[-1] >= SPEEDUP_SHARE)
        not_slower.append(ours >= 1.0)
        compile_row = row.get("compile") or {}
        share = compile_row.get("added_ratio")
        if share is not None:
            cheap.append(share <= COMPILE_SHARE)
            added.append(compile_row["added_s"])
        table.append([row["workload"], f"{ours:.2f}x", f"{theirs:.2f}x", f"{shares[-1]:.2f}x",
                      _verdict(fast[-1]), _verdict(not_slower[-1]),
                      "n/a" if share is None else f"{share:.3f}x",
                      _verdict(None if share is None else cheap[-1])])
    if not shares:
        return [], ["- targets: no workload ran with eager, inductor and trebuchet"]
    n = len(shares)
    geomean = math.exp(sum(math.log(s) for s in shares) / n)
    lines = [f"- geomean of Trebuchet's speed-up / the default backend's over {n} workload(s): "
             f"{geomean:.3f}x (target >= {GEOMEAN_TARGET:g}x): {_verdict(geomean >= GEOMEAN_TARGET)}",
             f"- speed-up at least {SPEEDUP_SHARE:g}x the default backend's: {sum(fast)} of {n}",
             f"- not slower than eager: {sum(not_slower)} of {n}"]
    if cheap:
        ours_s, theirs_s = sum(a["trebuchet"] for a in added), sum(a["inductor"] for a in added)
        lines += [f"- compile time added over aot_eager at most {COMPILE_SHARE:g}x the default backend's: "
                  f"{sum(cheap)} of {len(cheap)} measured",
                  f"- compile time added over aot_eager, summed over those: Trebuchet {ours_s:.1f} s, "
                  f"the default backend {theirs_s:.1f} s ({ours_s / theirs_s:.3f}x)"]
    else:
        lines.append("- compile time added over aot_eager: not measured (--compile-time)")
    met = geomean >= GEOMEAN_TARGET and all(fast) and all(not_slower) and len(cheap) == n and all(cheap)
    lines.append(f"- all targets met: {_verdict(met)}")
    return table, lines


def run_case(fn: Callable, inputs: list[Any], backends: list[str], repeats: int, warmup: int,
             rtol: float, atol: float, passed: str = "ok") -> tuple[list[str], bool]:
    """A micro benchmark case: each backend's median ms, Trebuchet's speed-up over eager
    and over the default backend, and Trebuchet's result checked against eager's (`passed`
    when it is within rtol/atol, "MISMATCH" otherwise, "n/a" without Trebuchet); returns
    those cells and whether it matched."""
    expected = fn(*inputs)
    callables = {b: make_callable(b, fn) for b in backends}
    verdict, good = "n/a", True
    if "trebuchet" in callables:
        verdict = passed
        try:
            torch.testing.assert_close(callables["trebuchet"](*inputs), expected, rtol=rtol, atol=atol)
        except AssertionError:
            verdict, good = "MISMATCH", False
    samples = time_interleaved(callables, inputs, repeats, warmup)
    t = {b: statistics.median(samples[b]) for b in backends}
    ours = t.get("trebuchet")
    return [ms(t[b]) for b in backends] + [ratio(t.get("eager"), ours),
                                           ratio(t.get("inductor"), ours), verdict], good


def case_options(argv: list[str] | None, description: str, cases: dict, repeats: int
                 ) -> tuple[argparse.Namespace, list[str], list[str]]:
    """A micro benchmark's options over its named cases (--cases, --backends, --repeats):
    the parsed options, the backends and the cases to run; prints the threads line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cases", help="comma-separated: " + ",".join(cases))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args(argv)
    names = args.cases.split(",") if args.cases else list(cases)
    print(f"{torch.get_num_threads()} threads, median of {args.repeats}", flush=True)
    return args, args.backends.split(","), names
