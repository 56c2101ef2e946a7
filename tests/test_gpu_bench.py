"""benchmarks/gpu.py's guards, on CPU: a backend that fails while being timed is dropped
(the others are timed), and a run goes on from its results file in a fresh process (after
its CUDA context broke, or after the process died in a part)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module
    spec.loader.exec_module(module)
    return module


def _run(gpu, tmp_path: pathlib.Path):
    args = gpu.argparse.Namespace(dry_run=True, device="cpu", target=None, backends="eager",
                                  budget=60.0, out=str(tmp_path), repeats=2, resume=False)
    return gpu.Run(args)


def test_time_calls_drops_a_failing_callable_and_times_the_others(gpu, tmp_path) -> None:
    run = _run(gpu, tmp_path)
    calls = {"good": 0, "late": 0}

    def good() -> None:
        calls["good"] += 1

    def late() -> None:                  # fails after its warm-up: while being timed
        calls["late"] += 1
        if calls["late"] > 4:
            raise RuntimeError("replay failed")

    def bad() -> None:
        raise ValueError("no kernel")
    errors: dict[str, str] = {}
    times = gpu.time_calls(run, {"bad": bad, "good": good, "late": late}, 5, errors=errors)
    assert set(times) == {"good"} and times["good"] > 0
    assert errors == {"bad": "ValueError: no kernel", "late": "RuntimeError: replay failed"}
    with pytest.raises(ValueError):      # without `errors`: as before, the error propagates
        gpu.time_calls(run, {"bad": bad, "good": good}, 5)


def test_a_resumed_run_skips_finished_parts_and_records_the_one_it_died_in(
        gpu, tmp_path) -> None:
    out = str(tmp_path)
    common = ["--dry-run", "--backends", "eager", "--out", out, "--repeats", "2"]
    assert gpu.main([*common, "--parts", "env,copy"]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    env_seconds = results["parts"]["env"]["part_seconds"]
    # as if the process had died while running "copy": the part started, never finished
    results["meta"]["running"] = ["copy", results["meta"]["start_epoch"]]
    del results["parts"]["copy"]
    (tmp_path / "gpu.json").write_text(json.dumps(results))
    assert gpu.main([*common, "--parts", "env,copy,launch", "--resume"]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    parts = results["parts"]
    assert parts["env"]["part_seconds"] == env_seconds                 # not run again
    assert "process ended during this part" in parts["copy"]["error"]   # not run again
    assert "eager" in parts["launch"]["host_us_per_call"]               # the rest ran
    assert results["meta"]["resumed"][0]["after_crash_in"] == "copy"
    assert "running" not in results["meta"]
    md = (tmp_path / "gpu.md").read_text()
    assert "after the process died in part copy" in md


def test_a_broken_cuda_context_sends_the_remaining_parts_to_a_fresh_process(
        gpu, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = iter(["CUDA error: an illegal memory access was encountered"])
    monkeypatch.setattr(gpu, "cuda_broken", lambda run: next(broken, None))
    monkeypatch.setitem(gpu.FUNCS, "env", lambda run: {"error": "stands for a failed part"})
    assert gpu.main(["--dry-run", "--backends", "eager", "--out", str(tmp_path), "--repeats",
                     "2", "--parts", "env,copy"]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["meta"]["restarts"][0]["after_part"] == "env"
    assert results["parts"]["env"]["error"] == "stands for a failed part"   # not run again
    assert results["parts"]["copy"]["bandwidth_gbs"] > 0                   # by the child
    assert len(results["meta"]["resumed"]) == 1
