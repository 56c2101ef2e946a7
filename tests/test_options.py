"""Options: PyTorch's `options=` / `mode=` conventions and type checks when compiling."""
from __future__ import annotations

import pathlib
import warnings

import pytest
import torch

import trebuchet
from trebuchet.config import Options
from trebuchet.frontend.backend import make_backend


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2 + 1


def test_torch_compile_options_dict_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    # No C compiler: only the reference target (set through options=) can compile this.
    monkeypatch.setenv("CC", "/nonexistent/cc")
    x = torch.randn(5)
    compiled = torch.compile(_fn, backend="trebuchet",
                             options={"target": "reference", "strict": True})
    torch.testing.assert_close(compiled(x), _fn(x))
    assert trebuchet.stats()["graph_fallbacks"] == 0 and trebuchet.stats()["graphs"] == 1


def test_torch_compile_options_dict_strict_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = torch.compile(_fn, backend="trebuchet",
                             options={"strict": True, "cc": "/nonexistent/cc", "graph_cache": False})
    with pytest.raises(Exception, match="no C compiler"):
        compiled(torch.randn(5))


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_torch_compile_mode_is_accepted_with_a_warning(mode: str) -> None:
    x = torch.randn(5)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = torch.compile(_fn, backend="trebuchet", mode=mode)(x)
    torch.testing.assert_close(out, _fn(x))
    assert trebuchet.stats()["graph_fallbacks"] == 0
    notes = [w for w in record if issubclass(w.category, trebuchet.TrebuchetWarning)]
    assert notes and all("changes nothing" in str(w.message) for w in notes), notes


def test_default_mode_is_silent() -> None:
    x = torch.randn(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", trebuchet.TrebuchetWarning)
        torch.testing.assert_close(trebuchet.compile(_fn, mode="default")(x), _fn(x))


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown mode 'fastest'"):
        trebuchet.compile(_fn, mode="fastest")
    compiled = torch.compile(_fn, backend="trebuchet", mode="fastest")
    with pytest.raises(Exception, match="unknown mode 'fastest'"):
        compiled(torch.randn(5))


def test_trebuchet_compile_accepts_options_dict() -> None:
    assert Options.from_env(options={"inline_limit": 3}).inline_limit == 3
    x = torch.randn(5)
    torch.testing.assert_close(trebuchet.compile(_fn, options={"target": "reference"})(x), _fn(x))


def test_option_given_twice_is_an_error() -> None:
    with pytest.raises(TypeError, match="both as keywords and in options="):
        make_backend(strict=True, options={"strict": False})


@pytest.mark.parametrize("kwargs, error, match", [
    ({"strict": "yes"}, TypeError, "strict must be True or False"),
    ({"debug": 1}, TypeError, "debug must be True or False"),
    ({"graph_cache": "0"}, TypeError, "graph_cache must be True or False"),
    ({"profile": None}, TypeError, "profile must be True or False"),
    ({"inline_limit": 2.5}, TypeError, "inline_limit must be an int"),
    ({"inline_limit": True}, TypeError, "inline_limit must be an int"),
    ({"inline_limit": -1}, ValueError, "inline_limit must be >= 0"),
    ({"target": "gpu"}, ValueError, "unknown target 'gpu'"),
    ({"target": 1}, TypeError, "target must be a str"),
    ({"matmul": "mkl"}, ValueError, "unknown matmul library 'mkl'"),
    ({"matmul": True}, TypeError, "matmul must be a str"),
    ({"cache_dir": 3}, TypeError, "cache_dir must be a str or os.PathLike"),
    ({"cc": ["gcc"]}, TypeError, "cc must be a str or os.PathLike"),
    ({"debug_dir": ""}, ValueError, "debug_dir is empty"),
    ({"cflags": ["-O1", 2]}, TypeError, "cflags must be a str or a list/tuple of str"),
    ({"cflags": "-DX='a"}, ValueError, "cflags"),
    ({"options": [("strict", True)]}, TypeError, "options= must be a dict"),
    ({"mode": 3}, TypeError, "mode must be a str"),
    ({"nosuch": 1}, TypeError, "unknown trebuchet option 'nosuch'"),
])
def test_bad_options_are_rejected_when_compiling(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        trebuchet.compile(_fn, **kwargs)
    with pytest.raises(error, match=match):
        make_backend(**kwargs)


def test_cflags_string_is_split_like_a_shell() -> None:
    assert Options.from_env(cflags="-O1  -DNAME='a b'").cflags == ("-O1", "-DNAME=a b")
    assert Options.from_env(cflags=["-O1", "-g"]).cflags == ("-O1", "-g")


def test_cflags_string_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(5)
    out = trebuchet.compile(_fn, strict=True, cflags="-O1 -DTREBUCHET_TEST_FLAG=1",
                            graph_cache=False)(x)
    torch.testing.assert_close(out, _fn(x))
    assert trebuchet.stats()["kernels"] == 1


def test_paths_may_be_path_objects(tmp_path: pathlib.Path) -> None:
    opts = Options.from_env(cache_dir=tmp_path / "c", debug_dir=tmp_path / "d")
    assert opts.cache_dir == str(tmp_path / "c") and opts.debug_dir == str(tmp_path / "d")
    assert opts.debug


def test_environment_keeps_its_string_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREBUCHET_STRICT", "yes")
    monkeypatch.setenv("TREBUCHET_CFLAGS", "-O1 -g")
    monkeypatch.setenv("TREBUCHET_MATMUL", " BLAS")
    opts = Options.from_env()
    assert opts.strict is True and opts.cflags == ("-O1", "-g") and opts.matmul == "blas"
    monkeypatch.setenv("TREBUCHET_MATMUL", "fastest")
    with pytest.raises(ValueError, match="unknown matmul library 'fastest'"):
        Options.from_env()
