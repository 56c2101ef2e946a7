"""PyTorch's OpInfo database as Trebuchet's correctness suite.

Every OpInfo entry becomes one test per target. Each float32 CPU sample runs
eagerly and compiled (``trebuchet.compile(fn, target=..., strict=True)``) with every tensor of
the sample passed as a graph input, and the results are compared with the
OpInfo's float32 tolerances (assert_close defaults otherwise, NaN == NaN).

Outcome per sample: "lowered" (matches, nothing fell back), "fallback" (matches,
but an op or the whole graph ran eagerly, or Dynamo broke the graph) or a
failure. Ops that are random, whose eager call fails, or that return
non-tensors are skipped. With TREBUCHET_COVERAGE_OUT=PREFIX set, one JSON line
per sample (or skipped op) is appended to PREFIX.<xdist worker>.jsonl;
scripts/coverage.py aggregates them into docs/coverage.md.

Default run: one sample per op; the c target and the triton target (where triton
is installed; CPU tensors under Triton's interpreter, TRITON_INTERPRET=1 set by
conftest.py) run every op, the reference target a fixed quarter of them. ``--full``
runs every sample of every op on every target.
TREBUCHET_OPINFO_TARGETS=c (comma-separated) restricts the targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import warnings
import zlib
from typing import Any

import pytest
import torch
import torch._dynamo
from torch.testing._internal.common_device_type import toleranceOverride
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.opinfo.core import DecorateInfo, OpInfo

import trebuchet

_DEFAULT_TARGETS = "c,reference" + (",triton" if importlib.util.find_spec("triton") else "")
TARGETS = tuple(os.environ.get("TREBUCHET_OPINFO_TARGETS", _DEFAULT_TARGETS).split(","))
DTYPE = torch.float32
# default run: the reference target on 1 op in 4 (others: every op); --full: every op.
SUBSET_MODULUS = {"reference": 4}

# Ops whose outputs are random or uninitialized memory: no eager oracle.
_RANDOM_OP = re.compile(
    r"(^|\.)(rand|randn|randint|bernoulli|normal|uniform|cauchy|exponential|geometric"
    r"|log_normal|multinomial|rrelu|empty)"
    r"|dropout|fractional_max_pool"
)
_SIGNAL_WINDOWS = "signal.windows."  # deterministic despite names like "exponential"

# op id -> reason. Known failures run as non-strict xfail so the suite stays green
# while the op is being fixed; remove the entry when it passes.
EXPECTED_FAILURES: dict[str, str] = {}


def _op_id(op: OpInfo) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def _in_subset(op_id: str, target: str) -> bool:
    modulus = SUBSET_MODULUS.get(target, 1)
    return zlib.crc32(op_id.encode()) % modulus == 0


def _params() -> list[Any]:
    params = []
    for op in op_db:
        op_id = _op_id(op)
        for target in TARGETS:
            marks = []
            if op_id in EXPECTED_FAILURES:
                marks.append(pytest.mark.xfail(reason=EXPECTED_FAILURES[op_id], strict=False))
            params.append(pytest.param(op, target, id=f"{op_id}-{target}", marks=marks))
    return params


# ---------------------------------------------------------------- sample plumbing


def _lift_tensors(tree: Any, tensors: list[torch.Tensor]) -> Any:
    """Replace each tensor in a nested list/tuple/dict by its index in ``tensors``."""
    if isinstance(tree, torch.Tensor):
        tensors.append(tree)
        return _Slot(len(tensors) - 1)
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(_lift_tensors(x, tensors) for x in tree)
    if isinstance(tree, dict):
        return {k: _lift_tensors(v, tensors) for k, v in tree.items()}
    return tree


class _Slot:
    """Placeholder for the i-th tensor input of the compiled function."""

    def __init__(self, index: int) -> None:
        self.index = index


def _fill(tree: Any, tensors: tuple[torch.Tensor, ...]) -> Any:
    if isinstance(tree, _Slot):
        return tensors[tree.index]
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(_fill(x, tensors) for x in tree)
    if isinstance(tree, dict):
        return {k: _fill(v, tensors) for k, v in tree.items()}
    return tree


def _make_fn(op: OpInfo, structure: Any):
    """fn(*tensors) calling the op with the sample's tensors taken from the arguments."""
    call = op.op

    def fn(*tensors):
        inp, args, kwargs = _fill(structure, tensors)
        return call(inp, *args, **kwargs)

    return fn


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A copy with the same sizes and strides (samples include non-contiguous inputs)."""
    out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def _flatten_outputs(out: Any) -> list[torch.Tensor] | None:
    """The output's tensors, or None when it holds anything else."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        flat: list[torch.Tensor] = []
        for x in out:
            sub = _flatten_outputs(x)
            if sub is None:
                return None
            flat.extend(sub)
        return flat
    return None


def _tolerance(op: OpInfo) -> dict[str, float]:
    """Largest float32 CPU tolerance override the OpInfo declares, else assert_close's."""
    atol, rtol = None, None
    for info in op.decorators:
        if not isinstance(info, DecorateInfo) or info.device_type not in (None, "cpu"):
            continue
        if info.dtypes is not None and DTYPE not in info.dtypes:
            continue
        if "mps" in (info.test_name or "") or "mps" in (info.cls_name or "").lower():
            continue
        for dec in info.decorators:
            if isinstance(dec, toleranceOverride) and DTYPE in dec.d:
                t = dec.d[DTYPE]
                atol = t.atol if atol is None else max(atol, t.atol)
                rtol = t.rtol if rtol is None else max(rtol, t.rtol)
    if atol is None:
        return {}
    # Never tighter than the defaults (rtol 1.3e-6, atol 1e-5 for float32).
    return {"atol": max(atol, 1e-5), "rtol": max(rtol, 1.3e-6)}


