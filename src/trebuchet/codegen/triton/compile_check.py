"""The real-compiler check without a GPU: every `@triton.jit` kernel of a generated Triton
module compiled through Triton's own pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin)
for sm_90, with its register and spill counts from the wheel's ptxas and whether its PTX
uses 128-bit vector loads and stores (`ld.global.v4`, `st.global.v4`).

Data flow: a kernel launch is recorded as a `Launch` (the module file, the jit function,
its arguments described as plain data, the constexprs and options the launch function
chose) either while graphs compiled with target="triton" run (`capture()`, which wraps
the target's loader; `execute=False` records without running the interpreter) or from a
module and sizes (`module_launches`). `compile_sm90` compiles them, de-duplicated, in
a child process that imports the modules with TRITON_INTERPRET unset (so the kernels and
the prelude's helpers are real JIT functions) and returns a `KernelReport` per launch.

The signature is the one the JIT would build at a real launch: pointers typed by the
tensor's dtype with a divisibility-by-16 attribute when the data pointer is 16-byte aligned,
integers i32/i64 (u64 past 2^63) with the divisibility attribute when a multiple of 16 and
the value 1 a constexpr, except parameters in `do_not_specialize` (sizes), which get
neither. Works with the ASTSource forms of Triton 3.x (named signature with `constexprs=`;
`constants=` where that is the keyword); tests/test_triton_sm90.py --full passes with
triton 3.6.0 and 3.9.0 (both wheels carry `ptxas-blackwell`, which is used).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Iterator

import torch

ARCH = 90              # sm_90 (H100/H200); Triton emits sm_90a PTX for it
WARP_SIZE = 32
V4_LOAD = re.compile(r"\bld\.global\.(?:[\w:]+\.)*v4\.")
V4_STORE = re.compile(r"\bst\.global\.(?:[\w:]+\.)*v4\.")
ANY_LOAD = re.compile(r"\bld\.global\.")
PTR_TYPES = {"bool": "u1", "float16": "fp16", "bfloat16": "bf16", "float32": "fp32",
             "float64": "fp64", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
             "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64"}


@dataclasses.dataclass
class Launch:
    """One launch of a jit kernel, as plain data. `args` describe the positional
    arguments: ["ptr", dtype, aligned] for a tensor, ["int", v], ["float", v],
    ["bool", v], ["none"]; `kwargs` are constexprs and launch options (num_warps, ...)."""

    module_path: str
    function: str
    args: list[list[Any]]
    kwargs: dict[str, Any]
    grid: list[int] = dataclasses.field(default_factory=list)
    label: str = ""        # who launched it (a test or case name)


@dataclasses.dataclass
class KernelReport:
    """What the sm_90 compile of one launch gave (error set when it failed)."""

    function: str
    module: str
    ops: str                       # the kernel's comment: "kernelN: aten..."
    label: str = ""
    signature: str = ""
    constexprs: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_warps: int = 0
    registers: int | None = None
    spill_bytes: int | None = None
    v4_loads: int = 0
    v4_stores: int = 0
    global_loads: int = 0
    shared_bytes: int = 0
    compile_seconds: float = 0.0
    cached: bool = False           # an identical kernel of an earlier launch was reused
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------- describing arguments

def describe_arg(value: Any) -> list[Any]:
    """A launch argument as plain data (what the JIT's specialization looks at)."""
    if isinstance(value, torch.Tensor):
        return ["ptr", str(value.dtype).split(".")[-1], value.data_ptr() % 16 == 0]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", value]
    if value is None:
        return ["none"]
    if hasattr(value, "dtype") and hasattr(value, "data_ptr"):   # an error-flag wrapper
        return ["ptr", str(value.dtype).split(".")[-1], value.data_ptr() % 16 == 0]
    raise TypeError(f"cannot describe a kernel argument of type {type(value).__name__}")


def _plain(value: Any) -> Any:
    """A constexpr or option value made JSON-able (triton dtypes and constexprs unwrapped)."""
    value = getattr(value, "value", value) if type(value).__name__ == "constexpr" else value
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _grid(grid: Any, args: tuple, kwargs: dict) -> list[int]:
    if callable(grid):
        try:
            grid = grid(kwargs)
        except Exception:       # noqa: BLE001 - a grid lambda over meta we cannot evaluate
            return []
    return [int(g) for g in grid] if isinstance(grid, (tuple, list)) else [int(grid)]


def _is_jit(obj: Any) -> bool:
    return type(obj).__name__ in ("JITFunction", "InterpretedFunction") and hasattr(obj, "fn")


class _Recorder:
    """Stands in for a module's jit kernel: `kernel[grid](*args, **kwargs)` records the
    launch, then runs the kernel (or not, when `execute` is off)."""

    def __init__(self, jit: Any, module_path: str, name: str, sink: list[Launch],
                 label: Callable[[], str], execute: Callable[[], bool]) -> None:
        self.jit, self.module_path, self.name, self.sink = jit, module_path, name, sink
        self.label, self.execute = label, execute

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        def launch(*args: Any, **kwargs: Any) -> Any:
            self.sink.append(Launch(self.module_path, self.name, [describe_arg(a) for a in args],
                                    {k: _plain(v) for k, v in kwargs.items()},
                                    _grid(grid, args, kwargs), self.label()))
            if self.execute():
                return self.jit[grid](*args, **kwargs)
            return None
        return launch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jit, name)


