"""Every IR primitive in `trebuchet.ir.expr.OPS` is implemented by both code generators.

Four levels:
  * every target's op table (`Target.ops`) has a rule for exactly the names of OPS;
  * `op_code` (C) and `eval_op` (reference) accept an `Op` of each name;
  * a graph of one `Pointwise` buffer per (primitive, dtype) case is built directly on
    the IR and run through the real pipeline on both targets (the C one compiled into
    a single translation unit); the C results must equal the reference results;
  * each unary float primitive, reached from the torch op that lowers to it, gives the
    same values compiled with target="c", target="reference" and in eager.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest
import sympy
import torch

import trebuchet
import trebuchet.runtime.pipeline as pipeline
from trebuchet.codegen import c as c_codegen
from trebuchet.codegen import reference
from trebuchet.codegen.target import NAMES as TARGET_NAMES
from trebuchet.codegen.target import get_target
from trebuchet.config import Options
from trebuchet.ir.expr import BOOL_RESULT, FLOAT_ONLY, OPS, Load, Op
from trebuchet.ir.nodes import (BufferRef, GraphIR, GraphOutput, InputBuffer, Pointwise,
                                index_vars)

F32, F64, I64, I32, I8, B = (torch.float32, torch.float64, torch.int64, torch.int32, torch.int8,
                             torch.bool)
N = 16


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- input samplers: (generator) -> 1-D tensor of N elements -----------------------

def uniform(lo: float, hi: float, dtype: torch.dtype = F32) -> Callable:
    return lambda g: (torch.rand(N, generator=g, dtype=F64) * (hi - lo) + lo).to(dtype)


def ints(lo: int, hi: int, dtype: torch.dtype = I64, nonzero: bool = False) -> Callable:
    def sample(g: torch.Generator) -> torch.Tensor:
        t = torch.randint(lo, hi, (N,), generator=g, dtype=I64)
        if nonzero:
            t = torch.where(t == 0, torch.ones_like(t), t)
        return t.to(dtype)
    return sample


def bools(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (N,), generator=g).bool()


def special(dtype: torch.dtype = F32) -> Callable:
    """Normal values mixed with NaN, +-Inf, +-0 and halves (rounding ties)."""
    fixed = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5]

    def sample(g: torch.Generator) -> torch.Tensor:
        t = torch.randn(N, generator=g, dtype=F64) * 3
        t[: len(fixed)] = torch.tensor(fixed, dtype=F64)
        return t.to(dtype)
    return sample


def shifts(g: torch.Generator) -> torch.Tensor:
    t = torch.randint(0, 63, (N,), generator=g)
    t[:3] = torch.tensor([0, 64, 70])
    return t


def nonzero_floats(g: torch.Generator) -> torch.Tensor:
    t = torch.randn(N, generator=g) * 4
    return torch.where(t.abs() < 0.25, torch.full_like(t, 0.75), t)


@dataclasses.dataclass
class Case:
    """One use of a primitive: argument samplers (their dtypes give the arg dtypes) and the
    node's dtype."""

    samplers: tuple[Callable, ...]
    dtype: torch.dtype


ANY_FLOAT = uniform(-3, 3)
POS = uniform(0.1, 4)
UNIT = uniform(-0.95, 0.95)
GT1 = uniform(1.05, 5)

# domain of each unary float primitive (values where it is finite)
UNARY_DOMAIN: dict[str, tuple[float, float]] = {
    "exp": (-5, 5), "expm1": (-3, 3), "log": (0.05, 10), "log2": (0.05, 10),
    "log10": (0.05, 10), "log1p": (-0.9, 10), "sqrt": (0, 10), "rsqrt": (0.05, 10),
    "sin": (-6, 6), "cos": (-6, 6), "tan": (-1.4, 1.4), "asin": (-0.95, 0.95),
    "acos": (-0.95, 0.95), "atan": (-10, 10), "sinh": (-4, 4), "cosh": (-4, 4),
    "tanh": (-4, 4), "asinh": (-10, 10), "acosh": (1.05, 10), "atanh": (-0.95, 0.95),
    "erf": (-3, 3), "erfc": (-3, 3), "lgamma": (0.1, 8), "sigmoid": (-8, 8),
}