def _is_random(op: OpInfo) -> bool:
    if op.name.startswith(_SIGNAL_WINDOWS):
        return False
    return bool(_RANDOM_OP.search(op.name)) or bool(op.has_nondeterministic_output)


def _strided(tensors: list[torch.Tensor]) -> bool:
    return all(t.layout == torch.strided for t in tensors)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    try:
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, equal_nan=True, rtol=0, atol=0)
    except (AssertionError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- outcome records


def _record(op_id: str, target: str, sample: int, outcome: str, **extra: Any) -> None:
    prefix = os.environ.get("TREBUCHET_COVERAGE_OUT")
    if not prefix:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    line = json.dumps(
        {"op": op_id, "target": target, "sample": sample, "outcome": outcome, **extra},
        sort_keys=True,
    )
    with open(f"{prefix}.{worker}.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _skip(op_id: str, target: str, reason: str) -> None:
    _record(op_id, target, -1, "skipped", reason=reason)
    pytest.skip(reason)


# ---------------------------------------------------------------- the test


def _run_sample(op: OpInfo, sample: Any, target: str) -> dict[str, Any] | None:
    """Compare one sample compiled vs eager. None: eager cannot serve as the oracle."""
    tensors: list[torch.Tensor] = []
    structure = _lift_tensors((sample.input, tuple(sample.args), dict(sample.kwargs)), tensors)
    if not _strided(tensors):
        return None
    fn = _make_fn(op, structure)

    eager_inputs = [_copy(t) for t in tensors]
    try:
        expected = fn(*eager_inputs)
        again = fn(*[_copy(t) for t in tensors])
    except Exception:
        return None
    expected_flat = _flatten_outputs(expected)
    again_flat = _flatten_outputs(again)
    if expected_flat is None or again_flat is None or not _strided(expected_flat):
        return None
    if not _same(expected_flat, again_flat):
        return None  # nondeterministic in eager

    torch._dynamo.reset()
    trebuchet.reset()
    torch._dynamo.utils.counters.clear()
    # strict: a graph that fails to compile is a bug to see, not a silent eager fallback;
    # ops without a rule still fall back one by one (fallback_ops).
    compiled = trebuchet.compile(fn, target=target, strict=True)
    compiled_inputs = [_copy(t) for t in tensors]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", trebuchet.TrebuchetWarning)
        actual = compiled(*compiled_inputs)
    stats = trebuchet.stats()
    actual_flat = _flatten_outputs(actual)
    assert actual_flat is not None, f"compiled output is not tensors: {type(actual)}"
    assert len(actual_flat) == len(expected_flat), "number of outputs differs"

    tol = _tolerance(op)
    pairs = [(f"output {i}", a, e) for i, (a, e) in enumerate(zip(actual_flat, expected_flat))]
    # Inputs too: in-place ops must mutate the caller's tensors as eager does.
    pairs += [(f"input {i}", a, e) for i, (a, e) in enumerate(zip(compiled_inputs, eager_inputs))]
    for what, a, e in pairs:
        torch.testing.assert_close(a, e, equal_nan=True, msg=lambda m, w=what: f"{w}: {m}", **tol)

    breaks = dict(torch._dynamo.utils.counters.get("graph_break", {}))
    fallback_ops = dict(stats.get("fallback_ops", {}))
    graph_fallbacks = int(stats.get("graph_fallbacks", 0))
    warned = trebuchet.TrebuchetWarning
    messages = [str(w.message) for w in caught if issubclass(w.category, warned)]
    fell_back = bool(fallback_ops or graph_fallbacks or breaks)
    return {
        "outcome": "fallback" if fell_back else "lowered",
        "fallback_ops": fallback_ops,
        "extern_ops": dict(stats.get("extern_ops", {})),
        "lowered_ops": dict(stats.get("lowered_ops", {})),
        "graph_fallbacks": graph_fallbacks,
        "graph_breaks": sorted(str(k)[:200] for k in breaks),
        "warnings": [m[:300] for m in messages[:3]],
    }


@pytest.mark.parametrize(("op", "target"), _params())
def test_op(op: OpInfo, target: str, full: bool) -> None:
    op_id = _op_id(op)
    if not full and not _in_subset(op_id, target):
        pytest.skip(f"the {target} target runs a subset of ops without --full")
    if DTYPE not in op.supported_dtypes("cpu"):
        _skip(op_id, target, "no float32 CPU support")
    if _is_random(op):
        _skip(op_id, target, "random or uninitialized output")

    cap = None if full else 1
    ran = 0
    for index, sample in enumerate(op.sample_inputs("cpu", DTYPE)):
        if cap is not None and ran >= cap:
            break
        try:
            result = _run_sample(op, sample, target)
        except Exception as exc:
            _record(op_id, target, index, "fail", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        if result is None:
            continue
        ran += 1
        _record(op_id, target, index, **result)
    if ran == 0:
        _skip(op_id, target, "no sample that eager runs deterministically with tensor outputs")