def _patch_module(module: Any, sink: list[Launch], label: Callable[[], str],
                  execute: Callable[[], bool], undo: list[Callable[[], None]]) -> None:
    """Replace the module's own jit kernels (not the prelude's helpers) by recorders."""
    path = getattr(module, "__file__", "") or ""
    for name, obj in list(vars(module).items()):
        if _is_jit(obj) and getattr(obj.fn, "__module__", None) == module.__name__:
            setattr(module, name, _Recorder(obj, path, name, sink, label, execute))
            undo.append(lambda n=name, o=obj: setattr(module, n, o))


@contextlib.contextmanager
def capture(execute: bool = True) -> Iterator[list[Launch]]:
    """Record every Triton kernel launch of graphs loaded (built or found in a cache) by
    the Triton target while the block runs. With `execute=False` kernels are not run (the
    results are garbage, so a graph whose later steps index with computed values can fail:
    for collecting launches of large shapes cheaply). `capture_case` labels the entries
    and can change `execute` for a block."""
    from . import TARGET
    sink: list[Launch] = []
    undo: list[Callable[[], None]] = []
    original = TARGET.load

    def load(code: Any, options: Any) -> dict[str, Callable]:
        callables = original(code, options)
        module = callables.get("_module")
        if module is not None and not any(isinstance(v, _Recorder) for v in vars(module).values()):
            _patch_module(module, sink, lambda: _STATE["label"], lambda: _STATE["execute"], undo)
        return callables

    TARGET.load = load                      # type: ignore[method-assign]
    old = _STATE["execute"]
    _STATE["execute"] = execute
    try:
        yield sink
    finally:
        _STATE["execute"] = old
        del TARGET.load                     # back to the class's method
        for fn in reversed(undo):
            fn()


_STATE: dict[str, Any] = {"label": "", "execute": True}


@contextlib.contextmanager
def capture_case(label: str, execute: bool | None = None) -> Iterator[None]:
    """Label the launches recorded inside the block (a test case's name); `execute`, when
    given, says whether its kernels run."""
    old = dict(_STATE)
    _STATE["label"] = label
    if execute is not None:
        _STATE["execute"] = execute
    try:
        yield
    finally:
        _STATE.update(old)


