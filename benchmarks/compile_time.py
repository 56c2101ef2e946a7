"""Cold and warm compile time: TorchDynamo + AOTAutograd alone vs the default backend vs Trebuchet.

    python benchmarks/compile_time.py                   # bert and bert_train, 3 repeats
    python benchmarks/compile_time.py --quick           # bert only, 1 repeat
    python benchmarks/compile_time.py --models bert --repeats 5 --json out.json --markdown out.md

Every measurement runs in a fresh Python process, which builds the model (see
models.py), runs it eagerly once (so one-time eager set-up is not counted), and then
times the first compiled call: compile + one run. The compile time is that first call
minus one warm call (the fastest of the 3 that follow). The backend's own import is inside the
timed region (`import trebuchet` for Trebuchet; the default backend imports its modules
during its first compile); torch._dynamo is imported before it, as it is shared.

  cold  empty caches: new temporary TREBUCHET_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR
        per process, and the default backend's FX graph and AOTAutograd caches off
        (TORCHINDUCTOR_FX_GRAPH_CACHE=0, TORCHINDUCTOR_AUTOGRAD_CACHE=0).
  warm  disk caches filled: one process with all caches on fills a new pair of cache
        folders, then each measured process reuses them (nothing in memory is shared).

Backends: "aot_eager" (TorchDynamo + AOTAutograd, running the graphs eagerly: the work
every backend here shares, the floor), "inductor" (the default backend, only through
torch.compile(backend="inductor")) and "trebuchet". Each reported time is the median of
N processes (--repeats). "Added over the floor" is backend - aot_eager; "vs inductor"
is the default backend's added time / Trebuchet's (> 1: Trebuchet adds less).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import format_text, machine_info, machine_line, markdown_table, stats_line

BACKENDS = ("aot_eager", "inductor", "trebuchet")
FLOOR = "aot_eager"
MODELS = ("bert", "bert_train")
QUICK_MODELS = ("bert",)
MARKER = "COMPILE_TIME_RESULT "
WARM_RUNS = 3
# Settings that would change what is measured; the parent's values are not passed on.
SCRUBBED_ENV = ("TREBUCHET_DEBUG", "TREBUCHET_DEBUG_DIR", "TREBUCHET_STRICT", "TREBUCHET_TARGET",
                "TORCHINDUCTOR_FORCE_DISABLE_CACHES", "TORCH_COMPILE_FORCE_DISABLE_CACHES",
                "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE", "TORCH_LOGS")


# ---------------------------------------------------------------- the measured process


def _child(model_name: str, backend: str) -> dict[str, Any]:
    import torch
    import torch._dynamo  # noqa: F401  (shared by every backend: imported before the timer)

    import models
    from common import make_callable, trebuchet_stats

    spec = models.BY_NAME[model_name]
    model, inputs = models.build(spec, spec.attn)
    inductor_preloaded = "torch._inductor" in sys.modules
    out: dict[str, Any] = {"model": model_name, "backend": backend}

    if spec.training:
        batch = inputs
        reference = copy.deepcopy(model)
        expected = reference(**batch).loss
        expected.backward()  # eager set-up (forward and backward) happens here, untimed
        expected = expected.detach()
        expected_loss = expected.item()
        model_copy = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(model_copy.parameters(), lr=1e-4)
        holder: dict[str, Any] = {}

        def step():
            loss = holder["fn"](**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        start = time.perf_counter()
        holder["fn"] = make_callable(backend, model_copy)
        first = step()
        first_call = time.perf_counter() - start
        out["max_error"] = abs(first.item() - expected_loss)
        out["correct"] = bool(torch.allclose(first, expected, rtol=models.LOSS_RTOL, atol=models.LOSS_ATOL))
        runs = []
        for _ in range(WARM_RUNS):
            start = time.perf_counter()
            step()
            runs.append(time.perf_counter() - start)
    else:
        with torch.no_grad():
            expected = model(**inputs).last_hidden_state  # eager set-up happens here, untimed
            start = time.perf_counter()
            fn = make_callable(backend, model)
            first = fn(**inputs).last_hidden_state
            first_call = time.perf_counter() - start
            out["max_error"] = (first - expected).abs().max().item()
            out["correct"] = bool(torch.allclose(first, expected, rtol=models.INFER_RTOL,
                                                 atol=models.INFER_ATOL))
            runs = []
            for _ in range(WARM_RUNS):
                start = time.perf_counter()
                fn(**inputs)
                runs.append(time.perf_counter() - start)
    run = min(runs)  # the least disturbed of the warm calls
    out.update(first_call=first_call, run=run, compile=first_call - run,
               inductor_preloaded=inductor_preloaded, trebuchet_loaded="trebuchet" in sys.modules)
    if backend == "trebuchet":
        out["trebuchet"] = trebuchet_stats()
    return out


# ---------------------------------------------------------------- the driver


def cache_env(folder: str, cold: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(TREBUCHET_CACHE_DIR=os.path.join(folder, "trebuchet"),
               TORCHINDUCTOR_CACHE_DIR=os.path.join(folder, "inductor"))
    if cold:
        env.update(TORCHINDUCTOR_FX_GRAPH_CACHE="0", TORCHINDUCTOR_AUTOGRAD_CACHE="0")
    return env


def measure(model: str, backend: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model, "--backends", backend]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            result["process_wall"] = wall
            return result
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"[:300]}


def run_model(model: str, backends: list[str], repeats: int, timeout: float) -> dict[str, Any]:
    """{"cold": {backend: [result, ...]}, "warm": {...}, "fill": {backend: result}}."""
    cold: dict[str, list] = {b: [] for b in backends}
    warm: dict[str, list] = {b: [] for b in backends}
    fill: dict[str, Any] = {}
    # Rotate the order so that drift in machine load hits each backend alike.
    for rep in range(repeats):
        k = rep % len(backends)
        for backend in backends[k:] + backends[:k]:
            with tempfile.TemporaryDirectory(prefix="trebuchet-cold-") as folder:
                cold[backend].append(measure(model, backend, cache_env(folder, cold=True), timeout))
            _progress(model, "cold", backend, cold[backend][-1])
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="trebuchet-warm-") as folder:
            env = cache_env(folder, cold=False)
            fill[backend] = measure(model, backend, env, timeout)
            _progress(model, "fill", backend, fill[backend])
            for _ in range(repeats):
                warm[backend].append(measure(model, backend, env, timeout))
                _progress(model, "warm", backend, warm[backend][-1])
    return {"cold": cold, "warm": warm, "fill": fill}


def _progress(model: str, kind: str, backend: str, result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"  {model} {kind} {backend}: FAILED {result['error']}", file=sys.stderr, flush=True)
    else:
        print(f"  {model} {kind} {backend}: compile {result['compile']:.2f} s "
              f"(first call {result['first_call']:.2f} s, run {result['run'] * 1e3:.0f} ms)", flush=True)


def median_compile(results: list[dict[str, Any]]) -> float | None:
    """Median compile seconds of the processes that succeeded and matched eager."""
    good = [r["compile"] for r in results if "error" not in r and r.get("correct")]
    return statistics.median(good) if good else None


def summarize(per_model: dict[str, dict[str, Any]], backends: list[str]) -> dict[str, dict[str, Any]]:
    summary = {}
    for model, data in per_model.items():
        row: dict[str, Any] = {}
        for kind in ("cold", "warm"):
            secs = {b: median_compile(data[kind][b]) for b in backends}
            row[kind] = secs
            floor = secs.get(FLOOR)
            row[f"{kind}_added"] = {b: (None if secs[b] is None or floor is None else secs[b] - floor)
                                    for b in backends if b != FLOOR}
        row["run"] = {b: _median([r["run"] for r in data["cold"][b] + data["warm"][b] if "error" not in r])
                      for b in backends}
        summary[model] = row
    return summary


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _s(t: float | None) -> str:
    return "n/a" if t is None else f"{t:.2f}"


def _added_ratio(added: dict[str, float | None]) -> str:
    ours, theirs = added.get("trebuchet"), added.get("inductor")
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "n/a"
    return f"{theirs / ours:.2f}x"


def table_rows(summary: dict[str, dict[str, Any]], per_model: dict[str, dict[str, Any]],
               backends: list[str]) -> list[list[str]]:
    rows = [["model", "backend", "cold s", "warm s", "cold added s", "warm added s", "run ms", "correct"]]
    for model, row in summary.items():
        for b in backends:
            results = per_model[model]["cold"][b] + per_model[model]["warm"][b]
            if any("error" in r for r in results):
                correct = "FAILED"
            elif not all(r.get("correct") for r in results):
                correct = "MISMATCH"
            else:
                correct = "ok"
            rows.append([model, b, _s(row["cold"][b]), _s(row["warm"][b]),
                         "floor" if b == FLOOR else _s(row["cold_added"].get(b)),
                         "floor" if b == FLOOR else _s(row["warm_added"].get(b)),
                         "n/a" if row["run"][b] is None else f"{row['run'][b] * 1e3:.0f}", correct])
    return rows


def ratio_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for model, row in summary.items():
        for kind in ("cold", "warm"):
            added = row[f"{kind}_added"]
            if "trebuchet" in added and "inductor" in added:
                out.append(f"{model} {kind}: added over the floor: inductor {_s(added['inductor'])} s, "
                           f"trebuchet {_s(added['trebuchet'])} s; vs inductor (its added / ours) "
                           f"{_added_ratio(added)}")
    return out


def note_lines(per_model: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for model, data in per_model.items():
        results = [r for kind in ("cold", "warm") for rs in data[kind].values() for r in rs]
        results += list(data["fill"].values())
        if any(r.get("inductor_preloaded") for r in results if "error" not in r):
            out.append(f"{model}: part of torch._inductor was already imported (with torch._dynamo) "
                       "before the timer started")
        for r in data["cold"].get("trebuchet", []):
            if "trebuchet" in r:
                out.append(f"{model}: {stats_line(r['trebuchet'])}")
                break
        for kind in ("cold", "warm"):
            for b, rs in data[kind].items():
                for r in rs:
                    if "error" in r:
                        out.append(f"{model} {kind} {b}: FAILED {r['error']}")
                    elif not r.get("correct"):
                        out.append(f"{model} {kind} {b}: output differs from eager by {r['max_error']:.2e}")
    return out


def format_markdown(rows: list[list[str]], ratios: list[str], notes: list[str], meta: dict) -> str:
    out = [f"# Compile time ({meta['date']})", "",
           f"Machine: {machine_line(meta)}. Median of {meta['repeats']} processes per cell. "
           f"Command: `{meta['command']}`.",
           "Compile time = first call (compile + one run) - one warm run, in a fresh process; cold: empty "
           "caches (the default backend's FX graph and AOTAutograd caches off), warm: disk caches filled by "
           "an earlier process. `aot_eager` (TorchDynamo + AOTAutograd) is the floor every backend pays; "
           "`added` is backend - floor.", ""]
    out += markdown_table(rows)
    out += [""] + [f"- {line}" for line in ratios + notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bert only, 1 repeat")
    parser.add_argument("--models", help="comma-separated: " + ",".join(MODELS)
                        + f" (default {','.join(MODELS)}; --quick: {','.join(QUICK_MODELS)})")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, help="processes per cold / warm cell (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the measured subprocess
    args = parser.parse_args(argv)
    backends = args.backends.split(",")

    if args.child:
        print(MARKER + json.dumps(_child(args.child, backends[0])), flush=True)
        return 0

    models = args.models.split(",") if args.models else list(QUICK_MODELS if args.quick else MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {','.join(unknown)}; known: {','.join(MODELS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    meta = machine_info()
    meta.update(repeats=repeats,
                command=" ".join(["python", "benchmarks/compile_time.py", *(argv or sys.argv[1:])]))
    print(f"{machine_line(meta)}; median of {repeats} processes", flush=True)

    per_model = {model: run_model(model, backends, repeats, args.timeout) for model in models}
    summary = summarize(per_model, backends)
    rows = table_rows(summary, per_model, backends)
    ratios, notes = ratio_lines(summary), note_lines(per_model)
    print()
    print(format_text(rows))
    print()
    print("\n".join(ratios + notes))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "summary": summary, "measurements": per_model}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(format_markdown(rows, ratios, notes, meta))
    bad = any("error" in r or not r.get("correct") for data in per_model.values()
              for kind in ("cold", "warm", "fill") for rs in data[kind].values()
              for r in (rs if isinstance(rs, list) else [rs]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
