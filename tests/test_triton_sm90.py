"""Every Triton kernel the fusion graphs and the tiny models generate compiles for sm_90
through Triton's real pipeline (no GPU needed: codegen/triton/compile_check.py), and the
canonical memory-bound kernels compile without spills and with 128-bit vector loads.

The graphs are compiled with target="triton", strict=True on CPU tensors under
TRITON_INTERPRET=1 and called once with the kernels recorded, not run (`capture(
execute=False)`: the interpreter's results are checked by tests/test_triton.py), so large
canonical shapes cost nothing to collect. Each group's kernels are compiled together,
identical kernels once (~0.1-0.5 s each). A graph the target does not generate yet
(TritonUnsupported: "does not handle row reduction kernels yet") skips with that reason.

Default: the canonical kernels (layer norm, softmax, RMS norm, bias+GELU, SwiGLU at rows
of 768 and 4096, float32 and bfloat16; a transposed copy and a transposed add, as 2-D
tiles), the fusion graphs in float32 (forward and backward), indexed writes (index_put
accumulating, scatter_add, an embedding's backward; float32 and bfloat16) and tiny BERT
inference;
`--full` adds the fusion graphs in bfloat16, BERT training and GPT-2 inference and training.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import trebuchet  # noqa: E402
from trebuchet.codegen.triton import compile_check as cc  # noqa: E402

_WHY = cc.available()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"no sm_90 compile check: {_WHY}")

ROWS, HIDDEN = 8, 64                 # the fusion graphs' sizes (as tests/test_fusion.py)
CANONICAL_ROWS = 2048                # rows of the canonical kernels (launch heuristics see it)


@dataclasses.dataclass
class Case:
    """A graph to compile: fn over inputs made by `make(dtype)`; `train` also runs the
    backward of (y * y).sum() (or of the model's loss)."""

    name: str
    fn: object
    make: object
    dtype: torch.dtype = torch.float32
    train: bool = False
    slow: bool = False               # only under --full
    execute: bool = False            # run the kernels (interpreter) while recording them

    def run(self) -> None:
        torch._dynamo.reset()
        args = self.make(self.dtype)
        if self.train:
            args = [a.requires_grad_() if a.is_floating_point() else a for a in args]
        compiled = trebuchet.compile(self.fn, target="triton", strict=True)
        with torch.set_grad_enabled(self.train):
            out = compiled(*args)
        if self.train:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            sum(((o.float() * o.float()).sum() for o in outs)).backward()


def _randn(dtype: torch.dtype, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=gen).to(dtype) for s in shapes]


def _rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _chain10(x, y):
    v = torch.sqrt(torch.abs(torch.tanh(torch.exp(torch.sin(x * 2.0 + y) ** 2 - 0.5) / 3.0)))
    return v


def _bias_gelu(x, b):
    return F.gelu(x + b)


def _swiglu(a, b):
    return F.silu(a) * b


def _layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b)


def _softmax(x):
    return torch.softmax(x, -1)


# ---- the canonical kernels (issue 9: no spills, ld.global.v4 on contiguous inputs) ----

def _canonical() -> list[Case]:
    out = []
    for hidden in (768, 4096):
        shapes = {"layer_norm": (_layer_norm, [(CANONICAL_ROWS, hidden), (hidden,), (hidden,)]),
                  "softmax": (_softmax, [(CANONICAL_ROWS, hidden)]),
                  "rms_norm": (_rms_norm, [(CANONICAL_ROWS, hidden), (hidden,)]),
                  "bias_gelu": (_bias_gelu, [(CANONICAL_ROWS, hidden), (hidden,)]),
                  "swiglu": (_swiglu, [(CANONICAL_ROWS, hidden), (CANONICAL_ROWS, hidden)])}
        for dtype in (torch.float32, torch.bfloat16):
            for name, (fn, sh) in shapes.items():
                out.append(Case(f"{name}-{hidden}-{str(dtype)[6:]}", fn,
                                lambda dt, sh=sh: _randn(dt, *sh), dtype))
    # a load transposed relative to the store: 2-D tiles (codegen/triton/tiles.py)
    transposed = {"transpose_copy": (lambda x: x.t().contiguous(), [(CANONICAL_ROWS, 4096)]),
                  "transpose_add": (lambda x, y: x + y.t(),
                                    [(CANONICAL_ROWS, 4096), (4096, CANONICAL_ROWS)])}
    for dtype in (torch.float32, torch.bfloat16):
        for name, (fn, sh) in transposed.items():
            out.append(Case(f"{name}-{str(dtype)[6:]}", fn, lambda dt, sh=sh: _randn(dt, *sh),
                            dtype))
    return out


