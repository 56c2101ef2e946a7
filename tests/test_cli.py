"""The command line: --help of each subcommand, exit codes and messages of bad usage,
`info`'s compiler check, and `explain` end to end (graph breaks with their reasons, the
scheduler's reasons for steps that did not fuse). `report` runs end to end in
tests/test_report.py's fixture and here through the CLI on the smallest model."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import trebuchet
from trebuchet import cli
from trebuchet.report.explain import pair_reason
from trebuchet.runtime import profiler

SUBCOMMANDS = ["report", "explain", "bench", "demo", "info", "clear-cache"]


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:            # argparse: --help, --version, bad options
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("sub", [None, *SUBCOMMANDS])
def test_help_exits_0(sub: str | None, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(([sub] if sub else []) + ["--help"], capsys)
    assert code == 0 and "usage: trebuchet" in out
    if sub in (None, "report", "explain", "bench"):
        assert "examples:" in out


def test_version(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"trebuchet {trebuchet.__version__}"


@pytest.mark.parametrize("argv, needle", [
    (["report", "no_such_model"], "unknown model 'no_such_model'"),
    (["explain", "bert-huge"], "unknown model 'bert-huge'"),
    (["report", "bert", "--batch", "0"], "--batch 0"),
    (["report", "bert", "--rounds", "1"], "--rounds 1"),
    (["report", "bert", "--hidden", "30", "--heads", "4"], "not a multiple of --heads"),
    (["report", "no_such_module_q:make"], "cannot import 'no_such_module_q'"),
    (["report", "bert", "--target", "triton"], "TRITON_INTERPRET=1"),
])
def test_bad_usage_exits_2_naming_it(argv: list[str], needle: str, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, out, err = _run(argv, capsys)
    assert code == 2 and needle in err, err


@pytest.mark.parametrize("argv, needle", [
    (["report", "bert", "--target", "cuda"], "invalid choice: 'cuda'"),
    (["bench", "--suite", "huge"], "invalid choice: 'huge'"),
    (["report", "bert", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_options_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2 and needle in err


def test_info_checks_the_compiler(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = _run(["info"], capsys)
    assert code == 0 and "compiles and links with OpenMP" in out and "triton:" in out
    monkeypatch.setenv("CC", "false")
    code, out, _ = _run(["info"], capsys)
    assert code == 1 and "FAILED to compile" in out
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    code, out, _ = _run(["info"], capsys)
    assert code == 1 and "NOT FOUND" in out


def test_bad_environment_is_a_message(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREBUCHET_TARGET", "bogus")
    code, out, err = _run(["info"], capsys)
    assert code == 2 and "unknown target 'bogus'" in err and "Traceback" not in err + out


_USER_FILE = textwrap.dedent('''
    import torch

    def with_breaks(x):
        y = torch.relu(x) * 2
        print("halfway")
        s = y.sum().item()
        return y + s

    def breaks():
        return with_breaks, (torch.randn(8, 8),)

    def layer_norm_mm(x, w):
        return torch.nn.functional.layer_norm(x, (64,)) @ w

    def ln_mm():
        return layer_norm_mm, (torch.randn(16, 64), torch.randn(64, 32))
    ''')


@pytest.fixture
def user_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = tmp_path / "user_models.py"
    path.write_text(_USER_FILE)
    monkeypatch.chdir(tmp_path)
    return path


def test_explain_reports_graph_breaks(user_file: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(["explain", f"{user_file}:breaks"], capsys)
    assert code == 0
    assert "3 graphs with 2 graph breaks" in out
    assert f"break 1 at {user_file}:6" in out and "print" in out
    assert f"break 2 at {user_file}:7" in out and "Tensor.item()" in out
    assert out.count("kernel0 [") == 3
    folders = [line.strip() for line in out.splitlines() if "trebuchet-explain" in line]
    assert len(folders) == 3 and all((pathlib.Path(f) / "kernels.c").is_file() for f in folders)


def test_explain_layer_norm_then_matmul(user_file: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(["explain", "user_models:ln_mm"], capsys)
    assert code == 0 and "0 graph breaks" in out
    lines = out.splitlines()
    k = next(i for i, line in enumerate(lines) if line.strip().startswith("kernel0 [row]"))
    assert "native_layer_norm" in lines[k]      # the op itself (lowered whole, not decomposed)
    # the normalized rows are stored for the matmul, the one reader of them
    mm = next(line.split()[0] for line in lines if line.strip().endswith("[library call]: mm"))
    assert lines[k + 2].strip().startswith("stores ") and f"(read by {mm})" in lines[k + 2]
    why = lines[k + 3]
    assert "not fused:" in why and f"{mm} is a library call (aten.mm.default)" in why
    assert lines[k + 4].strip().endswith("[library call]: mm")


def test_scheduler_records_why_kernels_split() -> None:
    """A row softmax then a column sum of it: two kernels, and the recorded reason names
    the first kernel and says why the column sum cannot join it."""
    trebuchet.reset()

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1).sum(dim=0)

    x = torch.randn(32, 48)
    g = trebuchet.compile(f, strict=True, profile=True)
    torch.testing.assert_close(g(x), f(x))
    sched = next(s.schedule for s in profiler.graphs() if s.schedule is not None)
    steps = sched.steps
    assert len(steps) == 2
    why = pair_reason(sched, steps[0], steps[1])
    assert steps[0].name in why and ("iteration space" in why or "whole result" in why), why
    decided = {d.buf for d in sched.decisions}
    assert decided == {n.buf.name for k in steps for n in k.nodes}
    trebuchet.reset()


def test_report_cli_end_to_end(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "trebuchet", "report", "gpt2", "--layers", "1",
                        "--batch", "1", "--seq", "8", "--rounds", "3", "--threads", "1", "--no-html",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tensor contraction" in r.stdout and f"wrote {tmp_path / 'gpt2.json'}" in r.stdout
    data = json.loads((tmp_path / "gpt2.json").read_text())
    assert data["kernels"] and data["timing"]["speedup"] > 0


def test_bench_runs_a_case_with_progress(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out_json = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "trebuchet", "bench", "--quick", "--cases", "swiglu",
                        "--backends", "eager,trebuchet", "--json", str(out_json)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "python benchmarks/bench.py --quick --cases swiglu" in r.stdout
    assert "[1/1 bench.py] [####################] 1/1" in r.stderr
    data = json.loads(out_json.read_text())
    assert [c["case"] for c in data["bench.py"]["results"]] == ["swiglu"]
    assert data["bench.py"]["results"][0]["correct"] is True


def test_bench_rejects_cases_for_all(capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(["bench", "--suite", "all", "--cases", "x"], capsys)
    assert code == 2 and "--suite micro" in err


def test_log_each_compiled_graph(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    trebuchet.reset()
    monkeypatch.setenv("TREBUCHET_LOG", "info")
    with caplog.at_level("INFO", logger="trebuchet"):
        f = trebuchet.compile(lambda x: torch.softmax(x * 2, -1) @ x.t(), strict=True)
        f(torch.randn(8, 8))
    lines = [r.getMessage() for r in caplog.records if r.name == "trebuchet"]
    assert any("ATen ops -> 1 kernels, 1 library calls, 0 fallback ops in" in m for m in lines), lines
    trebuchet.reset()


def test_public_api_only() -> None:
    names = [n for n in dir(trebuchet) if not n.startswith("_")]
    assert sorted(names) == sorted(trebuchet.__all__)