def module_launches(module: Any, calls: dict[str, tuple], label: str = "") -> list[Launch]:
    """The launches a module's launch functions make for the given arguments (kernel name
    -> its arguments: tensors, possibly empty, and sizes), without running a kernel: the
    block sizes and warps its launcher picks for those sizes."""
    sink: list[Launch] = []
    undo: list[Callable[[], None]] = []
    _patch_module(module, sink, lambda: label, lambda: False, undo)
    try:
        for name, args in calls.items():
            getattr(module, name)(*args)
    finally:
        for fn in reversed(undo):
            fn()
    return sink


# ---------------------------------------------------------------- compiling (parent side)

def kernel_comment(source: str, function: str) -> str:
    """The `# kernelN: aten...` comment above `def function(` in the module source."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"def {function}("):
            j = i - 1
            while j >= 0 and (lines[j].startswith("@") or lines[j].startswith("#")):
                j -= 1
            comments = [s[2:] for s in lines[j + 1:i] if s.startswith("# ")]
            return comments[0] if comments else ""
    return ""


def kernel_key(source: str, function: str, args: list, kwargs: dict) -> str:
    """What compiling a launch depends on, with the kernel's name and buffer names (`bufN`,
    `inN`, `v_bufN`) renamed in order of appearance in its body and the parameters paired
    with their arguments in that order: kernels of repeated layers differ only in those
    names (and the order of their parameters), and compile alike."""
    m = re.search(rf"^def {re.escape(function)}\((.*?)\):\n(.*?)(?=^\S)", source + "\nEND",
                  re.S | re.M)
    if m is None:
        return json.dumps([source, function, args, kwargs], sort_keys=True, default=str)
    params = [p.split(":")[0].strip() for p in m.group(1).split(",")]
    names: dict[str, str] = {}
    body = re.sub(r"\b(?:v_)?(?:buf|in)\d+\b",
                  lambda t: names.setdefault(t.group(0), f"b{len(names)}"), m.group(2))
    pairs = sorted((names.get(p, p), args[i] if i < len(args) else None)
                   for i, p in enumerate(params))
    return json.dumps([body, pairs, kwargs], sort_keys=True, default=str)


def ptxas_path() -> str | None:
    """The ptxas inside the triton wheel that reads its PTX (`ptxas-blackwell` where the
    wheel has both: the plain one is too old for Triton 3.9's PTX), or TRITON_PTXAS_PATH."""
    env = os.environ.get("TRITON_PTXAS_BLACKWELL_PATH") or os.environ.get("TRITON_PTXAS_PATH")
    if env and os.path.isfile(env):
        return env
    try:
        import importlib.util
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = pathlib.Path(list(spec.submodule_search_locations)[0]) / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (bindir / name).is_file() and os.access(bindir / name, os.X_OK):
            return str(bindir / name)
    return None


def available() -> str | None:
    """None when the check can run here, else why not (triton or its ptxas missing)."""
    try:
        import importlib.util
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install trebuchet[triton])"
    except (ImportError, ValueError):
        return "triton is not importable"
    if ptxas_path() is None:
        return "the triton wheel has no ptxas (backends/nvidia/bin/ptxas-blackwell)"
    return None


def compile_sm90(launches: list[Launch], timeout: float | None = None) -> list[KernelReport]:
    """Compile each launch's kernel for sm_90 (identical kernels once) in a child process
    without TRITON_INTERPRET; one report per launch, in order."""
    sources: dict[str, str] = {}
    jobs: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    which: list[int] = []
    for ln in launches:
        if ln.module_path not in sources:
            sources[ln.module_path] = pathlib.Path(ln.module_path).read_text()
        key = kernel_key(sources[ln.module_path], ln.function, ln.args, ln.kwargs)
        if key not in index:
            index[key] = len(jobs)
            jobs.append(dataclasses.asdict(ln))
        which.append(index[key])
    results = _run_child(jobs, timeout or 120 + 20 * len(jobs)) if jobs else []
    reports, seen = [], set()
    for ln, j in zip(launches, which):
        r = dict(results[j])
        r["cached"] = j in seen
        seen.add(j)
        reports.append(KernelReport(
            function=ln.function, module=pathlib.Path(ln.module_path).stem,
            ops=kernel_comment(sources[ln.module_path], ln.function), label=ln.label, **r))
    return reports


