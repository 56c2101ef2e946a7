"""Command line: `trebuchet report | explain | bench | demo | info | clear-cache`
(also `python -m trebuchet ...`). Each subcommand's --help has examples.

Exit codes: 0 done; 1 the work failed (a mismatch, a failed compile, a benchmark that
failed); 2 a usage error (a bad option, an unknown model: the message names it and
the fix).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

from .config import Options
from .runtime import cache_files

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# generating targets (the reference target executes the IR with torch ops: no kernels to profile)
TARGETS = ("c", "triton")


class UsageError(Exception):
    """A bad argument: the message names it and says what to do instead."""


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a zoo name: bert, gpt2, llama, vit, t5 (tiny), NAME-base (base-shaped), "
                        "or module.path:callable returning (model, example_inputs)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--seq", type=int, default=32, help="sequence length (default 32; vit: patches)")
    p.add_argument("--layers", type=int, help="number of layers (default 2)")
    p.add_argument("--hidden", type=int, help="hidden size (tiny 64, base 768)")
    p.add_argument("--heads", type=int, help="attention heads (tiny 4, base 12)")
    p.add_argument("--train", action="store_true",
                   help="a training step (forward + backward of the output's sum) instead of inference")
    p.add_argument("--target", default="c", choices=TARGETS,
                   help="code generator (default c; triton needs TRITON_INTERPRET=1 on a CPU)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="trebuchet", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("""
            trebuchet report bert                 where the time goes, eager vs compiled
            trebuchet explain gpt2                graph breaks, kernels, why ops did not fuse
            trebuchet bench --suite micro         the benchmark suite's memory-bound kernels
            trebuchet info                        settings, C compiler check, Triton/GPU
            """) + "\n\nexit codes: 0 done, 1 failed, 2 bad usage")
    parser.add_argument("--version", action="version", version=f"trebuchet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    rep = sub.add_parser(
        "report", help="where a model's time goes: operator classes, kernels, roofline (text, JSON, HTML)",
        formatter_class=fmt,
        description="Profile a model eagerly and compiled: the operator-class table (tensor "
                    "contraction, normalization, element-wise, data movement: %% of FLOPs, bytes, "
                    "time), every generated kernel and library call against the roofline, the "
                    "end-to-end speedup and the non-contraction time fusion removed. Writes "
                    "DIR/MODEL.json and DIR/MODEL.html (self-contained). See docs/report.md.",
        epilog=_examples("""
            trebuchet report bert
            trebuchet report bert-base --batch 8 --seq 128 --out reports/
            trebuchet report llama --train --layers 1
            trebuchet report mypkg.models:make_model     # returns (model, example_inputs)
            """))
    _model_args(rep)
    rep.add_argument("--out", default="trebuchet-report", metavar="DIR",
                     help="folder for MODEL.json and MODEL.html (default ./trebuchet-report)")
    rep.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    rep.add_argument("--threads", type=int,
                     help="torch and OpenMP threads (default: torch's, usually the core count)")
    rep.add_argument("--no-html", action="store_true", help="write only the JSON")
    rep.add_argument("--all-kernels", action="store_true", help="print every kernel (default: top 25)")

    exp = sub.add_parser(
        "explain", help="graph breaks, the kernels of each graph and why neighbours did not fuse",
        formatter_class=fmt,
        description="For each graph TorchDynamo captured: the graph breaks with their reasons, "
                    "each generated kernel with the ATen ops fused into it, and for each pair of "
                    "adjacent steps that are not one kernel, the scheduler's reason. Ends with "
                    "the folder of the generated code.",
        epilog=_examples("""
            trebuchet explain bert
            trebuchet explain mypkg.models:make_model
            trebuchet explain my_script.py:fn         # a function in a file, (fn, inputs) returned by it
            """))
    _model_args(exp)
    exp.add_argument("--out", default="trebuchet-explain", metavar="DIR",
                     help="folder for the generated code of each graph (default ./trebuchet-explain)")

    ben = sub.add_parser(
        "bench", help="run the benchmark suite (benchmarks/): eager vs torch.compile vs Trebuchet",
        formatter_class=fmt,
        description="Runs the cases of benchmarks/ (in a source checkout) one script per process, "
                    "with progress and the time left, and prints their tables.",
        epilog=_examples("""
            trebuchet bench                       the micro suite (memory-bound kernels)
            trebuchet bench --suite models --quick
            trebuchet bench --suite all --json results.json
            trebuchet bench --cases softmax,rms_norm --backends eager,trebuchet
            """))
    ben.add_argument("--suite", default="micro", choices=("micro", "models", "compile", "all"),
                     help="micro: memory-bound kernels; models: whole models; compile: compile "
                          "time; all: the three (default micro)")
    ben.add_argument("--quick", action="store_true", help="fewer repeats (a first look, not a figure)")
    ben.add_argument("--json", metavar="FILE", help="write every suite's results into one JSON file")
    ben.add_argument("--cases", metavar="A,B",
                     help="only these cases (micro: bench.py's case names; models, compile: model names)")
    ben.add_argument("--backends", metavar="A,B",
                     help="only these backends (default: eager,inductor,trebuchet; compile: "
                          "aot_eager,inductor,trebuchet)")

    demo_parser = sub.add_parser("demo", help="compile a small random model, check it, time it (default)")
    demo_parser.add_argument("--profile", action="store_true",
                             help="print the time of every kernel and extern afterwards")
    sub.add_parser("info", help="the settings in effect; checks the C compiler; Triton and GPU")
    sub.add_parser("clear-cache", help="delete Trebuchet's entries (compiled kernels and graphs) "
                                      "from the cache folder; other files stay")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command in (None, "demo"):
            from .demo import main as demo
            return demo(profile=getattr(args, "profile", False))
        if args.command == "report":
            return report(args)
        if args.command == "explain":
            return explain(args)
        if args.command == "bench":
            return bench(args)
        try:
            opts = Options.from_env()
        except (ValueError, TypeError) as e:
            raise UsageError(f"{e} (from the environment: fix or unset that TREBUCHET_* variable)") from None
        if args.command == "info":
            return info(opts)
        return clear_cache(opts.cache_path())
    except UsageError as e:
        print(f"trebuchet {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _sizes(args: argparse.Namespace):  # noqa: ANN202
    from .report.zoo import Sizes

    for name in ("batch", "seq", "layers", "hidden", "heads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name} {v}: must be a positive integer")
    return Sizes(batch=args.batch, seq=args.seq, layers=args.layers, hidden=args.hidden,
                 heads=args.heads, train=args.train)


def _check_target(target: str) -> None:
    from .codegen.triton.launch import interpreting

    if target == "triton" and not interpreting():
        raise UsageError("--target triton: the models run on CPU tensors, where Triton kernels "
                         "run only under Triton's interpreter: set TRITON_INTERPRET=1, "
                         "or use --target c")


def _load_model(args: argparse.Namespace):  # noqa: ANN202
    from .report.zoo import ModelError, build

    _check_target(args.target)
    try:
        return build(args.model, _sizes(args))
    except ModelError as e:
        raise UsageError(str(e)) from None


def _progress(msg: str) -> None:
    print(f"... {msg}", file=sys.stderr, flush=True)


def report(args: argparse.Namespace) -> int:
    from .report import write
    from .report.html import HtmlUnavailable
    from .report.run import measure
    from .report.text import render

    if args.rounds < 3:
        raise UsageError(f"--rounds {args.rounds}: at least 3 rounds are needed for a median and quartiles")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: must be a positive integer")
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    model = _load_model(args)
    data = measure(model, target=args.target, rounds=args.rounds, progress=_progress)
    print(render(data, kernel_limit=None if args.all_kernels else 25))
    out = pathlib.Path(args.out)
    try:
        paths = write(data, out, args.model, html=not args.no_html)
    except HtmlUnavailable as e:
        paths = write(data, out, args.model, html=False)
        print(f"note: no HTML page: {e}", file=sys.stderr)
    except OSError as e:
        print(f"error: cannot write the report into {out}: {e.strerror or e}; choose another "
              "folder with --out DIR", file=sys.stderr)
        return EXIT_FAILED
    for p in paths:
        print(f"wrote {p}")
    return EXIT_OK


def explain(args: argparse.Namespace) -> int:
    from .report.explain import explain_model

    model = _load_model(args)
    print(explain_model(model, target=args.target, out_dir=args.out))
    return EXIT_OK


def bench(args: argparse.Namespace) -> int:
    from .report.bench import BenchError, run_suites

    if args.cases and args.suite == "all":
        raise UsageError("--cases names cases of one suite: use it with --suite micro, models or compile")
    try:
        return run_suites(args.suite, quick=args.quick, json_path=args.json,
                          cases=args.cases.split(",") if args.cases else None,
                          backends=args.backends.split(",") if args.backends else None)
    except BenchError as e:
        raise UsageError(str(e)) from None


def info(opts: Options) -> int:
    from . import __version__

    status = EXIT_OK
    print(f"trebuchet:    {__version__} (torch {_torch_version()})")
    target = opts.target if opts.target != "auto" else (
        f"auto ({opts.resolved_target('cpu')} for CPU tensors, "
        f"{opts.resolved_target('cuda')} for CUDA tensors)")
    print(f"target:       {target}")
    print(f"cache folder: {opts.cache_path()}")
    ok, detail = check_compiler(opts)
    print(f"C compiler:   {opts.compiler()} ({detail})")
    if not ok:
        status = EXIT_FAILED
    print(f"triton:       {_triton()}")
    print(f"graph cache:  {'on' if opts.graph_cache else 'off (TREBUCHET_GRAPH_CACHE=0)'}")
    print(f"strict:       {opts.strict}")
    print(f"profile:      {opts.profile}")
    print(f"debug folder: {opts.debug_path() if opts.debug else '(off; TREBUCHET_DEBUG=1)'}")
    return status


def _torch_version() -> str:
    import torch

    return torch.__version__


def _triton() -> str:
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return "not installed (pip install trebuchet[triton])"
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    from .codegen.triton.launch import interpreting

    interp = "TRITON_INTERPRET=1 (interpreter)" if interpreting() else "TRITON_INTERPRET unset"
    return f"installed; {gpu}; {interp}"


def check_compiler(opts: Options) -> tuple[bool, str]:
    """Compile and link a tiny OpenMP shared library with the configured compiler."""
    cc = opts.compiler()
    path = shutil.which(cc)
    if path is None:
        return False, "NOT FOUND: install a C compiler (e.g. gcc) or set CC to one"
    with tempfile.TemporaryDirectory(prefix="trebuchet-cc-") as tmp:
        src = pathlib.Path(tmp) / "t.c"
        src.write_text("int trebuchet_check(int x) {\n  int s = 0;\n#pragma omp parallel for reduction(+:s)\n"
                       "  for (int i = 0; i < x; i++) s += i;\n  return s;\n}\n")
        cmd = [cc, "-shared", "-fPIC", "-fopenmp", str(src), "-o", str(pathlib.Path(tmp) / "t.so")]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"{path}: FAILED to run: {e}"
        if r.returncode != 0:
            first = (r.stderr or r.stdout).strip().splitlines()[:1]
            return False, (f"{path}: FAILED to compile and link a test file with OpenMP "
                           f"(exit {r.returncode}{': ' + first[0] if first else ''}); "
                           "set CC to a working C compiler")
    return True, f"{path}, compiles and links with OpenMP"


_KINDS = (("kernels", "compiled kernel libraries"), ("graph", "compiled graphs"),
          ("temp", "unfinished or stale temporaries"))


def clear_cache(path: pathlib.Path) -> int:
    """Remove Trebuchet's entries from the cache folder (and nothing else), say what was
    done; 1 when something of ours could not be removed."""
    if not path.exists():
        print(f"no cache folder at {path}: nothing to remove")
        return 0
    if not path.is_dir():
        print(f"error: the cache folder {path} is not a folder; left it alone", file=sys.stderr)
        return 1
    try:
        next(path.iterdir(), None)
    except OSError as e:
        print(f"error: cannot read the cache folder {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    report = cache_files.clear(path)
    counts = [f"{report.removed[k]} {label}" for k, label in _KINDS if report.removed.get(k)]
    print(f"removed {', '.join(counts) or 'no entries'} ({_size(report.bytes)}) from {path}")
    if report.kept:
        shown = ", ".join(str(p.relative_to(path)) for p in report.kept[:10])
        more = f" and {len(report.kept) - 10} more" if len(report.kept) > 10 else ""
        print(f"left in place (not Trebuchet's): {shown}{more}")
    for failed, why in report.failed:
        print(f"error: could not remove {failed}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
