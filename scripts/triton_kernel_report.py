"""Compiles the Triton kernels of the canonical cases and the tiny models for sm_90 (no GPU:
Triton's own pipeline and the wheel's ptxas, codegen/triton/compile_check.py) and prints
a table: kernel, the ATen ops it fuses, warps and block sizes, registers, spill bytes,
128-bit vector loads and stores in its PTX, compile time; `--markdown` writes a summary
per case and the per-kernel table.

    PYTHONPATH=$PWD/src python scripts/triton_kernel_report.py
    PYTHONPATH=$PWD/src python scripts/triton_kernel_report.py --groups canonical,fusion,models \
        --markdown /tmp/kernels.md --json /tmp/kernels.json

The cases are tests/test_triton_sm90.py's (every case of each group, --full ones too),
compiled with target="triton" under TRITON_INTERPRET=1 and called once with the kernels
recorded, not run. Identical kernels (repeated layers) are compiled and listed once, with
how many launches they stand for. Cases the target does not generate yet are listed with
the reason.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _short_ops(ops: str, limit: int = 90) -> str:
    """`kernel3: aten.add.Tensor, aten.gelu.default` -> `add, gelu` (first of each op)."""
    names = []
    for op in ops.split(":", 1)[-1].split(","):
        op = op.strip()
        name = op.split(".")[1] if op.startswith("aten.") and op.count(".") >= 1 else op
        if name and name not in names:
            names.append(name)
    text = ", ".join(names)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="canonical,models",
                        help="comma-separated of: canonical, fusion, models")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    parser.add_argument("--json", help="write every report as JSON here")
    args = parser.parse_args(argv)

    from trebuchet.codegen.triton import compile_check as cc
    why = cc.available()
    if why:
        print(f"cannot compile for sm_90 here: {why}", file=sys.stderr)
        return 2
    import test_triton_sm90 as cases
    from common import format_text, markdown_table

    start = time.perf_counter()
    rows = [["case", "kernel", "ops", "warps", "blocks", "regs", "spills", "v4 ld", "v4 st",
             "launches", "compile s"]]
    summary = [["case", "kernels", "launches", "max regs", "spill bytes", "with v4 loads",
                "compile s"]]
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    everything = []
    for group in args.groups.split(","):
        result = cases.compile_group(cases.GROUPS[group])
        skipped.update(result.skipped)
        failed.update(result.failed)
        for case, reports in result.reports.items():
            unique: dict[str, list] = {}
            for r in reports:
                everything.append({"group": group, "case": case, **r.__dict__})
                key = json.dumps([r.signature, r.constexprs, r.registers, r.ops.split(":", 1)[-1]])
                unique.setdefault(key, []).append(r)
            ok = [same[0] for same in unique.values() if not same[0].error]
            if ok:
                summary.append([case, str(len(ok)), str(len(reports)),
                                str(max(r.registers or 0 for r in ok)),
                                str(sum(r.spill_bytes or 0 for r in ok)),
                                str(sum(1 for r in ok if r.v4_loads)),
                                f"{sum(r.compile_seconds for r in ok):.1f}"])
            for same in unique.values():
                r = same[0]
                if r.error:
                    failed[f"{case} {r.function}"] = r.error.splitlines()[0][:200]
                    continue
                blocks = ", ".join(f"{k}={v}" for k, v in r.constexprs.items()
                                   if k.isupper() or k.endswith("BLOCK"))
                rows.append([case, r.function.lstrip("_"), _short_ops(r.ops), str(r.num_warps),
                             blocks, str(r.registers), str(r.spill_bytes), str(r.v4_loads),
                             str(r.v4_stores), str(len(same)), f"{r.compile_seconds:.2f}"])
    elapsed = time.perf_counter() - start
    print(format_text(rows))
    notes = [f"{case}: {why}" for case, why in skipped.items()]
    notes += [f"FAILED: {case}: {why}" for case, why in failed.items()]
    for line in notes:
        print(line)
    compiled = sum(1 for r in everything if not r["cached"])
    counts = (f"{len(everything)} launches, {compiled} distinct kernels compiled, "
              f"{len(rows) - 1} rows (identical kernels of a case merged)")
    print(f"{counts} for sm_90 in {elapsed:.0f} s (triton {cc.triton_version()})")
    if args.markdown:
        date = datetime.date.today().isoformat()
        text = [f"Compiled {date}, triton {cc.triton_version()}, `{pathlib.Path(cc.ptxas_path() or '').name}"
                f" -arch=sm_90a -v`; {counts}; {elapsed:.0f} s.", ""]
        text += markdown_table(summary)
        text += ["", "<details><summary>Every distinct kernel</summary>", ""]
        text += markdown_table(rows) + ["", "</details>"]
        if notes:
            text += [""] + [f"- {n}" for n in notes]
        pathlib.Path(args.markdown).write_text("\n".join(text) + "\n")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(everything, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
