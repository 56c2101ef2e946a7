"""Compile a C translation unit into a shared library, cached on disk.

The cache key is a hash of the source, compiler, flags and the CPU (libraries are
built with -march=native, so a cache folder shared between machines must not hand
one CPU's library to another). An entry is the folder `<root>/<key[:2]>/<key>/`
holding kernels.so, kernels.sha256 and kernels.c. It is built in a temporary folder
`<root>/.<key>.<random>.tmp` that is renamed into place (atomic), so processes compiling
the same graph at once are safe and a failed build leaves no entry; each entry carries
a checksum, and an entry that fails it (truncated, corrupted) is rebuilt. A read-only
or unusable cache folder falls back to a private temporary folder, removed at exit.
`cache_items` lists these files for `trebuchet clear-cache`.

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

from ..errors import TrebuchetCompileError, TrebuchetWarning
from ..warn import warn_user
from .cache_files import CacheItem, children, is_dir, is_file, matching

# -fwrapv: signed integer overflow wraps, as it does in eager (in plain C it is undefined,
# and GCC may then fold `x + 1 > x` or saturate); it measured within noise on bench.py.
BASE_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno",
              "-fno-trapping-math", "-fwrapv", "-std=gnu11", "-w")
# GCC only (clang rejects some): these loop passes of -O3 took 13-18% of GCC 12's time on
# training graphs' units and changed no benchmark's speed (MobileNetV3, ResNet-18 and ViT
# steps, bfloat16 BERT; each timed against -O3 alone in one process).
GCC_FLAGS = ("-fno-tree-loop-distribution", "-fno-split-loops", "-fno-unswitch-loops",
             "-fno-peel-loops", "-fno-version-loops-for-strides")

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
            _remove_at_exit(_fallback_dir)                       # this folder only
            warn_user(f"trebuchet: cache folder {path} is not writable ({e.strerror}); "
                      f"using {_fallback_dir} for this process", TrebuchetWarning)
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


@functools.cache
def is_gcc(cc: str) -> bool:
    """Whether `cc` is GCC (clang also answers to gcc-style options, but not to all)."""
    try:
        out = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Free Software Foundation" in out and "clang" not in out.lower()


def build(source: str, cc: str, extra_flags: tuple[str, ...], cache_root: pathlib.Path) -> pathlib.Path:
    """The path of a shared library built from `source` (from the cache when present)."""
    cc = find_compiler(cc)
    flags = BASE_FLAGS + (GCC_FLAGS if is_gcc(cc) else ()) + tuple(extra_flags)
    key = hashlib.sha256("\0".join((source, cc, *flags, cpu_id())).encode()).hexdigest()
    root = _usable_dir(cache_root)
    entry = root / key[:2] / key
    lib = entry / "kernels.so"
    digest = entry / "kernels.sha256"
    if lib.exists() and digest.exists() and _checksum(lib) == digest.read_text().strip():
        return lib
    # Build in a temporary folder next to the entries and rename it into place, so a
    # failed or interrupted build leaves no entry behind (clear-cache removes the temp).
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
    try:
        src = tmp / "kernels.c"
        src.write_text(source)
        out = tmp / "kernels.so"
        units = split_units(source, _compile_jobs())
        if len(units) == 1:
            _run([*cc.split(), *flags, str(src), "-o", str(out), *LIBS])
        else:
            objects = _compile_units(units, cc, flags, tmp)
            _run([*cc.split(), *flags, *map(str, objects), "-o", str(out), *LIBS])
            for obj in objects:
                obj.unlink()
        (tmp / "kernels.sha256").write_text(_checksum(out))
        for unit in tmp.glob("unit*.c"):
            unit.unlink()
        _install(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


def _install(tmp: pathlib.Path, entry: pathlib.Path) -> None:
    """Move the built files in `tmp` to `entry`: the whole folder at once when there is
    no entry (or an empty one), else file by file over a damaged entry (each atomic;
    the library before its checksum, so a reader never pairs an old checksum with it
    and accepts a wrong library)."""
    entry.parent.mkdir(exist_ok=True)
    try:
        os.rename(tmp, entry)
        return
    except OSError:
        if not entry.is_dir():
            raise
    for name in ENTRY_FILES:
        os.replace(tmp / name, entry / name)


# The files of one entry `<root>/<key[:2]>/<key>/`, in the order they are installed.
ENTRY_FILES = ("kernels.so", "kernels.sha256", "kernels.c")
_KEY = re.compile(r"[0-9a-f]{64}")
_TEMP = re.compile(r"\.([0-9a-f]{64})\.[a-z0-9_]{8}\.tmp")     # mkdtemp in build()
_TEMP_FILES = re.compile(r"kernels\.(c|so|sha256)|digest|unit\d+\.[co]")
_OLD_TEMP = re.compile(r"tmp[a-z0-9_]{8}")     # a build folder inside the entry (earlier layout)
_PROBE = re.compile(r"\.probe\d+")


def cache_items(root: pathlib.Path) -> list[CacheItem]:
    """This module's files in the cache folder `root`, recognised by their exact names:
    entries, unfinished builds (temps) and write probes. Nothing else is listed."""
    items: list[CacheItem] = []
    for child in children(root):
        name = child.name
        if _PROBE.fullmatch(name) and is_file(child):
            items.append(CacheItem("temp", [child], []))
        elif _TEMP.fullmatch(name) and is_dir(child):
            items.append(CacheItem("temp", matching(child, _TEMP_FILES), [child]))
        elif re.fullmatch(r"[0-9a-f]{2}", name) and is_dir(child):
            for entry in children(child):
                if not (_KEY.fullmatch(entry.name) and entry.name[:2] == name and is_dir(entry)):
                    continue
                files, dirs = matching(entry, re.compile("|".join(map(re.escape, ENTRY_FILES)))), []
                for old in children(entry):
                    if _OLD_TEMP.fullmatch(old.name) and is_dir(old):
                        files += matching(old, _TEMP_FILES)
                        dirs.append(old)
                kind = "kernels" if any(f.name == "kernels.so" for f in files) else "temp"
                items.append(CacheItem(kind, files, [*dirs, entry]))
    return items


# A translation unit this large (bytes) is split to compile on several cores at once. The
# prelude (~19 kB) each unit repeats costs GCC ~0.02 s, so a unit with two kernels or more
# already gains: on two cores 33-45 kB units built in 0.13-0.18 s split, 0.20-0.32 s whole,
# 25-28 kB ones in 0.07-0.10 s against 0.09-0.13 s (bf16 BERT's graphs, cold cache).
SPLIT_BYTES = 20_000
# Every kernel's C starts with its "// kernelN: ..." comment (codegen/c/kernels.py).
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
        _remove_at_exit(_private_dir)
    # the process id in the name: a forked child shares the folder, and must not write
    # over a library its parent has loaded
    copy = _private_dir / f"{os.getpid()}_{next(_copies)}_{lib.name}"
    shutil.copyfile(lib, copy)
    return ctypes.CDLL(str(copy))


_private_dir: pathlib.Path | None = None
_copies = itertools.count()


def _remove_at_exit(folder: pathlib.Path) -> None:
    """Remove `folder` when this process exits (not when a child forked from it does:
    the folder is still its parent's)."""
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, True))