def _cases() -> dict[str, list[Case]]:
    cases: dict[str, list[Case]] = {}
    for name in ("add", "sub", "mul"):
        cases[name] = [Case((ANY_FLOAT, ANY_FLOAT), F32), Case((ints(-50, 50),) * 2, I64),
                       Case((uniform(-3, 3, F64),) * 2, F64)]
    cases["add"].append(Case((bools, bools), B))
    cases["mul"].append(Case((bools, bools), B))
    cases["truediv"] = [Case((ANY_FLOAT, nonzero_floats), F32),
                        Case((uniform(-3, 3, F64), uniform(0.5, 3, F64)), F64)]
    for name in ("floordiv", "remainder"):
        cases[name] = [Case((uniform(-9, 9), nonzero_floats), F32),
                       Case((ints(-20, 20), ints(-6, 6, nonzero=True)), I64),
                       Case((ints(-20, 20, I32), ints(-6, 6, I32, nonzero=True)), I32)]
    cases["fmod"] = [Case((uniform(-9, 9), nonzero_floats), F32),
                     Case((ints(-20, 20), ints(-6, 6, nonzero=True)), I64)]
    cases["neg"] = [Case((ANY_FLOAT,), F32), Case((ints(-50, 50),), I64)]
    cases["abs"] = [Case((special(),), F32), Case((ints(-50, 50, I32),), I32)]
    cases["pow"] = [Case((POS, uniform(-2, 3)), F32), Case((uniform(0.1, 4, F64),) * 2, F64)]
    for name in ("maximum", "minimum"):
        cases[name] = [Case((special(), ANY_FLOAT), F32), Case((ANY_FLOAT, special()), F32),
                       Case((ints(-9, 9),) * 2, I64)]
    for name, (lo, hi) in UNARY_DOMAIN.items():
        cases[name] = [Case((uniform(lo, hi),), F32), Case((uniform(lo, hi, F64),), F64)]
    cases["atan2"] = [Case((ANY_FLOAT, ANY_FLOAT), F32), Case((uniform(-3, 3, F64),) * 2, F64)]
    for name in ("floor", "ceil", "trunc", "round"):
        cases[name] = [Case((special(),), F32), Case((special(F64),), F64)]
    for name in ("isnan", "isinf"):
        cases[name] = [Case((special(),), B), Case((special(F64),), B)]
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        cases[name] = [Case((special(), special()), B), Case((ints(-3, 3),) * 2, B)]
    for name in ("logical_and", "logical_or"):
        cases[name] = [Case((bools, bools), B)]
    cases["check_index"] = [Case((ints(0, 7), ints(7, 8), ints(1, 2)), I64),  # in range:
                            Case((ints(0, 7), ints(7, 8), ints(4, 5)), I64)]  # out of range raises
    for name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
        cases[name] = [Case((ints(-1000, 1000),) * 2, I64), Case((ints(-99, 99, I32),) * 2, I32),
                       Case((bools, bools), B)]
    cases["bitwise_not"] = [Case((ints(-1000, 1000),), I64), Case((ints(-99, 99, I32),), I32)]
    for name in ("lshift", "rshift"):
        cases[name] = [Case((ints(-1000, 1000), shifts), I64)]
    cases["where"] = [Case((bools, ANY_FLOAT, special()), F32),
                      Case((bools, ints(-9, 9), ints(-9, 9)), I64)]
    cases["cast"] = [Case((uniform(-100, 100),), I32), Case((ints(-300, 300),), F32),
                     Case((special(),), B), Case((bools,), F32), Case((ints(-300, 300),), I8),
                     Case((ANY_FLOAT,), torch.float16), Case((ANY_FLOAT,), torch.bfloat16),
                     Case((uniform(-3, 3, F64),), F32), Case((ANY_FLOAT,), F64)]
    return cases


CASES = _cases()


def test_every_primitive_has_cases() -> None:
    assert set(CASES) == set(OPS), (set(OPS) - set(CASES), set(CASES) - set(OPS))
    for name, cases in CASES.items():
        for case in cases:
            assert len(case.samplers) == OPS[name][0], name
            if name in BOOL_RESULT:
                assert case.dtype == B, name


def _sample_dtype(sampler: Callable) -> torch.dtype:
    return sampler(_gen(0)).dtype


