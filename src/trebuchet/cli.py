"""Command line: `trebuchet demo [--profile] | info | clear-cache` (also `python -m trebuchet ...`)."""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

from .config import Options
from .runtime import cache_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trebuchet", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    demo_parser = sub.add_parser("demo", help="compile a small random model, check it, time it (default)")
    demo_parser.add_argument("--profile", action="store_true",
                             help="print the time of every kernel and extern afterwards")
    sub.add_parser("info", help="show the settings in effect (cache folder, compiler, target)")
    sub.add_parser("clear-cache", help="delete Trebuchet's entries (compiled kernels and graphs) "
                                      "from the cache folder; other files stay")
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
    return clear_cache(opts.cache_path())


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
