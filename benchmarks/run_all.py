"""Run every benchmark and write docs/benchmarks.md.

    python benchmarks/run_all.py                 # about 15 minutes on a 2-core machine
    python benchmarks/run_all.py --quick         # about 5 minutes: fewer repeats, bert only for compile time
    python benchmarks/run_all.py --output /tmp/benchmarks.md --results-dir /tmp/results

Runs, one after another, each in its own process:

  benchmarks/bench.py         memory-bound kernels (effective bandwidth vs copy bandwidth)
  benchmarks/models.py        whole transformers models: inference and a training step
  benchmarks/seq_lengths.py   one compiled BERT and Llama at sequence lengths 16..512
                              (inference, then a training step)
  benchmarks/generation.py    Hugging Face generate: decode time per token
  benchmarks/compile_time.py  cold and warm compile time against TorchDynamo + AOTAutograd alone
  benchmarks/cnn.py           ResNet-18, MobileNetV3-Small and ViT-Tiny: inference and a
                              training step, with compile time over aot_eager
  benchmarks/bf16.py          BERT in bfloat16 and under bfloat16 autocast, the same

and writes one Markdown file with the machine (CPU model, cores, torch version, load
average), each script's tables and the exact commands, and the targets of issue 11 over
the workloads of cnn.py and bf16.py together (common.targets). The JSON and Markdown of each
script are kept in --results-dir if given. Run it on an otherwise idle machine: the
numbers are only as good as the machine is quiet (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import machine_info, machine_line, markdown_table, targets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (name, script, section title, the script's own flags)
SCRIPTS = [
    ("bench", "bench.py", "Memory-bound kernels", []),
    ("models", "models.py", "Whole models", []),
    ("seq_lengths", "seq_lengths.py", "Varying sequence lengths: inference", []),
    ("seq_lengths_train", "seq_lengths.py", "Varying sequence lengths: training step", ["--train"]),
    ("generation", "generation.py", "Text generation (decode time per token)", []),
    ("compile_time", "compile_time.py", "Compile time", []),
    ("cnn", "cnn.py", "Image networks: convolutional networks and ViT", ["--compile-time"]),
    ("bf16", "bf16.py", "BERT in bfloat16 and under autocast", ["--compile-time"]),
]
TARGET_SCRIPTS = ("cnn", "bf16")   # issue 11's workloads: their targets are summed up together
TARGETS_TITLE = "Targets of issue 11: image networks and bfloat16 BERT together"


def _loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_script(script: str, flags: list[str], results: str, name: str) -> tuple[int, float, str, str]:
    """Runs one script; returns (exit status, seconds, its Markdown, the command as shown)."""
    json_path, md_path = os.path.join(results, f"{name}.json"), os.path.join(results, f"{name}.md")
    argv = [*flags, "--json", json_path, "--markdown", md_path]
    shown = " ".join(["python", f"benchmarks/{script}", *flags])
    print(f"\n=== {shown}", flush=True)
    start = time.perf_counter()
    # Output goes straight through: progress is visible while it runs.
    status = subprocess.run([sys.executable, os.path.join(HERE, script), *argv], cwd=ROOT).returncode
    seconds = time.perf_counter() - start
    markdown = ""
    if os.path.exists(md_path):
        with open(md_path, encoding="utf-8") as f:
            markdown = f.read()
        # Each script writes the command it was given; show it without the output paths.
        markdown = markdown.replace(" ".join(["python", f"benchmarks/{script}", *argv]), shown)
    return status, seconds, markdown, shown


def section(title: str, markdown: str, status: int, seconds: float) -> list[str]:
    lines = markdown.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the script's own title; ours replaces it
    while lines and not lines[0].strip():
        lines = lines[1:]
    out = [f"## {title}", ""]
    if status != 0:
        out += [f"**The script exited with status {status}** (a backend failed or an output did not "
                "match eager; see the notes).", ""]
    if not lines:
        lines = ["(no results)"]
    return out + lines + ["", f"_Ran in {seconds / 60:.1f} min._", ""]


def kept_sections(path: str, written: set[str]) -> list[str]:
    """The `## ` sections of the existing file that this run does not write (figures
    recorded by other means: the GPU benchmark, the sm_90 compile report, scripts not
    chosen with --scripts), so a run never deletes them."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    kept: list[str] = []
    for chunk in ("\n" + text).split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0].strip()
        if title not in written:
            kept += [f"## {chunk.rstrip()}", ""]
    return kept


def targets_section(names: list[str], results: str) -> list[str]:
    """The targets over the rows of the scripts `names` (their JSON in `results`), as a
    Markdown section; nothing unless two or more of them ran (each prints its own)."""
    rows = []
    for name in names:
        try:
            with open(os.path.join(results, f"{name}.json"), encoding="utf-8") as f:
                rows += json.load(f)["rows"]
        except (OSError, ValueError, KeyError):
            return [f"## {TARGETS_TITLE}", "", f"(no results from {name})", ""] if len(names) > 1 else []
    if len(names) < 2:
        return []
    table, lines = targets(rows)
    print("\n" + "\n".join(lines), flush=True)
    return [f"## {TARGETS_TITLE}", ""] + (markdown_table(table) + [""] if table else []) + lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script with --quick")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="the Markdown file to write (default docs/benchmarks.md)")
    parser.add_argument("--results-dir", help="keep each script's JSON and Markdown here")
    names = [name for name, _, _, _ in SCRIPTS]
    parser.add_argument("--scripts", default=",".join(names),
                        help="comma-separated subset of: " + ",".join(names))
    args = parser.parse_args(argv)
    chosen = args.scripts.split(",")
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown script(s): {','.join(sorted(unknown))}")
    flags = ["--quick"] if args.quick else []

    meta = machine_info()
    load_before = _loadavg()
    shown_all = " ".join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trebuchet-bench-") as tmp:
        results = args.results_dir or tmp
        os.makedirs(results, exist_ok=True)
        ran = [(title, *run_script(script, flags + own, results, name))
               for name, script, title, own in SCRIPTS if name in chosen]
        goals = targets_section([n for n in TARGET_SCRIPTS if n in chosen], results)
    total = time.perf_counter() - start

    out = ["# Benchmarks", "",
           f"Generated by `{shown_all}` on {meta['date']}, in {total / 60:.1f} min.", "",
           f"- CPU: {meta['cpu']}; {meta['cores']} cores ({meta['usable_cores']} usable), "
           f"{meta['threads']} torch threads",
           f"- torch {meta['torch']}" + (f", transformers {meta['transformers']}" if "transformers" in meta
                                         else "") + f", Python {meta['python']}, {meta['platform']}",
           f"- load average (1/5/15 min) before: {load_before}, after: {_loadavg()}",
           "", "Every ratio compares runs made in the same session on this machine. What each number "
           "means, and how noisy it is: [benchmarks/README.md](../benchmarks/README.md).", "",
           "Commands, in order:", "", "```"]
    out += [shown for _, _, _, _, shown in ran]
    out += ["```", ""]
    for title, status, seconds, markdown, _ in ran:
        out += section(title, markdown, status, seconds)
    out += goals
    out += kept_sections(args.output, {title for title, *_ in ran} | ({TARGETS_TITLE} if goals else set()))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(out).rstrip() + "\n")
    print(f"\n{machine_line(meta)}")
    for title, status, seconds, _, shown in ran:
        print(f"  {shown}: exit {status}, {seconds / 60:.1f} min")
    print(f"wrote {args.output} ({total / 60:.1f} min in all)")
    return 1 if any(status != 0 for _, status, _, _, _ in ran) else 0


if __name__ == "__main__":
    sys.exit(main())