def _op_node(name: str, case: Case, bufs: list[str] | None = None) -> Op:
    i0 = index_vars(1)[0]
    bufs = bufs or [f"a{k}" for k in range(len(case.samplers))]
    args = [Load(b, i0, _sample_dtype(s)) for b, s in zip(bufs, case.samplers)]
    return Op(name, args, case.dtype)


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_every_target_implements_every_primitive(target: str) -> None:
    """Each target's op table has a rule for exactly the primitives of OPS."""
    table = get_target(target).ops
    assert set(table) == set(OPS), (sorted(set(OPS) - set(table)), sorted(set(table) - set(OPS)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_both_codegens_implement(name: str) -> None:
    for k, case in enumerate(CASES[name]):
        node = _op_node(name, case)
        code = c_codegen.op_code(node, ["a", "b", "c"][: OPS[name][0]])
        assert isinstance(code, str) and code.strip(), (name, case)
        args = [s(_gen(k)) for s in case.samplers]
        args = [a.float() if a.dtype in (torch.float16, torch.bfloat16) else a for a in args]
        out = reference.eval_op(node, args)
        assert isinstance(out, torch.Tensor) and out.shape == (N,), (name, case)
        if name in BOOL_RESULT:
            assert out.dtype == B, name
        if name in FLOAT_ONLY:
            assert case.dtype.is_floating_point, name


# ---- one IR graph holding every case, run on both targets --------------------------

def _build_graph(names: list[str] | None = None, keep: Callable = lambda name, case: True
                 ) -> tuple[GraphIR, list[torch.Tensor], list[tuple[str, int]]]:
    """Inputs, one Pointwise output per case of each primitive in `names` (default: all)
    that `keep` accepts, and (op, case number) per output."""
    shape = (sympy.Integer(N),)
    stride = (sympy.Integer(1),)
    inputs: list[InputBuffer] = []
    buffers: list[Pointwise] = []
    outputs: list[GraphOutput] = []
    args: list[torch.Tensor] = []
    labels: list[tuple[str, int]] = []
    for name in sorted(CASES) if names is None else names:
        for k, case in enumerate(CASES[name]):
            if not keep(name, case):
                continue
            bufs = []
            for j, sampler in enumerate(case.samplers):
                t = sampler(_gen(1000 * len(buffers) + j))
                pos = len(inputs)
                inputs.append(InputBuffer(f"in{pos}", shape, t.dtype, stride, position=pos))
                args.append(t)
                bufs.append(f"in{pos}")
            buf = f"buf{len(buffers)}"
            buffers.append(Pointwise(buf, shape, case.dtype, stride,
                                     body=_op_node(name, case, bufs), origins=(f"ir.{name}",)))
            outputs.append(GraphOutput("ref", ref=BufferRef(buf, shape, stride,
                                                            sympy.Integer(0))))
            labels.append((name, k))
    graph = GraphIR(inputs, buffers, outputs, {}, len(inputs))
    return graph, args, labels


def _compile_ir(graph: GraphIR, target: str) -> Callable:
    """The real pipeline (schedule, codegen, build, wrap) on a hand-built GraphIR."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "lower_graph", lambda gm, counts, *options, **kw: graph)
        options = Options.from_env(target=target, debug=False, graph_cache=False)
        return pipeline.compile_graph(None, options, "inference")


@pytest.fixture(scope="module")
def ir_results() -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    graph, args, labels = _build_graph()
    c_out = _compile_ir(graph, "c")(list(args))
    ref_out = _compile_ir(graph, "reference")(list(args))
    assert len(c_out) == len(ref_out) == len(labels)
    return {label: (c, r) for label, c, r in zip(labels, c_out, ref_out)}


@pytest.mark.parametrize("name", sorted(OPS))
def test_c_matches_reference_on_ir(name: str, ir_results: dict) -> None:
    for k, case in enumerate(CASES[name]):
        c_val, ref_val = ir_results[(name, k)]
        assert c_val.dtype == ref_val.dtype == case.dtype, (name, k)
        if case.dtype.is_floating_point:
            tol = {} if case.dtype != F32 else {"rtol": 2e-6, "atol": 1e-6}
            torch.testing.assert_close(c_val, ref_val, equal_nan=True, **tol,
                                       msg=lambda m: f"{name} case {k}: {m}")
        else:
            assert torch.equal(c_val, ref_val), (name, k, c_val, ref_val)


# ---- unary float primitives through trebuchet.compile ------------------------------

TORCH_UNARY: dict[str, Callable] = {
    name: getattr(torch, name) for name in UNARY_DOMAIN if hasattr(torch, name)
}
TORCH_UNARY.update({"floor": torch.floor, "ceil": torch.ceil, "trunc": torch.trunc,
                    "round": torch.round, "neg": torch.neg, "abs": torch.abs})


def test_unary_table_covers_float_primitives() -> None:
    unary = {n for n, (arity, _) in OPS.items() if arity == 1 and n in FLOAT_ONLY}
    assert unary <= set(TORCH_UNARY), unary - set(TORCH_UNARY)


@pytest.mark.parametrize("name", sorted(TORCH_UNARY))
def test_unary_c_matches_reference(name: str, tmp_path) -> None:
    fn = TORCH_UNARY[name]
    lo, hi = UNARY_DOMAIN.get(name, (-5.0, 5.0))
    x = uniform(lo, hi)(_gen(7)).reshape(4, 4)
    if name in ("floor", "ceil", "trunc", "round"):
        x = special()(_gen(7)).reshape(4, 4)
    results = {}
    for target in ("c", "reference"):
        trebuchet.reset()
        debug = tmp_path / target
        compiled = trebuchet.compile(fn, target=target, strict=True, debug=True, debug_dir=debug)
        results[target] = compiled(x)
        stats = trebuchet.stats()
        assert not stats["fallback_ops"] and not stats["extern_ops"], stats
        ir_text = "".join(p.read_text() for p in debug.glob("graph*/ir.txt"))
        assert f"{name}(" in ir_text, f"torch.{name} did not lower to the {name} primitive"
    torch.testing.assert_close(results["c"], results["reference"], equal_nan=True)
    torch.testing.assert_close(results["c"], fn(x), equal_nan=True)


def test_strided_store_is_not_fused_into_a_column_reduction() -> None:
    """A buffer stored transposed ([C, R] with strides (1, C)) and a sum over R of the
    same input share an iteration space, but in one row kernel the stores would stride
    down the columns, one cache line per element: the scheduler keeps them apart, and
    the sum becomes a column kernel."""
    from trebuchet.ir.nodes import Reduction, index_vars
    from trebuchet.scheduler.describe import kernel_shape
    from trebuchet.scheduler.kernels import Kernel, schedule

    R, C = sympy.Integer(300), sympy.Integer(2049)
    x = InputBuffer("in0", (R, C), torch.float32, (C, sympy.Integer(1)), position=0)
    i0, i1 = index_vars(2)
    t = Pointwise("buf0", (C, R), torch.float32, (sympy.Integer(1), C),
                  body=Op("exp", (Load("in0", i1 * C + i0, torch.float32),), torch.float32))
    (j0,), (r0,) = index_vars(1), index_vars(1, "r")
    s = Reduction("buf1", (C,), torch.float32, (sympy.Integer(1),),
                  body=Load("in0", r0 * C + j0, torch.float32), reduce_ranges=(R,))
    refs = [GraphOutput("ref", ref=BufferRef(b.name, b.shape, b.stride, sympy.Integer(0)))
            for b in (t, s)]
    graph = GraphIR([x], [t, s], refs, {}, 1)
    kernels = [k for k in schedule(graph).steps if isinstance(k, Kernel)]
    assert len(kernels) == 2
    assert kernel_shape(kernels[1]) == "column"


def test_clamp_drops_only_bounds_that_never_bind() -> None:
    """symbolic.clamp = max(0, min(index, high)) with the provably redundant sides left
    out: the same values as sympy's Max/Min everywhere, and the same forms on the index
    shapes lowering builds (a loop variable, shifted by a part's offset, sizes known at
    run time)."""
    from trebuchet.ir.symbolic import clamp
    i = sympy.Symbol("x0", integer=True, nonnegative=True)
    s = sympy.Symbol("s0", integer=True, positive=True)
    cases = [(i, sympy.Integer(5)), (i - 3, sympy.Integer(4)), (i + 2, sympy.Integer(1)),
             (i - s, s - 1), (i, s - 1), (-i - 1, sympy.Integer(3)), (i * 2 - 7, s),
             (sympy.Integer(-2), sympy.Integer(3)), (sympy.Integer(9), sympy.Integer(3)),
             (i, sympy.Integer(-1))]
    for index, high in cases:
        got, want = clamp(index, high), sympy.Max(0, sympy.Min(index, high))
        assert got == want or all(
            got.subs({i: iv, s: sv}) == want.subs({i: iv, s: sv})
            for iv in range(0, 12) for sv in range(1, 6)), (index, high, got, want)
    assert clamp(i, sympy.Integer(5)) == sympy.Min(i, 5)        # never below 0: no max
    assert clamp(i + 2, sympy.Integer(1)) == 1                  # always above: the bound
    assert clamp(-i - 1, sympy.Integer(3)) == 0                 # always below: 0
