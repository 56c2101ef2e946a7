"""The `profile` option: per-kernel and per-extern timing, bytes, and the report."""
from __future__ import annotations

import pathlib
import re

import pytest
import torch

import trebuchet
from trebuchet.config import Options
from trebuchet.runtime import profiler


@pytest.fixture(autouse=True)
def _fresh() -> None:
    trebuchet.reset()


def _mlp_head(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.softmax(torch.relu(a + b) @ w, dim=-1)


def _steps_by_name() -> dict[str, dict]:
    return {s["name"]: s for s in trebuchet.profile_data()["steps"]}


def test_report_lists_kernels_and_externs() -> None:
    f = trebuchet.compile(_mlp_head, strict=True, profile=True)
    a, b, w = torch.randn(64, 32), torch.randn(64, 32), torch.randn(32, 16)
    for _ in range(3):
        torch.testing.assert_close(f(a, b, w), _mlp_head(a, b, w))
    steps = trebuchet.profile_data()["steps"]
    kernels = [s for s in steps if s["kind"] != "extern"]
    externs = [s for s in steps if s["kind"] == "extern"]
    assert [s["ops"] for s in externs] == [["aten.mm.default"]]
    assert sorted(s["kind"] for s in kernels) == ["pointwise", "row"]
    assert all(s["calls"] == 3 and s["ns"] > 0 and s["graph"].endswith(" inference")
               for s in steps)
    # the pointwise kernel fused add and relu; the row kernel is the softmax
    ops = {s["kind"]: s["ops"] for s in kernels}
    assert ops["pointwise"] == ["aten.add.Tensor", "aten.relu.default"]
    assert "aten.amax.default" in ops["row"]
    # extern bytes: both mm operands and its output, float32
    assert externs[0]["bytes"] == 3 * 4 * (64 * 32 + 32 * 16 + 64 * 16)
    [graph] = trebuchet.profile_data()["graphs"]
    assert graph["calls"] == 3 and graph["ns"] >= sum(s["ns"] for s in steps)
    report = trebuchet.profile_report()
    assert "copy bandwidth:" in report and "wrapper overhead" in report
    for s in steps:
        row = next(line for line in report.splitlines() if f" {s['name']} " in line)
        assert re.search(r"\b3\b", row)
    assert "add.Tensor,relu" in report and " mm " in report


def test_bytes_of_an_add_into_a_new_tensor() -> None:
    f = trebuchet.compile(lambda a, b: a + b, strict=True, profile=True)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    f(a, b)
    f(a, b)
    [step] = trebuchet.profile_data()["steps"]
    assert step["kind"] == "pointwise"
    assert step["bytes"] == 2 * 12 * 2**20      # read a and b, write the sum: 12 MiB a call
    assert "12.0 MiB" in trebuchet.profile_report()


def _strip_probes(source: str) -> str:
    kept = [line for line in source.splitlines()
            if "ns()" not in line and not re.match(r"\s+(pr|pg)\d+\(", line)
            and line.strip() != "return _prof_out"]
    text = "\n".join(kept).replace("_prof_out = ", "return ")
    return re.sub(r"\b(op|dt|c|k)\d+\b", r"\1#", text)


def test_profile_off_adds_no_code_and_records_nothing(tmp_path: pathlib.Path) -> None:
    def fn(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(a * 2) @ w

    a, w = torch.randn(16, 8), torch.randn(8, 4)
    sources = {}
    for flag in (False, True):
        trebuchet.reset()
        folder = tmp_path / str(flag)
        f = trebuchet.compile(fn, strict=True, profile=flag, debug_dir=str(folder))
        f(a, w)
        f(a, w)
        [wrapper] = folder.glob("*/wrapper.py")
        sources[flag] = wrapper.read_text()
        if not flag:
            assert trebuchet.profile_data() == {"steps": [], "graphs": []}
            assert "nothing recorded" in trebuchet.profile_report()
    off, on = sources[False], sources[True]
    assert "ns()" not in off and "_prof" not in off
    assert "ns()" in on and "_prof_t" in on
    # profiling only adds probe lines around the same code
    assert _strip_probes(on) == re.sub(r"\b(op|dt|c|k)\d+\b", r"\1#", off.rstrip("\n"))


def test_profile_reset() -> None:
    f = trebuchet.compile(lambda x: torch.tanh(x) * 3, strict=True, profile=True)
    x = torch.randn(32, 32)
    f(x)
    f(x)
    assert trebuchet.profile_data()["steps"][0]["calls"] == 2
    trebuchet.profile_reset()
    assert trebuchet.profile_data() == {"steps": [], "graphs": []}
    assert "nothing recorded" in trebuchet.profile_report()
    f(x)
    [step] = trebuchet.profile_data()["steps"]
    assert step["calls"] == 1 and step["bytes"] == 2 * 4 * 32 * 32


def test_dynamic_shapes_count_the_bytes_of_each_call() -> None:
    def fn(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (a * 2) @ w

    f = trebuchet.compile(fn, strict=True, profile=True, dynamic=True)
    for m, k, n in ((64, 32, 16), (100, 48, 24)):
        trebuchet.profile_reset()
        a, w = torch.randn(m, k), torch.randn(k, n)
        torch.testing.assert_close(f(a, w), fn(a, w))
        steps = trebuchet.profile_data()["steps"]
        [kernel] = [s for s in steps if s["kind"] != "extern"]
        [extern] = [s for s in steps if s["kind"] == "extern"]
        assert kernel["bytes"] == 2 * 4 * m * k
        assert extern["bytes"] == 4 * (m * k + k * n + m * n)
    assert trebuchet.stats()["graphs"] == 1      # one symbolic graph served both sizes


def test_training_profiles_forward_and_backward() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32))
    f = trebuchet.compile(model, strict=True, profile=True)
    x = torch.randn(8, 16)
    for _ in range(2):
        f(x).sum().backward()
    graphs = {g["graph"]: g["calls"] for g in trebuchet.profile_data()["graphs"]}
    assert sorted(label.split()[1] for label in graphs) == ["backward", "forward"]
    assert set(graphs.values()) == {2}
    report = trebuchet.profile_report()
    assert "per graph:" in report and "backward" in report


def test_env_var_turns_profiling_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREBUCHET_PROFILE", "1")
    assert Options.from_env().profile
    f = trebuchet.compile(lambda x: x.exp() + 1, strict=True)
    f(torch.randn(10))
    assert [s["calls"] for s in trebuchet.profile_data()["steps"]] == [1]
    monkeypatch.setenv("TREBUCHET_PROFILE", "0")
    assert not Options.from_env().profile


def test_short_ops_fits_the_width() -> None:
    ops = ["aten.var_mean.correction", "aten.sub.Tensor", "aten.add.Tensor", "aten.rsqrt.default"]
    assert profiler.short_ops(ops, 100) == "var_mean.correction,sub.Tensor,add.Tensor,rsqrt"
    text = profiler.short_ops(ops, 36)
    assert len(text) <= 36 and text.endswith(" +2")


def test_gather_counts_the_rows_read_not_the_table() -> None:
    table = torch.randn(10000, 64)

    def fn(ids: torch.Tensor) -> torch.Tensor:
        # layer norm reads the looked-up row in several passes; it comes from memory once
        return torch.nn.functional.layer_norm(torch.nn.functional.embedding(ids, table) * 2, (64,))

    f = trebuchet.compile(fn, strict=True, profile=True)
    ids = torch.randint(0, 10000, (8, 16))
    torch.testing.assert_close(f(ids), fn(ids))
    [step] = trebuchet.profile_data()["steps"]
    # the ids, one 64-float row per id, and the output; not the 2.4 MiB table
    assert step["bytes"] == 8 * 16 * 8 + 2 * 8 * 16 * 64 * 4


def test_cli_demo_profile_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from trebuchet import cli, demo

    seen = []
    monkeypatch.setattr(demo, "main", lambda profile=False: seen.append(profile) or 0)
    assert cli.main(["demo", "--profile"]) == 0
    assert cli.main(["demo"]) == 0
    assert seen == [True, False]
