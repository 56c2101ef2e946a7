"""The Triton target's runtime for CUDA tensors, tested without a GPU.

This torch build has no CUDA, but FakeTensorMode makes fake CUDA tensors: graphs traced
with them go through the real pipeline (device check, target choice, lowering, Triton
code generation, the wrapper), and the wrapper itself runs under the fake mode with
stand-in kernels, so what it allocates and passes is checked without running a kernel.

  * target="auto" picks the target by the graph's device; a target that does not run
    there, a graph mixing devices and a missing triton fail with messages saying so;
  * a 0-d CPU tensor meeting CUDA tensors is read by an eager op, never by a kernel;
  * the wrapper allocates on the graph's device and reads the device error flags once
    per call (earlier only before a library call that might fail on bad values);
  * the compiled launcher's specialization key, its compile cache folder, clear-cache;
  * the cudagraphs option's checks and declines (replay itself needs a GPU);
  * trebuchet.stats() by target.
What runs (CPU tensors) runs under TRITON_INTERPRET=1, as tests/test_triton.py.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pathlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

import trebuchet  # noqa: E402
# the prelude's helpers are made interpreted now, before a test imports a module without
# the interpreter (test_without_the_interpreter_...): the interpreted kernels call them
import trebuchet.codegen.triton.prelude  # noqa: E402,F401
from trebuchet.codegen.target import choose  # noqa: E402
from trebuchet.codegen.triton import launch  # noqa: E402
from trebuchet.config import Options  # noqa: E402
from trebuchet.lowering.graph import graph_device  # noqa: E402
from trebuchet.lowering.registry import LoweringError  # noqa: E402
from trebuchet.runtime import cudagraphs, pipeline  # noqa: E402
from trebuchet.runtime.wrapper import instantiate  # noqa: E402


def _trace(fn, *specs: tuple) -> tuple[torch.fx.GraphModule, list[torch.Tensor], FakeTensorMode]:
    """`fn` traced to ATen with fake tensors made from (shape, dtype, device) specs."""
    mode = FakeTensorMode()
    with mode:
        args = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype, device in specs]
    return make_fx(fn, tracing_mode="fake")(*args), args, mode


def _artifact(gm: torch.fx.GraphModule, target: str = "auto"):
    options = Options.from_env(target=target, graph_cache=False, debug=False)
    device = graph_device(gm)
    t = choose(options.target, device.type if device else None)
    return pipeline.compile_artifact(gm, options, target=t, device=device)


class Flags:
    """A stand-in for the target's error flags: counts the reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.device, self.n = None, 0

    def bind(self, device: str, n: int) -> None:
        self.device, self.n = device, n
        self.slots = [torch.zeros(1, dtype=torch.int32, device=device) for _ in range(n)]

    def take_all(self) -> list[int]:
        self.reads += 1
        return [0] * self.n


