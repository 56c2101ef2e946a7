"""Memory-bound kernel benchmarks: eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/bench.py                       # every case
    python benchmarks/bench.py --quick --cases rms_norm,swiglu
    python benchmarks/bench.py --json out.json --markdown out.md
    python benchmarks/bench.py --compile-time        # also cold compile time per case

All backends run in the same process, interleaved in a rotating order so that
drift (thermal, other load) hits each alike; each reported time is the median
of N repeats after warm-up. For each case the table gives the times, the
speedup of Trebuchet over eager, the ratio to the default backend (its time /
ours: > 1 means Trebuchet is faster), the effective bandwidth (the minimal
unique bytes read and written / time) and that bandwidth as a fraction of the
measured copy bandwidth (a large tensor clone), the physical limit here.

The default backend is used only through torch.compile(backend="inductor").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from common import (BACKENDS, format_text, make_callable, markdown_table, ms, ratio, time_interleaved,
                    time_once)


@dataclasses.dataclass
class Case:
    name: str
    description: str
    fn: Callable[..., torch.Tensor]
    make_inputs: Callable[[], list[torch.Tensor]]


def min_bytes(inputs: list[torch.Tensor], out: torch.Tensor) -> int:
    """Bytes a perfect kernel moves: each input read once, the output written once."""
    return sum(t.numel() * t.element_size() for t in inputs) + out.numel() * out.element_size()


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def add_layernorm_gelu(x, r, w, b):
    return F.gelu(F.layer_norm(x + r, (x.shape[-1],), w, b))


def scaled_softmax(x):
    return torch.softmax(x * 0.125, dim=-1)


def bias_gelu(x, b):
    return F.gelu(x + b)


def rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def swiglu(a, b):
    return F.silu(a) * b


def pointwise_chain(x):
    y = x * 1.5 + 0.5
    y = torch.sin(y) * y
    y = torch.tanh(y) - 0.25
    y = torch.relu(y) + x
    y = torch.sigmoid(y) * 2.0
    return y


def column_sum(x):
    return x.sum(dim=0)


ROWS, COLS = 8192, 1024
CASES = [
    Case("add_layernorm_gelu", f"gelu(layer_norm(x + r)) {ROWS}x{COLS}", add_layernorm_gelu,
         lambda: [_randn(ROWS, COLS), _randn(ROWS, COLS), _randn(COLS), _randn(COLS)]),
    Case("softmax", f"softmax(x * 0.125, -1) {ROWS}x{COLS}", scaled_softmax,
         lambda: [_randn(ROWS, COLS)]),
    Case("softmax_attn", "softmax(x * 0.125, -1) 8x12x128x128", scaled_softmax,
         lambda: [_randn(8, 12, 128, 128)]),
    Case("bias_gelu", f"gelu(x + b) {ROWS}x{COLS}", bias_gelu,
         lambda: [_randn(ROWS, COLS), _randn(COLS)]),
    Case("rms_norm", f"x * rsqrt(mean(x^2) + eps) * w {ROWS}x{COLS}", rms_norm,
         lambda: [_randn(ROWS, COLS), _randn(COLS)]),
    Case("swiglu", f"silu(a) * b {ROWS}x{COLS}", swiglu,
         lambda: [_randn(ROWS, COLS), _randn(ROWS, COLS)]),
    Case("pointwise_chain", f"10 pointwise ops {ROWS}x{COLS}", pointwise_chain,
         lambda: [_randn(ROWS, COLS)]),
    Case("column_sum", f"x.sum(dim=0) {ROWS}x{COLS}", column_sum,
         lambda: [_randn(ROWS, COLS)]),
]
BY_NAME = {case.name: case for case in CASES}


def copy_bandwidth(repeats: int) -> float:
    """Bytes/s of copying a large tensor into a preallocated one (read + write), median.

    The destination is allocated once so that page faults of fresh memory are not timed.
    """
    x = torch.randn(64 * 1024 * 1024)  # 256 MiB, far larger than any cache
    out = torch.empty_like(x)
    out.copy_(x)
    times = [time_once(out.copy_, [x], 1) for _ in range(repeats)]
    return 2 * x.numel() * x.element_size() / statistics.median(times)


@dataclasses.dataclass
class Result:
    case: str
    description: str
    times: dict[str, float | None]  # seconds; None: the backend failed
    first_call: dict[str, float | None]  # seconds of the first call (compile + run)
    errors: dict[str, str]
    correct: bool | None  # trebuchet's output matches eager's
    min_bytes: int


def run_case(case: Case, backends: list[str], repeats: int, warmup: int) -> Result:
    torch.manual_seed(0)
    inputs = case.make_inputs()
    expected = case.fn(*inputs)
    callables, first_call, errors, outputs = {}, {}, {}, {}
    for backend in backends:
        try:
            fn = make_callable(backend, case.fn)
            start = time.perf_counter()
            outputs[backend] = fn(*inputs)
            first_call[backend] = time.perf_counter() - start
            callables[backend] = fn
        except Exception as exc:  # a failing backend is reported, not fatal
            first_call[backend] = None
            errors[backend] = f"{type(exc).__name__}: {exc}"[:300]
    correct = None
    if "trebuchet" in outputs:
        try:
            torch.testing.assert_close(outputs["trebuchet"], expected, rtol=1e-4, atol=1e-4)
            correct = True
        except AssertionError:
            correct = False

    samples = time_interleaved(callables, inputs, repeats, warmup)
    times = {b: (statistics.median(samples[b]) if b in samples else None) for b in backends}
    return Result(case.name, case.description, times, first_call, errors, correct,
                  min_bytes(inputs, expected))


def cold_compile_seconds(case: str, backend: str) -> float | None:
    """First-call time in a fresh process with empty compile caches."""
    with tempfile.TemporaryDirectory(prefix="trebuchet-bench-") as tmp:
        env = dict(os.environ, TREBUCHET_CACHE_DIR=os.path.join(tmp, "trebuchet"),
                   TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "inductor"))
        cmd = [sys.executable, __file__, "--first-call", case, "--backends", backend]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return None
        return float(proc.stdout.strip().splitlines()[-1])


def _first_call_main(case_name: str, backend: str) -> None:
    case = BY_NAME[case_name]
    inputs = case.make_inputs()
    fn = make_callable(backend, case.fn)
    start = time.perf_counter()
    fn(*inputs)
    print(time.perf_counter() - start)


# ---------------------------------------------------------------- reporting


def table_rows(results: list[Result], backends: list[str], copy_bw: float) -> list[list[str]]:
    header = ["case"] + [f"{b} ms" for b in backends]
    header += ["vs eager", "vs inductor", "GB/s", "of copy BW", "correct"]
    rows = [header]
    for r in results:
        ours = r.times.get("trebuchet")
        bw = None if ours is None else r.min_bytes / ours
        rows.append(
            [r.case]
            + [ms(r.times.get(b)) for b in backends]
            + [
                ratio(r.times.get("eager"), ours),
                ratio(r.times.get("inductor"), ours),
                "n/a" if bw is None else f"{bw / 1e9:.1f}",
                "n/a" if bw is None else f"{bw / copy_bw:.0%}",
                {True: "ok", False: "MISMATCH", None: "n/a"}[r.correct],
            ]
        )
    return rows


def format_markdown(rows: list[list[str]], meta: dict, cold: dict) -> str:
    out = [f"# Trebuchet benchmarks ({meta['date']})", "",
           f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads; "
           f"copy bandwidth {meta['copy_bandwidth_gbs']:.1f} GB/s. Command: `{meta['command']}`.",
           "Times are medians; `vs eager` and `vs inductor` are their time / Trebuchet's.", ""]
    out += markdown_table(rows)
    if cold:
        names = sorted({b for per_case in cold.values() for b in per_case})
        out += ["", "Cold compile, first call in a fresh process with empty caches (s):", "",
                "| case | " + " | ".join(names) + " |", "| --- " + "| ---: " * len(names) + "|"]
        out += [f"| {case} | " + " | ".join(
            "n/a" if secs.get(b) is None else f"{secs[b]:.2f}" for b in names) + " |"
            for case, secs in cold.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--cases", help="comma-separated: " + ",".join(BY_NAME))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, help="timed repeats per backend (default 21)")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    parser.add_argument("--compile-time", action="store_true",
                        help="also measure cold compile time (fresh process, empty caches)")
    parser.add_argument("--first-call", help=argparse.SUPPRESS)  # subprocess helper
    args = parser.parse_args(argv)
    backends = args.backends.split(",")

    if args.first_call:
        _first_call_main(args.first_call, backends[0])
        return 0

    cases = [BY_NAME[name] for name in args.cases.split(",")] if args.cases else CASES
    repeats = args.repeats or (5 if args.quick else 21)
    warmup = 1 if args.quick else 3
    copy_bw = copy_bandwidth(5 if args.quick else 11)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "copy_bandwidth_gbs": copy_bw / 1e9,
        "repeats": repeats,
        "command": " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])]),
    }
    print(f"copy bandwidth {copy_bw / 1e9:.1f} GB/s, {meta['threads']} threads, "
          f"median of {repeats}", flush=True)

    results = []
    for case in cases:
        torch._dynamo.reset()
        result = run_case(case, backends, repeats, warmup)
        results.append(result)
        for backend, error in result.errors.items():
            print(f"  {case.name}: {backend} failed: {error}", file=sys.stderr)
        print(f"  {case.name}: " + ", ".join(f"{b} {ms(result.times[b])} ms" for b in backends),
              flush=True)

    cold: dict[str, dict[str, float | None]] = {}
    if args.compile_time:
        for case in cases:
            cold[case.name] = {b: cold_compile_seconds(case.name, b) for b in backends
                               if b != "eager"}
            print(f"  cold compile {case.name}: " + ", ".join(
                f"{b} {'n/a' if s is None else f'{s:.2f}'} s" for b, s in cold[case.name].items()))

    rows = table_rows(results, backends, copy_bw)
    print()
    print(format_text(rows))
    if args.json:
        payload = {"meta": meta, "results": [dataclasses.asdict(r) for r in results],
                   "cold_compile_seconds": cold}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(format_markdown(rows, meta, cold))
    return 1 if any(r.correct is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
