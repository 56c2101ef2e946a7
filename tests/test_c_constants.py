"""Kernels that differ only in constants share one C body (codegen/c/constants.py).

The text-level cases check which literals become parameters and which must stay; the
compiled cases check that a graph whose kernels share a body gives eager's results
exactly, and that the body is there in the translation unit.
"""
from __future__ import annotations

import copy
import pathlib

import pytest
import torch
import torch.nn as nn

import trebuchet
from trebuchet.codegen.c.constants import share_constants


def _kernel(name: str, body: str, params: str = "const float* in0, float* buf1") -> tuple[str, str]:
    return name, f"// {name}: aten.test\n// from: here\nvoid {name}({params}) {{\n{body}\n}}"


def test_kernels_differing_in_constants_share_a_body() -> None:
    a = _kernel("kernel0", "    for (int64_t x0 = 0; x0 < 576; ++x0) buf1[x0] = in0[x0] * 0x1.8p+0f + 196.0;")
    b = _kernel("kernel3", "    for (int64_t x0 = 0; x0 < 96; ++x0) buf9[x0] = in7[x0] * 0x1.4p+1f + 49.0;",
                "const float* in7, float* buf9")
    c = _kernel("kernel5", "    buf1[0] = 1.0f;")
    (group, alone) = share_constants([a, b, c])
    assert alone == c[1]
    assert group.startswith("// kernel0: the body of kernels kernel0, kernel3")
    assert ("static void kernel0_body(const float* in0, float* buf1, const int lit0, "
            "const float lit1, const double lit2)") in group
    assert "x0 < lit0" in group and "in0[x0] * lit1 + lit2" in group
    # each kernel keeps its name and parameters and passes its own literals' text
    assert ("void kernel0(const float* in0, float* buf1) "
            "{ kernel0_body(in0, buf1, 576, 0x1.8p+0f, 196.0); }") in group
    assert ("void kernel3(const float* in7, float* buf9) "
            "{ kernel0_body(in7, buf9, 96, 0x1.4p+1f, 49.0); }") in group
    assert "// from: here" in group       # the kernels' own comments stay


def test_parameters_in_another_order_share_by_role() -> None:
    # Parameters are listed by name, so twin kernels can list their buffers in another
    # order (buf93 sorts after buf107); each kernel passes its own in the body's order.
    a = _kernel("kernel8", "    buf32[0] = buf17[0] * 2.0 + buf24[0];",
                "const double* buf17, const double* buf24, double* buf32")
    b = _kernel("kernel22", "    buf108[0] = buf93[0] * 3.0 + buf100[0];",
                "const double* buf100, const double* buf93, double* buf108")
    (group,) = share_constants([a, b])
    assert "void kernel22(const double* buf100, const double* buf93, double* buf108) " \
           "{ kernel8_body(buf93, buf100, buf108, 3.0); }" in group
    assert "{ kernel8_body(buf17, buf24, buf32, 2.0); }" in group
    c = _kernel("kernel9", "    buf108[0] = buf93[0] * 3.0 + buf100[0];",
                "const double* buf100, const float* buf93, double* buf108")     # a float: apart
    assert share_constants([a, c]) == [a[1], c[1]]


@pytest.mark.parametrize("fixed", [
    "    #pragma omp simd simdlen({n})\n    buf1[0] = in0[0];",
    "    #pragma omp parallel for collapse({n}) if(x > 3)\n    buf1[0] = in0[0];",
    "    float row0[{n}];\n    row0[0] = in0[0]; buf1[0] = row0[0];",
    "    buf1[0] = in0[0] + (float)(x / {n});",
    "    buf1[0] = in0[0] + (float)(x % ({n}));",
    "    buf1[0] = in0[0] + {n}UL;",
    "    float s[4] __attribute__((aligned({n})));\n    s[0] = in0[0]; buf1[0] = s[0];",
])
def test_literals_that_must_stay_constants_keep_kernels_apart(fixed: str) -> None:
    parts = [_kernel(f"kernel{i}", fixed.format(n=n)) for i, n in enumerate((8, 16))]
    assert share_constants(parts) == [p[1] for p in parts]


def test_equal_literals_stay_literal_and_differing_types_do_not_share() -> None:
    parts = [_kernel("kernel0", "    buf1[0] = in0[7] * 2.0f + 3;"),
             _kernel("kernel1", "    buf1[0] = in0[7] * 4.0f + 3;"),
             _kernel("kernel2", "    buf1[0] = in0[7] * 4.0 + 3;")]      # double: apart
    (group, alone) = share_constants(parts)
    assert "in0[7] * lit0 + 3;" in group and "const float lit0)" in group
    assert alone == parts[2][1]


def _sources(tmp_path: pathlib.Path) -> str:
    return "\n".join(p.read_text() for p in tmp_path.rglob("kernels.c"))


def _train_step(net: nn.Module, x: torch.Tensor, tmp_path: pathlib.Path) -> list[torch.Tensor]:
    """A compiled forward and backward: the output, the gradients, the running stats."""
    trebuchet.reset()
    compiled = trebuchet.compile(net, target="c", strict=True, debug_dir=str(tmp_path))
    out = compiled(x)
    out.square().sum().backward()
    return [out, *(p.grad for p in net.parameters()), *net.buffers()]


def test_batch_norms_of_several_widths_share_one_body(tmp_path: pathlib.Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 40), nn.BatchNorm1d(40),
                        nn.ReLU(), nn.Linear(40, 56), nn.BatchNorm1d(56)).train()
    nets = [copy.deepcopy(net) for _ in range(3)]
    x = torch.randn(33, 24)
    shared = _train_step(nets[0], x, tmp_path / "shared")
    assert "_body(" in _sources(tmp_path / "shared")
    from trebuchet.codegen.c import unit         # the same graphs, each kernel its own function
    monkeypatch.setattr(unit, "share_constants", lambda parts, *_: [text for _, text in parts])
    alone = _train_step(nets[1], x, tmp_path / "alone")
    assert "_body(" not in _sources(tmp_path / "alone")
    for a, b in zip(shared, alone, strict=True):
        assert torch.equal(a, b)                 # bit for bit
    out = nets[2](x)                             # and eager's values (its own summation order)
    out.square().sum().backward()
    eager = [out, *(p.grad for p in nets[2].parameters()), *nets[2].buffers()]
    for a, b in zip(shared, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_int32_constants_keep_their_type(tmp_path: pathlib.Path) -> None:
    # int32 products that wrap: a parameter wider than the literal's int would not.
    def fn(a, b):
        return a * 70000 + 5, b * 90001 + 7

    a = torch.randint(-2**20, 2**20, (5,), dtype=torch.int32)
    b = torch.randint(-2**20, 2**20, (9,), dtype=torch.int32)
    trebuchet.reset()
    compiled = trebuchet.compile(fn, target="c", strict=True, debug_dir=str(tmp_path))
    for got, want in zip(compiled(a, b), fn(a, b)):
        assert torch.equal(got, want)
    assert "const int lit" in _sources(tmp_path)