def _run_wrapper(artifact, args, mode, monkeypatch) -> tuple[tuple, dict, Flags]:
    """Run the wrapper under the fake mode with kernels that record their arguments."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    calls: dict[str, list] = {}
    kernels = {name: (lambda name: lambda *a: calls.setdefault(name, []).append(a))(name)
               for name in artifact.code.functions}
    flags = Flags()
    with mode:
        call = instantiate(artifact.wrapper, {**kernels, "kernel_error": flags})
        out = call(list(args))
    return out, calls, flags


# ---- choosing the target by device ----------------------------------------------------

def test_auto_picks_triton_for_cuda_and_c_for_cpu() -> None:
    assert choose("auto", "cuda").name == "triton" and choose("auto", "cpu").name == "c"
    assert choose("auto", None).name == "c"
    assert Options.from_env(target="auto").resolved_target("cuda") == "triton"
    assert Options.from_env(target="auto").resolved_target() == "c"
    assert choose("triton", "cpu").name == "triton"            # under TRITON_INTERPRET=1
    gm, _, _ = _trace(lambda x, y: torch.relu(x) * y, ((8, 4), torch.float32, "cuda"),
                      ((8, 4), torch.float32, "cuda"))
    trebuchet.reset()
    pipeline.compile_graph(gm, Options.from_env(graph_cache=False), "inference")
    by_target = trebuchet.stats()["by_target"]
    assert by_target["triton"]["graphs"] == 1 and by_target["triton"]["kernels"] == 1
    assert "c" not in by_target


def test_a_target_off_its_device_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(trebuchet.TrebuchetCompileError,
                       match=r"on cuda, and the 'c' target does not run there .*picks 'triton'"):
        choose("c", "cuda")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(trebuchet.TrebuchetCompileError, match=r"TRITON_INTERPRET=1\).*picks 'c'"):
        choose("triton", "cpu")
    with pytest.raises(trebuchet.TrebuchetCompileError, match="no target generates code for meta"):
        choose("auto", "meta")


def test_missing_triton_names_the_package_and_the_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, _, _ = _trace(lambda x: x * 2 + 1, ((4,), torch.float32, "cuda"))
    cpu = make_fx(lambda x: x * 2 + 1)(torch.arange(4.0))
    # `import triton` fails (TorchDynamo imports triton itself: the pipeline is called directly)
    monkeypatch.setitem(sys.modules, "triton", None)
    for name in ("auto", "triton"):
        with pytest.raises(trebuchet.TrebuchetCompileError,
                           match=r"needs the 'triton' package.*pip install trebuchet\[triton\]"):
            choose(name, "cuda")
        with pytest.raises(trebuchet.TrebuchetCompileError, match="pip install trebuchet"):
            pipeline.compile_graph(cuda, Options.from_env(target=name, graph_cache=False))
    assert choose("auto", "cpu").name == "c"                   # CPU graphs are unaffected
    out = pipeline.compile_graph(cpu, Options.from_env(graph_cache=False))([torch.arange(4.0)])
    assert torch.equal(out[0], torch.arange(4.0) * 2 + 1)


def test_graphs_mixing_devices_are_declined() -> None:
    gm, _, _ = _trace(lambda x, y: x + y.sum(), ((4,), torch.float32, "cuda"),
                      ((4,), torch.float32, "cpu"))
    with pytest.raises(LoweringError, match="several devices: cuda:0 .*, cpu"):
        graph_device(gm)


def test_a_cpu_scalar_tensor_is_read_by_an_eager_op_not_a_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def fn(x, s):
        return torch.exp(x * s) + 1

    gm, args, mode = _trace(fn, ((6, 5), torch.float32, "cuda"), ((), torch.float32, "cpu"))
    assert graph_device(gm) == torch.device("cuda", 0)
    artifact = _artifact(gm)
    assert artifact.target == "triton"
    assert artifact.op_counts["fallback"] == {"aten.mul.Tensor": 1}     # x * s: the eager op
    s_name = "in1"
    assert all(p.name != s_name for ps in artifact.code.params.values() for p in ps)
    out, calls, _ = _run_wrapper(artifact, args, mode, monkeypatch)
    assert out[0].device.type == "cuda" and out[0].shape == (6, 5)
    assert all(a.device.type == "cuda" for c in calls.values() for a in c[0]
               if isinstance(a, torch.Tensor))


# ---- the wrapper on a CUDA graph --------------------------------------------------------

def _checked(x, idx, d, w):
    a = torch.index_select(x, 0, idx) * 2            # checks indices
    h = (a.float() @ w).to(torch.int64)              # a library call (safe on bad values)
    return h // d, a                                 # checks the divisor


def test_wrapper_allocates_on_cuda_and_reads_the_error_flags_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gm, args, mode = _trace(_checked, ((6, 5), torch.int64, "cuda"), ((4,), torch.int64, "cuda"),
                            ((4, 3), torch.int64, "cuda"), ((5, 3), torch.float32, "cuda"))
    artifact = _artifact(gm)
    source = artifact.wrapper.source
    assert artifact.wrapper.device == "cuda:0" and len(artifact.wrapper.error_ops) == 2
    # one read, after the last kernel, none after each checking kernel
    assert source.count("check_kernel_errors(") == 1 and "if kernel_error" not in source
    lines = source.splitlines()
    assert lines.index(next(x for x in lines if "check_kernel_errors(" in x)) == len(lines) - 2
    assert "aten.index_select" in artifact.wrapper.error_ops[0]
    assert "floor_divide" in artifact.wrapper.error_ops[1]
    out, calls, flags = _run_wrapper(artifact, args, mode, monkeypatch)
    assert flags.reads == 1 and flags.device == "cuda:0"
    assert all(o.device == torch.device("cuda", 0) for o in out)
    # each checking kernel gets its own flag slot, on the device
    slots = [a for c in calls.values() for a in c[0] if any(a is s for s in flags.slots)]
    assert len(slots) == 2 and all(s.device.type == "cuda" for s in slots)


def test_flags_are_read_before_a_library_call_that_might_fail_on_bad_values() -> None:
    def fn(x, idx):
        a = torch.index_select(x, 0, idx) + 1
        return torch.cumsum(a, 0)                    # no lowering rule: the eager op

    gm, _, _ = _trace(fn, ((6, 5), torch.float32, "cuda"), ((4,), torch.int64, "cuda"))
    artifact = _artifact(gm)
    lines = artifact.wrapper.source.splitlines()
    check = next(i for i, x in enumerate(lines) if "check_kernel_errors(" in x)
    fn_name = lines[check + 1].split("= ")[1].split("(")[0]       # the next line calls cumsum
    assert artifact.wrapper.consts[fn_name] is torch.ops.aten.cumsum.default
    assert artifact.wrapper.source.count("check_kernel_errors(") == 1


def test_c_target_keeps_its_check_after_each_kernel() -> None:
    gm, _, _ = _trace(_checked, ((6, 5), torch.int64, "cpu"), ((4,), torch.int64, "cpu"),
                      ((4, 3), torch.int64, "cpu"), ((5, 3), torch.float32, "cpu"))
    artifact = _artifact(gm)
    assert artifact.target == "c" and artifact.wrapper.device == "cpu"
    assert artifact.wrapper.source.count("if kernel_error: raise_kernel_error(") == 2
    assert "check_kernel_errors" not in artifact.wrapper.source


def test_interpreted_triton_raises_eagers_errors_from_the_deferred_flags() -> None:
    x, w = torch.arange(30).reshape(6, 5), torch.randn(5, 3)
    good, d = torch.tensor([0, 5, 2, 2]), torch.ones(4, 3, dtype=torch.int64)
    compiled = trebuchet.compile(_checked, target="triton", strict=True)
    for got, want in zip(compiled(x, good, d, w), _checked(x, good, d, w)):
        assert torch.equal(got, want)
    with pytest.raises(IndexError, match="index out of range.*; in the kernel fusing aten.index_select"):
        compiled(x, torch.tensor([0, 6, 2, 2]), d, w)
    with pytest.raises(RuntimeError, match="ZeroDivisionError.*in the kernel fusing .*aten.div"):
        compiled(x, good, torch.zeros(4, 3, dtype=torch.int64), w)
    for got, want in zip(compiled(x, good, d, w), _checked(x, good, d, w)):
        assert torch.equal(got, want)                            # the flags were cleared


# ---- the compiled launcher --------------------------------------------------------------

class StandInJIT:
    """What CompiledLaunch uses of a JITFunction: fn, do_not_specialize, warmup, [grid]."""

    def __init__(self) -> None:
        def kernel(a, b, n, m, XBLOCK, FLAG=True):
            pass
        self.fn, self.do_not_specialize = kernel, ["n"]
        self.warmups: list[tuple] = []
        self.launches: list[tuple] = []
        self.plain: list[tuple] = []
        self.cache_dirs: list[str | None] = []

    def warmup(self, *args, grid, **kwargs):
        self.warmups.append((args, grid, kwargs))
        self.cache_dirs.append(os.environ.get("TRITON_CACHE_DIR"))
        jit = self

        class Compiled:
            def __getitem__(self, grid):
                # as triton's CompiledKernel: its launcher reads grid[0], grid[1], grid[2]
                return lambda *a: jit.launches.append(((grid[0], grid[1], grid[2]), a))
        return Compiled()

    def __getitem__(self, grid):
        return lambda *a, **k: self.plain.append((grid, a, k))


def test_compiled_launch_compiles_each_specialization_once(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    jit = StandInJIT()
    fast = launch.CompiledLaunch(jit, tmp_path / "compiled")
    base = torch.zeros(64)
    a, b = base[:32], base[32:]                    # 16-byte aligned
    fast[(4,)](a, b, 100, 32, XBLOCK=128)
    fast[(4,)](a, b, 7, 32, XBLOCK=128)            # n is not specialized: same kernel
    assert len(jit.warmups) == 1 and len(jit.launches) == 2
    assert jit.launches[0] == ((4, 1, 1), (a, b, 100, 32, 128, True))  # constexprs, defaults
    assert jit.cache_dirs == [str(tmp_path / "compiled")]
    assert "TRITON_CACHE_DIR" not in os.environ                   # only while compiling
    fast[(4,)](base[1:33], b, 7, 32, XBLOCK=128)   # unaligned pointer: another kernel
    fast[(4,)](a, b, 7, 1, XBLOCK=128)             # m == 1: another kernel
    fast[(4,)](a, b, 7, 33, XBLOCK=128)            # m not a multiple of 16: another
    fast[(4,)](a, b, 7, 32, XBLOCK=64)             # another constexpr: another
    fast[(8,)](a, b, 7, 32, XBLOCK=64)             # another grid: the same kernel
    fast[(8, 2)](a, b, 7, 32, XBLOCK=64)           # a 2-D grid (tiles): the same kernel
    assert [g for g, _ in jit.launches[-2:]] == [(8, 1, 1), (8, 2, 1)]   # padded to 3-D
    fast[(4,)](a.double(), b, 7, 32, XBLOCK=128)   # another dtype: another
    fast[(4,)](a, b, 2 ** 40, 32, XBLOCK=128)      # n beyond int32: another
    assert len(jit.warmups) == 7 and len(jit.launches) == 10 and not jit.plain
    fast[(4,)](a, b, "n", 32, XBLOCK=128)          # an argument it does not key: the JIT
    assert len(jit.plain) == 1


def test_compiled_launch_leaves_a_users_triton_cache_alone(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "users"))
    jit = StandInJIT()
    launch.CompiledLaunch(jit, tmp_path / "compiled")[(1,)](torch.zeros(4), torch.zeros(4), 4, 4,
                                                            XBLOCK=16)
    assert jit.cache_dirs == [str(tmp_path / "users")] and not (tmp_path / "compiled").exists()


def test_clear_cache_lists_tritons_files_only_in_our_folder(tmp_path: pathlib.Path) -> None:
    from trebuchet.runtime.cache_files import clear

    key = "A" * 52
    ours = tmp_path / "triton" / "compiled" / key
    (ours / "tmp.pid_1_x").mkdir(parents=True)
    for name in ("kernel.cubin", "kernel.json", "__grp__kernel.json", "tmp.pid_1_x/kernel.ptx"):
        (ours / name).write_text("x")
    elsewhere = tmp_path / "other" / key
    elsewhere.mkdir(parents=True)
    (elsewhere / "kernel.cubin").write_text("x")
    (tmp_path / "triton" / "compiled" / "notes").mkdir()         # not a Triton entry name
    report = clear(tmp_path)
    assert report.removed == {"kernels": 1} and not ours.exists()
    assert (elsewhere / "kernel.cubin").exists() and (tmp_path / "triton" / "compiled" / "notes").exists()


# ---- CUDA graphs: the option and its declines --------------------------------------------

def test_cudagraphs_option_is_type_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Options.from_env(cudagraphs=True).cudagraphs
    with pytest.raises(TypeError, match="cudagraphs must be True or False"):
        Options.from_env(cudagraphs=1)
    monkeypatch.setenv("TREBUCHET_CUDAGRAPHS", "1")
    assert Options.from_env().cudagraphs


def test_cudagraphs_declines_what_it_cannot_replay() -> None:
    static, _, _ = _trace(lambda x: x.sin() + 1, ((8, 4), torch.float32, "cuda"))
    cuda = torch.device("cuda", 0)
    assert cudagraphs.decline_reason(static, "inference", cuda) is None
    assert "training" in cudagraphs.decline_reason(static, "forward", cuda)
    assert "training" in cudagraphs.decline_reason(static, "backward", cuda)
    assert "not on a CUDA device" in cudagraphs.decline_reason(static, "inference", torch.device("cpu"))
    assert "profile=True" in cudagraphs.decline_reason(static, "inference", cuda, profile=True)
    dynamic = make_fx(lambda x: x.sin() + 1, tracing_mode="symbolic")(torch.randn(8, 4))
    assert "dynamic shapes" in cudagraphs.decline_reason(dynamic, "inference", cuda)


def test_cudagraphs_on_a_cpu_graph_warns_and_runs_without() -> None:
    x = torch.randn(5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = trebuchet.compile(lambda t: t * 2 + 1, cudagraphs=True, strict=True)(x)
    assert torch.equal(out, x * 2 + 1)
    assert any("cudagraphs=True: the graph's tensors are on cpu" in str(w.message) for w in record)


# ---- stats ------------------------------------------------------------------------------------

def test_stats_by_target_next_to_the_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    from trebuchet.codegen.triton import TRITON_OPS, TritonUnsupported

    def not_generated(node, args):
        raise TritonUnsupported("the Triton target does not implement the erfc primitive")

    x = torch.randn(6)
    trebuchet.reset()
    trebuchet.compile(lambda t: t * 2 + 1, target="c")(x)
    trebuchet.compile(lambda t: t.exp() - 1, target="triton")(x)
    monkeypatch.setitem(TRITON_OPS, "erfc", not_generated)      # a primitive it lacks
    with pytest.warns(trebuchet.TrebuchetWarning, match="does not implement"):
        trebuchet.compile(lambda t: torch.erfc(t) + 1, target="triton", graph_cache=False)(x)
    stats = trebuchet.stats()
    assert stats["graphs"] == 2 and stats["graph_fallbacks"] == 1 and stats["kernels"] == 2
    assert stats["by_target"]["c"]["graphs"] == 1 and stats["by_target"]["c"]["kernels"] == 1
    assert stats["by_target"]["triton"] == {**stats["by_target"]["triton"], "graphs": 1,
                                            "kernels": 1, "graph_fallbacks": 1}


class _Stream:
    def wait_stream(self, other: object) -> None:
        pass


def test_graph_replay_copies_inputs_keeps_parameters_and_copies_outputs_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """GraphReplay's bookkeeping with torch.cuda's graph API stood in for: the replayed
    "graph" reruns the private instance on the static inputs, as a real replay would."""
    import contextlib

    replays: list[int] = []

    class Graph:
        def replay(self) -> None:
            replays.append(1)
            private(list(replay.static))

    monkeypatch.setattr(torch.cuda, "Stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    static_out = torch.empty(4)
    checks: list[int] = []

    def private(args: list) -> tuple:
        x, w = args
        static_out.copy_(x * w)            # a graph writes its static outputs
        args.clear()
        return (static_out,)
    private.check_errors = lambda: checks.append(1)

    plain_calls: list[int] = []

    def plain(args: list) -> tuple:
        plain_calls.append(1)
        return (args[0] * args[1],)

    replay = cudagraphs.GraphReplay(plain, lambda: private, torch.device("cuda", 0))
    w = torch.nn.Parameter(torch.full((4,), 3.0), requires_grad=False)
    x1, x2, x3 = torch.arange(4.0), torch.arange(4.0) + 10, torch.arange(4.0) + 20
    assert torch.equal(replay([x1, w])[0], x1 * 3) and plain_calls == [1]       # call 1: plain
    assert torch.equal(replay([x1, w])[0], x1 * 3) and replay.graph is not None  # 2: capture
    assert replay.static[1] is w and replay.static[0] is not x1                  # w in place
    r2 = replay([x2, w])[0]
    r3 = replay([x3, w])[0]
    assert torch.equal(r2, x2 * 3) and torch.equal(r3, x3 * 3)   # r2 not overwritten by r3
    assert r3.data_ptr() != static_out.data_ptr() and len(replays) == 2 and len(checks) == 2
    w2 = torch.nn.Parameter(torch.full((4,), 5.0), requires_grad=False)
    assert torch.equal(replay([x1, w2])[0], x1 * 5) and len(plain_calls) == 2   # moved: plain
    assert len(replays) == 2


def test_graph_replay_keeps_the_captured_instance_and_its_buffers_alive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The captured kernels write the private instance's kept buffers (allocated at its
    warm-up, outside the graph's memory pool): the instance must live as long as the
    graph, or its buffers go back to the allocator while replays still write them."""
    import contextlib
    import gc
    import weakref

    monkeypatch.setattr(torch.cuda, "Stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())

    class Private:
        def __init__(self) -> None:
            self.kept = torch.empty(4)          # stands for a BufferSlots slot

        def __call__(self, args: list) -> tuple:
            x, = args
            torch.mul(x, 2, out=self.kept)
            args.clear()
            return (self.kept + 1,)

    made: list[weakref.ref] = []

    def make_private() -> Private:
        p = Private()
        made.append(weakref.ref(p))
        return p

    replay = cudagraphs.GraphReplay(lambda args: (args[0] * 2 + 1,), make_private,
                                    torch.device("cuda", 0))
    x = torch.arange(4.0)
    replay([x])
    replay([x])                                  # captured
    assert replay.graph is not None and len(made) == 1
    gc.collect()
    assert made[0]() is not None                 # the instance (and its buffers) alive


def test_without_the_interpreter_each_launched_kernel_becomes_a_compiled_launch(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """load() for a GPU (no TRITON_INTERPRET): the generated module imports (no GPU needed)
    and the jit kernel each launch function starts is a CompiledLaunch in the module."""
    gm, _, _ = _trace(lambda x, y: torch.relu(x) * y + 1, ((8, 4), torch.float32, "cuda"),
                      ((8, 4), torch.float32, "cuda"))
    artifact = _artifact(gm)
    monkeypatch.delenv("TRITON_INTERPRET")
    callables = launch.load(artifact.code, Options.from_env(cache_dir=tmp_path))
    module = callables["_module"]
    assert module.__name__.endswith(tuple("0123456789abcdef"))            # not the interpreter's
    for fn in artifact.code.functions.values():
        assert isinstance(getattr(module, f"_{fn}"), launch.CompiledLaunch)
        assert callables[next(k for k, v in artifact.code.functions.items() if v == fn)] \
            is getattr(module, fn)
