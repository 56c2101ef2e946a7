"""Command line: `trebuchet demo [--profile] | info | clear-cache` (also `python -m trebuchet ...`)."""
from __future__ import annotations

import argparse
import shutil
import sys

from .config import Options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trebuchet", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    demo_parser = sub.add_parser("demo", help="compile a small random model, check it, time it (default)")
    demo_parser.add_argument("--profile", action="store_true",
                             help="print the time of every kernel and extern afterwards")
    sub.add_parser("info", help="show the settings in effect (cache folder, compiler, target)")
    sub.add_parser("clear-cache", help="delete the cache folder (compiled kernels and graphs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command in (None, "demo"):
        from .demo import main as demo
        return demo(profile=getattr(args, "profile", False))
    opts = Options.from_env()
    if args.command == "info":
        compiler = shutil.which(opts.compiler()) or "NOT FOUND"
        print(f"target:       {opts.resolved_target()}")
        print(f"cache folder: {opts.cache_path()}")
        print(f"C compiler:   {opts.compiler()} ({compiler})")
        print(f"graph cache:  {'on' if opts.graph_cache else 'off (TREBUCHET_GRAPH_CACHE=0)'}")
        print(f"strict:       {opts.strict}")
        print(f"profile:      {opts.profile}")
        print(f"debug folder: {opts.debug_path() if opts.debug else '(off; TREBUCHET_DEBUG=1)'}")
        return 0
    path = opts.cache_path()
    shutil.rmtree(path, ignore_errors=True)
    print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
