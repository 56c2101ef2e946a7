"""Run the OpInfo sweep on one target and write the coverage table docs/coverage.md.

    python scripts/coverage.py                 # every sample of every op, c target
    python scripts/coverage.py --quick         # one sample per op
    python scripts/coverage.py --target reference --out /tmp/cov.md

It runs tests/test_opinfo.py under pytest (xdist) with TREBUCHET_COVERAGE_OUT set,
then folds the per-sample JSON lines into one outcome per op, the worst of its
samples: fail > fallback > lowered > skipped. An op with no record at all (a
crashed worker, a collection problem) is listed as "no result".
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {"skipped": 0, "lowered": 1, "fallback": 2, "fail": 3}
ORDER = ("lowered", "fallback", "fail", "skipped", "no result")


def run_sweep(target: str, quick: bool, workers: str, prefix: str) -> tuple[int, list[str]]:
    """Run the pytest sweep; returns its exit code and the command line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    cmd += ["tests/test_opinfo.py", "-n", workers]
    if not quick:
        cmd.append("--full")
    env = dict(os.environ, TREBUCHET_COVERAGE_OUT=prefix, TREBUCHET_OPINFO_TARGETS=target)
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    return proc.returncode, cmd


def load_records(prefix: str) -> list[dict]:
    records = []
    for path in sorted(glob.glob(f"{glob.escape(prefix)}.*.jsonl")):
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def all_op_ids() -> list[str]:
    from torch.testing._internal.common_methods_invocations import op_db

    ids = (f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name for op in op_db)
    return sorted(set(ids))


def aggregate(records: list[dict], op_ids: list[str]) -> dict[str, dict]:
    """Per op: outcome (worst sample), samples run, fallback ops, extern ops, detail."""
    ops = {op_id: _empty_entry() for op_id in op_ids}
    for rec in records:
        entry = ops.setdefault(rec["op"], _empty_entry())
        outcome = rec["outcome"]
        if outcome != "skipped":
            entry["samples"] += 1
        entry["fallback_ops"].update(rec.get("fallback_ops", {}))
        entry["extern_ops"].update(rec.get("extern_ops", {}))
        current = entry["outcome"]
        if current == "no result" or RANK[outcome] > RANK[current]:
            entry["outcome"] = outcome
            entry["detail"] = _detail(rec)
    return ops


def _empty_entry() -> dict:
    return {
        "outcome": "no result",
        "samples": 0,
        "fallback_ops": collections.Counter(),
        "extern_ops": collections.Counter(),
        "detail": "",
    }


def _detail(rec: dict) -> str:
    outcome = rec["outcome"]
    if outcome == "skipped":
        return rec.get("reason", "")
    if outcome == "fail":
        return rec.get("error", "")
    if outcome == "fallback":
        parts = []
        if rec.get("graph_fallbacks"):
            warning = (rec.get("warnings") or [""])[0]
            parts.append(f"whole graph ran eager: {warning}".rstrip(": "))
        if rec.get("graph_breaks"):
            parts.append("dynamo graph break: " + " ".join(rec["graph_breaks"][0].splitlines()[:2]))
        return "; ".join(parts)
    return ""


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def _ops_cell(counter: collections.Counter) -> str:
    return ", ".join(f"`{name}`" for name, _ in sorted(counter.items()))


def render(ops: dict[str, dict], target: str, command: str, quick: bool) -> str:
    import torch

    counts = collections.Counter(entry["outcome"] for entry in ops.values())
    today = datetime.date.today().isoformat()
    lines = [
        f"# OpInfo coverage: `{target}` target",
        "",
        f"Generated {today} with torch {torch.__version__} by `python scripts/coverage.py"
        f"{' --quick' if quick else ''}{'' if target == 'c' else f' --target {target}'}`,",
        f"which ran `{command}`.",
        "Every float32 CPU sample of each op in PyTorch's OpInfo database"
        f"{' (one sample per op)' if quick else ''} ran compiled and eager.",
        "",
        "| outcome | ops |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {counts.get(name, 0)} |" for name in ORDER]
    lines += [f"| total | {len(ops)} |", ""]
    lines += [
        "- lowered: matches eager and nothing ran as an eager fallback",
        "- fallback: matches eager, but some ATen ops (listed) or the whole graph ran eagerly,",
        "  or Dynamo broke the graph",
        "- fail: compiled result differs from eager, or compiling/running raised",
        "- skipped: random op, no float32 support, or no sample eager can serve as the oracle for",
        "- no result: no record (the worker running it crashed)",
        "",
        "| op | outcome | samples | fallback ATen ops | extern ATen ops | detail |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for op_id in sorted(ops):
        e = ops[op_id]
        lines.append(
            f"| `{op_id}` | {e['outcome']} | {e['samples']} | {_ops_cell(e['fallback_ops'])} "
            f"| {_ops_cell(e['extern_ops'])} | {_cell(e['detail'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="c", choices=("c", "reference"))
    parser.add_argument("--quick", action="store_true", help="one sample per op")
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers")
    parser.add_argument("--out", default=str(ROOT / "docs" / "coverage.md"))
    parser.add_argument("--records", help="aggregate existing JSON lines with this prefix")
    args = parser.parse_args(argv)

    if args.records:
        prefix, command = args.records, "(existing records)"
    else:
        prefix = os.path.join(tempfile.mkdtemp(prefix="trebuchet-coverage-"), "records")
        code, cmd = run_sweep(args.target, args.quick, args.workers, prefix)
        command = " ".join(shlex.quote(c) for c in cmd[1:])
        command = f"TREBUCHET_OPINFO_TARGETS={args.target} python {command}"
        print(f"pytest exited with {code}", file=sys.stderr)

    records = [r for r in load_records(prefix) if r["target"] == args.target]
    ops = aggregate(records, all_op_ids())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(ops, args.target, command, args.quick), encoding="utf-8")
    counts = collections.Counter(e["outcome"] for e in ops.values())
    print(f"wrote {out}: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ORDER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
