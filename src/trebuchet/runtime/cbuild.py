"""Compile a C translation unit into a shared library, cached on disk.

The cache key is a hash of the source, compiler, flags and the CPU (libraries are
built with -march=native, so a cache folder shared between machines must not hand
one CPU's library to another). Entries are written
to a temporary file and renamed into place (atomic), so processes compiling
the same graph at once are safe; each entry carries a checksum, and an entry
that fails it (truncated, corrupted) is rebuilt. A read-only or unusable cache
folder falls back to a private temporary folder.

A large source (a training step's backward graph) is split into one translation unit
per core, whole kernels each with the prelude, compiled at once and linked into one
library: still one build per graph, in about half the time on two cores.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import itertools
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile
import warnings

from ..errors import TrebuchetCompileError, TrebuchetWarning

BASE_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno",
              "-fno-trapping-math", "-std=gnu11", "-w")

LIBS = ("-lmvec", "-lm") if os.path.exists("/usr/lib/x86_64-linux-gnu/libmvec.so") else ("-lm",)

_fallback_dir: pathlib.Path | None = None


def _usable_dir(path: pathlib.Path) -> pathlib.Path:
    global _fallback_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return path
    except OSError as e:
        if _fallback_dir is None:
            _fallback_dir = pathlib.Path(tempfile.mkdtemp(prefix="trebuchet-cache-"))
            warnings.warn(f"trebuchet: cache folder {path} is not writable ({e.strerror}); "
                          f"using {_fallback_dir} for this process", TrebuchetWarning,
                          stacklevel=2)
        return _fallback_dir


@functools.cache
def cpu_id() -> str:
    """The CPU model and feature flags (what -march=native compiles for)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + " " + platform.processor()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(lines))      # one of each distinct line


def find_compiler(cc: str) -> str:
    exe = shutil.which(cc.split()[0]) if cc else None
    if exe is None:
        raise TrebuchetCompileError(
            f"no C compiler: '{cc}' was not found (set CC to a C compiler such as gcc or clang, "
            "or use target='reference')")
    return cc


def build(source: str, cc: str, extra_flags: tuple[str, ...], cache_root: pathlib.Path) -> pathlib.Path:
    """The path of a shared library built from `source` (from the cache when present)."""
    cc = find_compiler(cc)
    flags = BASE_FLAGS + tuple(extra_flags)
    key = hashlib.sha256("\0".join((source, cc, *flags, cpu_id())).encode()).hexdigest()
    root = _usable_dir(cache_root)
    entry = root / key[:2] / key
    lib = entry / "kernels.so"
    digest = entry / "kernels.sha256"
    if lib.exists() and digest.exists() and _checksum(lib) == digest.read_text().strip():
        return lib
    entry.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry) as tmp:
        src = pathlib.Path(tmp) / "kernels.c"
        src.write_text(source)
        out = pathlib.Path(tmp) / "kernels.so"
        units = split_units(source, _compile_jobs())
        if len(units) == 1:
            _run([*cc.split(), *flags, str(src), "-o", str(out), *LIBS])
        else:
            objects = _compile_units(units, cc, flags, pathlib.Path(tmp))
            _run([*cc.split(), *flags, *map(str, objects), "-o", str(out), *LIBS])
        sha = _checksum(out)
        os.replace(out, lib)                     # atomic on one filesystem
        tmp_digest = pathlib.Path(tmp) / "digest"
        tmp_digest.write_text(sha)
        os.replace(tmp_digest, digest)
        os.replace(src, entry / "kernels.c")
    return lib


# A translation unit this large (bytes) is split to compile on several cores at once.
SPLIT_BYTES = 48_000
# Every kernel's C starts with its "// kernelN: ..." comment (codegen/c.py).
_KERNEL_START = re.compile(r"\n\n(?=// kernel\d+: )")


def _compile_jobs() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        return max(1, min(4, os.cpu_count() or 1))


def split_units(source: str, jobs: int) -> list[str]:
    """The source as up to `jobs` translation units of similar size, each the prelude
    (everything before the first kernel) plus whole kernels; one unit if it is small.
    Kernels only call the prelude's static inline helpers, so the units link as one."""
    pieces = _KERNEL_START.split(source)
    if jobs < 2 or len(source) < SPLIT_BYTES or len(pieces) < 3:
        return [source]
    prelude, kernels = pieces[0], pieces[1:]
    bins: list[list[str]] = [[] for _ in range(min(jobs, len(kernels)))]
    sizes = [0] * len(bins)
    for k in sorted(kernels, key=len, reverse=True):     # largest first, to the lightest unit
        i = sizes.index(min(sizes))
        bins[i].append(k)
        sizes[i] += len(k)
    return ["\n\n".join([prelude, *b]) + "\n" for b in bins if b]


def _compile_units(units: list[str], cc: str, flags: tuple[str, ...], tmp: pathlib.Path
                   ) -> list[pathlib.Path]:
    """Compile the units to object files, all at once; raise on the first failure."""
    procs = []
    for i, unit in enumerate(units):
        src, obj = tmp / f"unit{i}.c", tmp / f"unit{i}.o"
        src.write_text(unit)
        cmd = [*cc.split(), *flags, "-c", str(src), "-o", str(obj)]
        procs.append((cmd, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)))
    failure = None
    for cmd, _, proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0 and failure is None:
            failure = (cmd, err)
    if failure is not None:
        _raise_compile_error(*failure)
    return [obj for _, obj, _ in procs]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        _raise_compile_error(cmd, proc.stderr)


def _raise_compile_error(cmd: list[str], stderr: str) -> None:
    raise TrebuchetCompileError(f"C compiler failed ({' '.join(cmd)}):\n{stderr.strip()[:4000]}")


def _checksum(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(lib: pathlib.Path) -> ctypes.CDLL:
    """Load a private copy: a cache entry rebuilt or damaged later (by this process
    or another) must not change a library that is already mapped."""
    global _private_dir
    if _private_dir is None:
        _private_dir = pathlib.Path(tempfile.mkdtemp(prefix="trebuchet-libs-"))
        atexit.register(shutil.rmtree, _private_dir, True)
    copy = _private_dir / f"{next(_copies)}_{lib.name}"
    shutil.copyfile(lib, copy)
    return ctypes.CDLL(str(copy))


_private_dir: pathlib.Path | None = None
_copies = itertools.count()