# ---- the fusion tests' graphs (tests/test_fusion.py), float32 and (--full) bfloat16 ----

def _fusion() -> list[Case]:
    R, H = ROWS, HIDDEN
    graphs = [
        ("bias_gelu", _bias_gelu, [(R, H), (H,)], False),
        ("bias_gelu_tanh", lambda x, b: F.gelu(x + b, approximate="tanh"), [(R, H), (H,)], False),
        ("add_layer_norm", lambda x, r, w, b: F.layer_norm(x + r, (H,), w, b, eps=1e-5),
         [(R, H), (R, H), (H,), (H,)], False),
        ("scaled_masked_softmax", lambda s, m: torch.softmax(s * 0.125 + m, dim=-1),
         [(2, 4, 16, 16), (16, 16)], False),
        ("rms_norm", _rms_norm, [(R, H), (H,)], False),
        ("chain10", _chain10, [(R, H), (R, H)], False),
        ("chain_broadcast_transpose", lambda x, y, b: torch.relu((x + y.t()) * b).sigmoid() + 1.0,
         [(16, 32), (32, 16), (32,)], False),
        ("softmax_and_layer_norm", lambda x: (torch.softmax(x, -1), F.layer_norm(x, (H,))),
         [(R, H)], False),
        ("softmax_plus_layer_norm", lambda x: torch.softmax(x, -1) + F.layer_norm(x, (H,)),
         [(R, H)], False),
        ("layer_norm_reshape", lambda x: F.layer_norm(x, (H,)).reshape(-1, H), [(2, 4, H)], False),
        ("layer_norm_linear", lambda x, w, b, p: F.linear(F.layer_norm(x, (H,), w, b), p),
         [(2, 4, H), (H,), (H,), (32, H)], False),
        ("attention_softmax_bmm", lambda s, v: torch.softmax(s, -1) @ v,
         [(2, 4, 16, 16), (2, 4, 16, 8)], False),
        ("log_softmax", lambda x: F.log_softmax(x, -1), [(R, H)], False),
        ("matmul_epilogue", lambda x, w, b: F.gelu(x @ w + b), [(R, 32), (32, H), (H,)], False),
        ("column_sum", lambda x: x.sum(0), [(R, H)], False),
        # sizes the launcher splits over programs (partial results, then a combine)
        ("scalar_sum_split", lambda x: x.sum(), [(512, 512)], False),
        ("column_sum_split", lambda x: x.sum(0), [(4096, 64)], False),
        ("column_sum_wide", lambda x: x.sum(0), [(2048, 4096)], False),
        ("swiglu", _swiglu, [(R, H), (R, H)], False),
        ("layer_norm_train", _layer_norm, [(R, H), (H,), (H,)], True),
        ("softmax_train", _softmax, [(R, H)], True),
        ("bias_gelu_train", _bias_gelu, [(R, H), (H,)], True),
        ("rms_norm_train", _rms_norm, [(R, H), (H,)], True),
    ]
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, fn, shapes, train in graphs:
            out.append(Case(f"{name}-{str(dtype)[6:]}", fn, lambda dt, sh=shapes: _randn(dt, *sh),
                            dtype, train, slow=dtype != torch.float32))
    return out + _scatter()


