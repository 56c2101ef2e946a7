"""The whole-graph compile cache (runtime/graph_cache.py): hits, misses, damage, new processes."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import trebuchet


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x @ y + 1.0).softmax(-1) * 2.0


def _compile_and_run(fn, *args, **options):
    trebuchet.reset()
    out = trebuchet.compile(fn, strict=True, **options)(*args)
    return out, trebuchet.stats()


def test_second_compile_is_a_hit(cache_dir: pathlib.Path) -> None:
    x, y = torch.randn(16, 8), torch.randn(8, 24)
    out1, s1 = _compile_and_run(_fn, x, y)
    out2, s2 = _compile_and_run(_fn, x, y)
    assert s1["graph_cache_hits"] == 0 and s2["graph_cache_hits"] == 1
    assert s1["kernels"] == s2["kernels"] >= 1
    assert s1["lowered_ops"] == s2["lowered_ops"] and s1["kernel_ops"] == s2["kernel_ops"]
    torch.testing.assert_close(out1, _fn(x, y))
    torch.testing.assert_close(out2, _fn(x, y))
    assert list(cache_dir.glob("graphs/*/*.pkl"))


def test_other_shapes_dtypes_and_options_miss(cache_dir: pathlib.Path) -> None:
    x, y = torch.randn(16, 8), torch.randn(8, 24)
    _compile_and_run(_fn, x, y)
    for args, options in [((torch.randn(16, 8), torch.randn(8, 20)), {}),
                          ((x.double(), y.double()), {}),
                          ((x, y), {"inline_limit": 1}),
                          ((x, y), {"graph_cache": False})]:
        out, s = _compile_and_run(_fn, *args, **options)
        assert s["graph_cache_hits"] == 0, (args[0].shape, args[0].dtype, options)
        torch.testing.assert_close(out, _fn(*args))


def _times_constant(values: list[float]):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor(values)      # one source line for every `values`
    return fn


def test_constant_values_are_part_of_the_key(cache_dir: pathlib.Path) -> None:
    """Two graphs that differ only in a constant tensor's values must not share an entry."""
    x = torch.randn(5, 3)
    hits = []
    for values in ([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [1.0, 2.0, 3.0]):
        fn = _times_constant(values)
        out, s = _compile_and_run(fn, x)
        torch.testing.assert_close(out, fn(x))
        hits.append(s["graph_cache_hits"])
    assert hits == [0, 0, 1]


def test_damaged_entry_is_a_miss(cache_dir: pathlib.Path) -> None:
    x, y = torch.randn(16, 8), torch.randn(8, 24)
    _compile_and_run(_fn, x, y)
    entries = list(cache_dir.glob("graphs/*/*.pkl"))
    assert entries
    for entry in entries:
        data = entry.read_bytes()
        entry.write_bytes(data[:-10] + b"0123456789")      # same length, wrong bytes
    out, s = _compile_and_run(_fn, x, y)
    assert s["graph_cache_hits"] == 0
    torch.testing.assert_close(out, _fn(x, y))
    out, s = _compile_and_run(_fn, x, y)                    # rewritten by the miss
    assert s["graph_cache_hits"] == 1
    torch.testing.assert_close(out, _fn(x, y))


def test_dynamic_shapes_hit_and_run_other_sizes(cache_dir: pathlib.Path) -> None:
    def f(x):
        return (x - x.mean(-1, keepdim=True)).relu() + 1.0

    for expected_hits in (0, 1):
        trebuchet.reset()
        compiled = trebuchet.compile(f, strict=True, dynamic=True)
        for n in (5, 9, 33):
            x = torch.randn(n, 7)
            torch.testing.assert_close(compiled(x), f(x))
        assert trebuchet.stats()["graph_cache_hits"] == expected_hits


def test_training_graphs_hit(cache_dir: pathlib.Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.GELU())
    x = torch.randn(4, 8)
    grads = []
    for expected_hits in (0, 2):                            # forward and backward graphs
        model.zero_grad()
        trebuchet.reset()
        trebuchet.compile(model, strict=True)(x).sum().backward()
        assert trebuchet.stats()["graph_cache_hits"] == expected_hits
        grads.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    model(x).sum().backward()
    for a, b, e in zip(*grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(a, e)
        torch.testing.assert_close(b, e)


SCRIPT = textwrap.dedent("""
    import torch, trebuchet
    def f(x):
        return torch.softmax(x * 3.0, dim=-1).sum(0)
    x = torch.randn(32, 16)
    out = trebuchet.compile(f, strict=True)(x)
    assert torch.allclose(out, f(x), atol=1e-6)
    print("HITS", trebuchet.stats()["graph_cache_hits"])
""")


def test_a_new_process_finds_the_graph(cache_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    hits = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        hits.append(proc.stdout.split("HITS")[-1].strip())
    assert hits == ["0", "1"]
