"""The sha256 of every C translation unit a set of test files generates: the C target's
output as a regression reference while shared parts of the compiler change.

Runs the chosen test files in this process (pytest, one worker) with a hook on the C
build step (`runtime/cbuild.build`, which every compiled graph's source passes
through, graph-cache hits included) that records (test id, n-th unit of that test,
sha256 of the source). Writes the sorted list to a file; `--compare FILE` compares with
an earlier list and reports every unit that differs, appeared or disappeared (exit 1).

    PYTHONPATH=$PWD/src python scripts/c_hashes.py --out /tmp/c_hashes.txt
    PYTHONPATH=$PWD/src python scripts/c_hashes.py --compare /tmp/c_hashes.txt

A second hash per unit leaves out the `// from:` comment lines (the user's source
lines, which move when a test file is edited), so a difference that is only there is
told apart. `--dump DIR` also writes each unit's source, to diff two runs.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Together these generate every kernel shape (pointwise, strip-mined pointwise, row
# reductions with and without a scratch row, column reductions with chunks, scalar
# reductions, error flags, de-duplicated kernels) and every primitive: 673 units in
# about 5 minutes on 2 cores (2026-11-29).
DEFAULT_FILES = [
    "tests/test_ir.py", "tests/test_fusion.py", "tests/test_column_reduction.py",
    "tests/test_buffer_reuse.py", "tests/test_extremal.py", "tests/test_index_put.py",
    "tests/test_scatter.py", "tests/test_attention.py", "tests/test_models.py",
    "tests/test_provenance.py", "tests/test_aliasing.py", "tests/test_profile.py",
    "tests/test_opinfo.py", "tests/test_dynamic_shapes.py", "tests/test_generation.py",
    "tests/test_c_math.py", "tests/test_graph_cache.py", "tests/test_fresh_outputs.py",
    "tests/test_runtime.py",
]


class Recorder:
    """pytest plugin: knows the running test and records each unit the C build receives."""

    def __init__(self, dump: pathlib.Path | None) -> None:
        self.test = "<collection>"
        self.counts: dict[str, int] = {}
        self.records: list[tuple[str, int, str, str]] = []
        self.dump = dump

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.test = item.nodeid

    def pytest_configure(self, config: pytest.Config) -> None:
        from trebuchet.runtime import cbuild

        original = cbuild.build

        def build(source: str, *args, **kwargs):  # noqa: ANN202 - same as cbuild.build
            self.record(source)
            return original(source, *args, **kwargs)

        cbuild.build = build

    def record(self, source: str) -> None:
        n = self.counts.get(self.test, 0)
        self.counts[self.test] = n + 1
        exact = hashlib.sha256(source.encode()).hexdigest()
        kept = "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith("// from:"))
        self.records.append((self.test, n, exact, hashlib.sha256(kept.encode()).hexdigest()))
        if self.dump is not None:
            name = f"{self.test}#{n}".replace("/", "_").replace(":", "_")[-200:]
            (self.dump / f"{name}.c").write_text(source)


def read(path: pathlib.Path) -> dict[tuple[str, int], tuple[str, str]]:
    out = {}
    for line in path.read_text().splitlines():
        test, n, exact, kept = line.rsplit(" ", 3)
        out[(test, int(n))] = (exact, kept)
    return out


def compare(old: dict, new: dict) -> int:
    """Print the differences; the number of them."""
    bad = 0
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        bad += 1
        if a is None or b is None:
            print(f"{'new' if a is None else 'missing'}: {key[0]} #{key[1]}")
        elif a[1] == b[1]:
            print(f"differs only in '// from:' lines: {key[0]} #{key[1]}")
        else:
            print(f"differs: {key[0]} #{key[1]}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, help="write the hash list here")
    ap.add_argument("--compare", type=pathlib.Path, help="compare with this hash list")
    ap.add_argument("--dump", type=pathlib.Path, help="write each unit's source into this folder")
    ap.add_argument("files", nargs="*", help=f"test files (default: {' '.join(DEFAULT_FILES)})")
    args = ap.parse_args()
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.dump)
    files = [str(ROOT / f) for f in (args.files or DEFAULT_FILES)]
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-n", "0", "--rootdir", str(ROOT), *files],
                       plugins=[rec])
    lines = sorted(f"{t} {n} {exact} {kept}" for t, n, exact, kept in rec.records)
    if args.out:
        args.out.write_text("".join(ln + "\n" for ln in lines))
    print(f"{len(lines)} C translation units hashed over {len(rec.counts)} tests; pytest exit {int(code)}")
    if args.compare:
        new = {(t, n): (e, k) for t, n, e, k in rec.records}
        bad = compare(read(args.compare), new)
        print(f"{bad} differences from {args.compare}" if bad else f"identical to {args.compare}")
        return 1 if bad or code else 0
    return int(code != 0)


if __name__ == "__main__":
    sys.exit(main())