def _ids(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


def _scatter() -> list[Case]:
    """Indexed writes in entry order (codegen/triton/scatter.py), float32 and bfloat16."""
    R, H = ROWS, HIDDEN
    aten = torch.ops.aten
    graphs = [
        ("index_put_accumulate", lambda x, i, v: aten.index_put(x, [i], v * 2, True),
         lambda dt: [*_randn(dt, (R, H)), _ids(R, 4 * R), *_randn(dt, (4 * R, H))], False),
        ("scatter_add", lambda x, i, s: aten.scatter_add(x, 0, i, s),
         lambda dt: [*_randn(dt, (R, H)), _ids(R, 4 * R, H), *_randn(dt, (4 * R, H))], False),
        ("embedding_train", lambda w, i: F.embedding(i, w),
         lambda dt: [*_randn(dt, (R, H)), _ids(R, 2, 16)], True),
    ]
    return [Case(f"{name}-{str(dtype)[6:]}", fn, make, dtype, train)
            for dtype in (torch.float32, torch.bfloat16) for name, fn, make, train in graphs]


# ---- the tiny models (tests/test_models.py), inference and a training step ----

def _model_case(model: str, train: bool, slow: bool) -> Case:
    def make(dtype: torch.dtype) -> list:
        import test_models
        return [test_models._build(model).train(train), test_models._batch(1)]

    def fn(module, batch):
        ids, labels = batch
        return module(input_ids=ids, labels=labels if train else None)

    # run for real: with garbage results, later steps may index with computed values
    case = Case(f"{model}-{'training' if train else 'inference'}", None, make, train=train,
                slow=slow, execute=True)

    def run() -> None:
        torch._dynamo.reset()
        module, (ids, labels) = make(torch.float32)
        compiled = trebuchet.compile(module, target="triton", strict=True)
        with torch.set_grad_enabled(train):
            out = compiled(input_ids=ids, labels=labels if train else None)
            if train:
                out.loss.backward()
    case.run = run                                       # type: ignore[method-assign]
    return case


def _models() -> list[Case]:
    return [_model_case("bert", False, False), _model_case("gpt2", True, True),
            _model_case("bert", True, True), _model_case("gpt2", False, True)]


GROUPS = {"canonical": _canonical(), "fusion": _fusion(), "models": _models()}


def not_yet(error: BaseException) -> str | None:
    """The TritonUnsupported reason when `error` is the target declining a kernel shape."""
    e: BaseException | None = error
    while e is not None:
        text = str(e)
        if "TritonUnsupported" in text or type(e).__name__ == "TritonUnsupported":
            return text[text.find("TritonUnsupported"):].split("\n")[0] or text
        e = e.__cause__ or e.__context__
    return None


def collect(cases: list[Case]) -> tuple[list[cc.Launch], dict[str, str], dict[str, str]]:
    """(launches, case -> not-yet reason, case -> other error) of running the cases with
    the kernels recorded and not run."""
    skipped, failed = {}, {}
    with cc.capture(execute=False) as launches:
        for case in cases:
            with cc.capture_case(case.name, case.execute):
                try:
                    case.run()
                except pytest.skip.Exception as e:        # transformers missing
                    skipped[case.name] = str(e)
                except Exception as e:       # noqa: BLE001 - reported by the case's test
                    reason = not_yet(e)
                    if reason:
                        skipped[case.name] = f"not generated yet: {reason}"
                    else:
                        failed[case.name] = f"{type(e).__name__}: {e}"
    return list(launches), skipped, failed


@dataclasses.dataclass
class GroupResult:
    reports: dict[str, list[cc.KernelReport]]
    skipped: dict[str, str]
    failed: dict[str, str]


def compile_group(cases: list[Case]) -> GroupResult:
    launches, skipped, failed = collect(cases)
    reports: dict[str, list[cc.KernelReport]] = {c.name: [] for c in cases}
    for r in cc.compile_sm90(launches):
        reports[r.label].append(r)
    return GroupResult(reports, skipped, failed)


def _selected(request: pytest.FixtureRequest, group: str) -> list[Case]:
    """The cases of `group` whose tests this session runs (not deselected or skipped)."""
    names = set()
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if (item.module is request.module and spec is not None and spec.params.get("group") == group
                and item.get_closest_marker("skip") is None):
            names.add(spec.params["case"])
    return [c for c in GROUPS[group] if c.name in names]


_RESULTS: dict[str, GroupResult] = {}


@pytest.fixture
def group_result(request: pytest.FixtureRequest) -> GroupResult:
    """The selected cases of every group, collected and compiled at the first request
    (one compile process for all: Python and torch start once)."""
    if not _RESULTS:
        selected = {group: _selected(request, group) for group in GROUPS}
        _RESULTS["all"] = compile_group([c for cases in selected.values() for c in cases])
    return _RESULTS["all"]


def _params(group: str) -> list:
    return [pytest.param(group, c.name, id=f"{group}-{c.name}",
                         marks=[pytest.mark.slow] if c.slow else [])
            for c in GROUPS[group]]


def _reports_of(result: GroupResult, case: str) -> list[cc.KernelReport]:
    if case in result.skipped:
        pytest.skip(result.skipped[case])
    assert case not in result.failed, result.failed[case]
    reports = result.reports[case]
    assert reports, f"{case}: no Triton kernel was launched"
    bad = [f"{r.function} ({r.ops}): {r.error}" for r in reports if not r.ok]
    assert not bad, "kernels that do not compile for sm_90:\n" + "\n".join(bad)
    return reports


@pytest.mark.parametrize("group,case", _params("fusion") + _params("models"))
def test_every_kernel_compiles_for_sm90(group: str, case: str, group_result: GroupResult) -> None:
    for r in _reports_of(group_result, case):
        assert r.registers is not None and r.registers > 0, r
        assert r.spill_bytes is not None, r


@pytest.mark.parametrize("group,case", _params("canonical"))
def test_canonical_kernel_has_no_spills_and_vector_loads(group: str, case: str,
                                                         group_result: GroupResult) -> None:
    reports = _reports_of(group_result, case)
    for r in reports:
        assert r.spill_bytes == 0, f"{r.function} ({r.ops}) spills {r.spill_bytes} bytes: {r}"
        assert r.v4_loads > 0, f"{r.function} ({r.ops}): no ld.global.v4 in its PTX: {r}"


# ---- the check itself: the JIT's signature, failures reported, de-duplication ----

def _write_module(tmp_path, text: str) -> str:
    path = tmp_path / "tb_handmade.py"
    path.write_text('import triton\nimport triton.language as tl\n\n' + text)
    return str(path)


def test_signature_follows_the_jits_specialization() -> None:
    """The attrs and types match Triton's own specializer where this Triton has it."""
    native = pytest.importorskip("triton._C.libtriton")
    if not hasattr(native, "native_specialize_impl"):
        pytest.skip("this Triton has no native_specialize_impl to compare with")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    backend = type(make_backend(GPUTarget("cuda", cc.ARCH, cc.WARP_SIZE)))
    for value in (1, 16, 17, 48, -32, 2 ** 31, 2 ** 31 + 16, 3 * 2 ** 40):
        ty, attr = native.native_specialize_impl(backend, value, False, True, True)
        got = cc.signature_of("int", value, specialize=True)
        assert got == (ty, attr == "D"), (value, got, ty, attr)
    from triton._utils import type_canonicalisation_dict
    assert {k: type_canonicalisation_dict[k] for k in cc.PTR_TYPES} == cc.PTR_TYPES
    base = torch.empty(64, dtype=torch.bfloat16)
    for t in (base, base[1:], base[8:]):
        ty, attr = native.native_specialize_impl(backend, t, False, True, True)
        kind, dtype, aligned = cc.describe_arg(t)
        assert cc.signature_of(kind, dtype, aligned=aligned) == (ty, attr == "D")


def test_a_kernel_the_interpreter_runs_but_the_compiler_rejects_is_reported(tmp_path) -> None:
    path = _write_module(tmp_path, '''
@triton.jit
def _bad(x, y, n, XBLOCK: tl.constexpr):
    i = tl.program_id(0) * XBLOCK + tl.arange(0, 24)      # not a power of two
    tl.store(y + i, tl.load(x + i, mask=i < n), mask=i < n)


@triton.jit
def _good(x, y, n, XBLOCK: tl.constexpr):
    i = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    tl.store(y + i, tl.load(x + i, mask=i < n) * 2.0, mask=i < n)


def good(x, y, n):
    _good[(triton.cdiv(n, 1024),)](x, y, n, XBLOCK=1024, num_warps=8)
''')
    args = [["ptr", "float32", True], ["ptr", "float32", True], ["int", 4096]]
    # unaligned pointers and a size that is no multiple of 16: no 128-bit vector loads
    odd = [["ptr", "float32", False], ["ptr", "float32", False], ["int", 4095]]
    # what the module's launch function passes for a size, without running the kernel
    spec = importlib.util.spec_from_file_location("tb_handmade", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.empty(0)
    (launched,) = cc.module_launches(module, {"good": (x, x, 2048)})
    assert launched.kwargs == {"XBLOCK": 1024, "num_warps": 8} and launched.grid == [2]
    assert launched.args == [["ptr", "float32", True], ["ptr", "float32", True], ["int", 2048]]
    bad, good, again, plain, direct = cc.compile_sm90([
        cc.Launch(path, "_bad", args, {"XBLOCK": 32}),
        cc.Launch(path, "_good", args, {"XBLOCK": 1024}),
        cc.Launch(path, "_good", args, {"XBLOCK": 1024}),
        cc.Launch(path, "_good", odd, {"XBLOCK": 1024}),
        launched])
    assert not bad.ok and "arange" in bad.error
    assert good.ok and good.registers and good.spill_bytes == 0 and good.v4_loads > 0
    assert again.cached and not good.cached and again.registers == good.registers
    assert plain.ok and not plain.cached and plain.v4_loads == 0, plain
    assert direct.ok and direct.num_warps == 8 and not direct.cached


# ---- autotune=True: every configuration it may time compiles (codegen/triton/autotune.py) ----

def test_autotune_configurations_compile_without_spills() -> None:
    """A transposed add (tiles) and bias+GELU (flattened) at the canonical size, launched
    by their launch functions under each configuration of autotune's lists: each compiles
    for sm_90 without spills."""
    import functools
    from trebuchet.codegen.triton.autotune import CONFIGS
    cases = {"tile": (lambda x, y: x + y.t(), [(CANONICAL_ROWS, 4096), (4096, CANONICAL_ROWS)]),
             "pointwise": (_bias_gelu, [(CANONICAL_ROWS, 4096), (4096,)])}
    launches = []
    for shape, (fn, shapes) in cases.items():
        with cc.capture(execute=False) as recorded:
            torch._dynamo.reset()
            trebuchet.compile(fn, target="triton", strict=True)(*_randn(torch.float32, *shapes))
        (first,) = recorded
        spec = importlib.util.spec_from_file_location(f"tb_autotune_{shape}", first.module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.kernel0.tb_shape == shape
        args = [torch.empty(*s) for s in shapes] + [torch.empty(CANONICAL_ROWS, 4096)]
        calls = {}
        for i, config in enumerate(CONFIGS[shape]):
            name = f"kernel0_config{i}"
            setattr(module, name, functools.partial(module.kernel0, tb_config=config))
            calls[name] = args
        launches += cc.module_launches(module, calls, label=shape)
    reports = cc.compile_sm90(launches)
    assert len(reports) == sum(len(c) for c in CONFIGS.values())
    for r in reports:
        assert r.ok and r.spill_bytes == 0, r