def _run_child(jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    src_root = str(pathlib.Path(__file__).resolve().parents[3])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([src_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "0")      # silence 3.9's notice; launches say
    with tempfile.TemporaryDirectory(prefix="trebuchet-sm90-") as tmp:
        inp, out = pathlib.Path(tmp) / "jobs.json", pathlib.Path(tmp) / "results.json"
        inp.write_text(json.dumps(jobs))
        env["TRITON_CACHE_DIR"] = str(pathlib.Path(tmp) / "cache")   # cold: honest times
        proc = subprocess.run([sys.executable, "-m", "trebuchet.codegen.triton.compile_check",
                               str(inp), str(out)], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"the sm_90 compile worker failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


# ---------------------------------------------------------------- compiling (child side)

def _signature(fn: Any, launch: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) by name, as the JIT builds them."""
    names = list(fn.arg_names)
    values: dict[str, Any] = dict(zip(names, launch["args"]))
    options = {}
    for k, v in launch["kwargs"].items():
        if k in names:
            values[k] = ["constexpr", v] if not isinstance(v, list) else v
        else:
            options[k] = v
    no_spec = set()
    no_align = set()
    for i, p in enumerate(getattr(fn, "params", [])):
        if getattr(p, "do_not_specialize", False):
            no_spec.add(names[i])
        if getattr(p, "do_not_specialize_on_alignment", False):
            no_align.add(names[i])
    constexpr_params = {names[i] for i, p in enumerate(getattr(fn, "params", []))
                        if getattr(p, "is_constexpr", False)}
    sig: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    attrs: dict[tuple, list] = {}
    div16 = [["tt.divisibility", 16]]
    for i, name in enumerate(names):
        if name not in values:
            raise TypeError(f"{fn.__name__}: no value for parameter {name!r}")
        kind, *rest = values[name]
        if name in constexpr_params or kind in ("none", "constexpr"):
            sig[name], constexprs[name] = "constexpr", rest[0] if rest else None
            continue
        if kind == "ptr":
            ty, div = signature_of(kind, rest[0], aligned=rest[1] and name not in no_align)
        else:
            ty, div = signature_of(kind, rest[0], specialize=name not in no_spec)
        sig[name] = ty
        if ty == "constexpr":
            constexprs[name] = rest[0]
        elif div:
            attrs[(i,)] = div16
    return sig, constexprs, attrs, options


def signature_of(kind: str, value: Any, *, aligned: bool = False, specialize: bool = True
                 ) -> tuple[str, bool]:
    """(Triton type, divisible by 16) of one described argument, as the JIT specializes it:
    a pointer by its dtype (divisible when aligned), an int as i32/i64/u64 by its value
    (the value 1 a constexpr, divisible when a multiple of 16) unless not specialized."""
    if kind == "ptr":
        try:
            from triton._utils import type_canonicalisation_dict as canon
        except ImportError:         # the names Triton 3.x gives torch's dtypes
            canon = PTR_TYPES
        return "*" + canon[value], aligned
    if kind == "bool":
        return "u1", False
    if kind == "float":
        return "fp32", False
    if kind != "int":
        raise TypeError(f"unknown argument kind {kind!r}")
    if value == 1 and specialize:
        return "constexpr", False
    ty = "i32" if -2 ** 31 <= value < 2 ** 31 else "u64" if value >= 2 ** 63 else "i64"
    return ty, specialize and value % 16 == 0


def _ast_source(fn: Any, sig: dict, constexprs: dict, attrs: dict) -> Any:
    """triton.compiler.ASTSource in the form this Triton takes."""
    import inspect

    from triton.compiler import ASTSource
    params = inspect.signature(ASTSource.__init__).parameters
    if "constexprs" in params:
        return ASTSource(fn, sig, constexprs=constexprs, attrs=attrs)
    return ASTSource(fn, sig, constants=constexprs, attrs=attrs)   # older keyword


def _ptxas_report(ptx: str, ptxas: str, tmp: pathlib.Path) -> tuple[int | None, int | None, str]:
    """(registers, spill bytes) from `ptxas -arch=sm_90a -v`."""
    path = tmp / "kernel.ptx"
    path.write_text(ptx)
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M)
    proc = subprocess.run([ptxas, f"-arch={arch.group(1) if arch else 'sm_90a'}", "-v",
                           str(path), "-o", str(tmp / "kernel.cubin")],
                          capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return None, None, f"ptxas failed: {text.strip()[-800:]}"
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", text)]
    spills = [int(a) + int(b) for a, b in
              re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
    return (max(regs) if regs else None), sum(spills), ""


def _compile_job(job: dict[str, Any], modules: dict[str, Any], ptxas: str,
                 tmp: pathlib.Path) -> dict[str, Any]:
    import importlib.util
    import time

    import triton
    from triton.backends.compiler import GPUTarget
    path = job["module_path"]
    if path not in modules:
        name = "trebuchet_sm90_" + re.sub(r"\W", "_", pathlib.Path(path).stem)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules[path] = module
    fn = getattr(modules[path], job["function"])
    sig, constexprs, attrs, options = _signature(fn, job)
    options = {k: v for k, v in options.items() if k in ("num_warps", "num_stages", "num_ctas",
                                                         "enable_fp_fusion", "maxnreg")}
    out: dict[str, Any] = {"signature": ", ".join(f"{k}: {v}" for k, v in sig.items()),
                           "constexprs": {k: _plain(v) for k, v in constexprs.items()},
                           "num_warps": int(options.get("num_warps", 4))}
    start = time.perf_counter()
    compiled = triton.compile(_ast_source(fn, sig, constexprs, attrs),
                              target=GPUTarget("cuda", ARCH, WARP_SIZE), options=options)
    out["compile_seconds"] = time.perf_counter() - start
    ptx = compiled.asm["ptx"]
    out["v4_loads"] = len(V4_LOAD.findall(ptx))
    out["v4_stores"] = len(V4_STORE.findall(ptx))
    out["global_loads"] = len(ANY_LOAD.findall(ptx))
    out["shared_bytes"] = int(getattr(compiled.metadata, "shared", 0) or 0)
    regs, spills, err = _ptxas_report(ptx, ptxas, tmp)
    out.update(registers=regs, spill_bytes=spills)
    if err:
        out["error"] = err
    return out


def _worker(inp: str, outp: str) -> None:
    jobs = json.loads(pathlib.Path(inp).read_text())
    ptxas = ptxas_path()
    modules: dict[str, Any] = {}
    results = []
    with tempfile.TemporaryDirectory(prefix="trebuchet-ptxas-") as tmp:
        for job in jobs:
            try:
                if ptxas is None:
                    raise RuntimeError("no ptxas in the triton wheel")
                results.append(_compile_job(job, modules, ptxas, pathlib.Path(tmp)))
            except Exception as e:        # noqa: BLE001 - reported per kernel
                msg = f"{type(e).__name__}: {e}"
                results.append({"error": msg[:4000]})
    pathlib.Path(outp).write_text(json.dumps(results))


def triton_version() -> str:
    """The installed Triton's version, without importing it in this process."""
    try:
        from importlib.metadata import version
        return version("triton")
    except Exception:       # noqa: BLE001
        return "not installed"


__all__ = ["Launch", "KernelReport", "capture", "capture_case", "module_launches",
           "compile_sm90", "available", "ptxas_path", "signature_of", "kernel_comment", "describe_arg",
           "triton_version", "ARCH"]

if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
