"""`trebuchet bench`: the front door of the benchmark suite in `benchmarks/`.

The cases stay in `benchmarks/` (a source checkout's folder); this runs the scripts of
the chosen suite one after another, each in its own process (each script interleaves
eager, the default `torch.compile` backend and Trebuchet in one process per table),
passes their output through, and shows progress with an estimate of the time left
from the pace of the cases done so far. Each script's JSON goes into one file.

    micro    benchmarks/bench.py         memory-bound kernels vs copy bandwidth
    models   benchmarks/models.py        whole transformers models, fusion's share
    compile  benchmarks/compile_time.py  cold and warm compile time
"""
from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

BENCHMARKS = pathlib.Path(__file__).resolve().parents[3] / "benchmarks"

# suite -> scripts; per script: the flag selecting cases, and how many progress lines a
# run prints per case (compile_time.py: per backend, a cold and a warm process per repeat
# and one cache fill; its defaults: 3 repeats, 1 with --quick)
SUITES = {"micro": ["bench.py"], "models": ["models.py"], "compile": ["compile_time.py"]}
SUITES["all"] = SUITES["micro"] + SUITES["models"] + SUITES["compile"]
CASE_FLAG = {"bench.py": "--cases", "models.py": "--models", "compile_time.py": "--models"}
_PROGRESS = re.compile(r"^  \S+.*: ")


class BenchError(RuntimeError):
    """The suite cannot run (no benchmarks folder)."""


def _list_length(script: pathlib.Path, name: str) -> int | None:
    """The number of items of a module-level list/tuple literal, read without importing."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            if isinstance(node.value, (ast.List, ast.Tuple)):
                return len(node.value.elts)
    return None


def expected_lines(script: str, quick: bool, cases: list[str] | None,
                   backends: list[str] | None) -> int | None:
    """How many progress lines the script prints (None when not known)."""
    path = BENCHMARKS / script
    if script == "bench.py":
        return len(cases) if cases else _list_length(path, "CASES")
    if script == "models.py":
        return len(cases) if cases else _list_length(path, "MODELS")
    models = len(cases) if cases else _list_length(path, "QUICK_MODELS" if quick else "MODELS")
    n_backends = len(backends) if backends else _list_length(path, "BACKENDS")
    if models is None or n_backends is None:
        return None
    return models * n_backends * (2 * (1 if quick else 3) + 1)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _bar(done: int, total: int | None, width: int = 20) -> str:
    if not total:
        return ""
    filled = min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def run_suites(suite: str, quick: bool = False, json_path: str | None = None,
               cases: list[str] | None = None, backends: list[str] | None = None) -> int:
    """Run the suite's scripts; 0 when all succeeded, 1 when one failed or mismatched."""
    if not BENCHMARKS.is_dir():
        raise BenchError(f"no benchmarks folder at {BENCHMARKS}: `trebuchet bench` runs the "
                         "benchmark scripts of a source checkout (git clone the project and "
                         "pip install -e . from it)")
    scripts = SUITES[suite]
    results: dict[str, Any] = {}
    status = 0
    start_all = time.perf_counter()
    for i, script in enumerate(scripts, 1):
        total = expected_lines(script, quick, cases, backends)
        with tempfile.TemporaryDirectory(prefix="trebuchet-bench-") as tmp:
            out_json = pathlib.Path(tmp) / "out.json"
            argv = [sys.executable, str(BENCHMARKS / script), "--json", str(out_json)]
            argv += ["--quick"] if quick else []
            argv += [CASE_FLAG[script], ",".join(cases)] if cases else []
            argv += ["--backends", ",".join(backends)] if backends else []
            shown = " ".join(["python", f"benchmarks/{script}", *argv[4:]])
            print(f"=== [{i}/{len(scripts)}] {shown}", flush=True)
            code = _run(argv, total, f"[{i}/{len(scripts)} {script}]")
            if out_json.is_file():
                results[script] = json.loads(out_json.read_text())
        if code != 0:
            print(f"error: benchmarks/{script} exited with {code} (a failure or an output that did "
                  "not match eager: see its messages above)", file=sys.stderr)
            status = 1
    print(f"=== {suite} suite done in {_clock(time.perf_counter() - start_all)}", flush=True)
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {json_path}")
    return status


def _run(argv: list[str], total: int | None, label: str) -> int:
    """Run one script, passing its output through, with a progress line on stderr."""
    start = time.perf_counter()
    done = 0
    tty = sys.stderr.isatty()
    proc = subprocess.Popen(argv, cwd=BENCHMARKS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if tty:
            sys.stderr.write("\r\033[K")
        sys.stdout.write(line)
        sys.stdout.flush()
        if _PROGRESS.match(line) and "failed" not in line.lower():
            done += 1
            elapsed = time.perf_counter() - start
            left = (f", about {_clock(elapsed / done * (total - done))} left"
                    if total and done < total else "")
            status = f"{label} {_bar(done, total)} {_clock(elapsed)} elapsed{left}"
            sys.stderr.write(status + ("" if tty else "\n"))
            sys.stderr.flush()
    if tty:
        sys.stderr.write("\r\033[K")
    return proc.wait()
