"""The cache folder's files: `trebuchet clear-cache` removes Trebuchet's entries and
nothing else and says what it did; failed builds and read-only caches leave nothing."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import trebuchet
from trebuchet import cli
from trebuchet.runtime import cache_files, graph_cache

SRC_DIR = str(pathlib.Path(__file__).resolve().parent.parent / "src")
KEY = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"     # 64 hex digits


def _fn(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * 2 + 1


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(path))
    return path


def _compile_once() -> None:
    x = torch.randn(6)
    torch.testing.assert_close(trebuchet.compile(_fn, strict=True)(x), _fn(x))


def _ours(cache: pathlib.Path) -> list[pathlib.Path]:
    return sorted([*cache.glob("*/*/kernels.so"), *cache.glob("graphs/*/*.pkl")])


def test_clear_cache_keeps_the_users_files(cache: pathlib.Path,
                                           capsys: pytest.CaptureFixture) -> None:
    _compile_once()
    assert len(_ours(cache)) == 2                       # a library and a graph
    entry = next(cache.glob("*/*/kernels.so")).parent
    user = [cache / "notes.txt", entry / "mine.txt", cache / "graphs" / "README",
            cache / "ab" / KEY / "kernels.so.bak"]
    user[-1].parent.mkdir(parents=True)
    for path in user:
        path.write_text("the user's")
    (cache / "cd").mkdir()                               # an empty folder of the user's
    assert cli.main(["clear-cache"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 compiled kernel libraries, 1 compiled graphs" in out, out
    assert "notes.txt" in out and "not Trebuchet's" in out
    assert _ours(cache) == []
    assert all(p.read_text() == "the user's" for p in user)
    assert (cache / "cd").is_dir()
    assert not (entry / "kernels.c").exists() and not (entry / "kernels.sha256").exists()


def test_clear_cache_removes_stale_and_earlier_layout_files(cache: pathlib.Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    stale = [cache / "ab" / KEY / "tmpabc_1234" / "unit0.o",     # an interrupted old build
             cache / f".{KEY}.x1y2z3_4.tmp" / "kernels.c",        # an interrupted build
             cache / "graphs" / "ab" / "tmp1234abcd.tmp",         # an interrupted graph write
             cache / "graphs" / "ab" / f".{KEY}.abcd1234.tmp",
             cache / ".probe4242"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    (cache / "ab" / ("ab" + "f" * 62)).mkdir()                    # an entry left empty
    lookalike = cache / "ab" / (KEY + "0")                        # not an entry's name
    lookalike.mkdir()
    assert cli.main(["clear-cache"]) == 0
    assert "6 unfinished or stale temporaries (50 bytes)" in capsys.readouterr().out
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == [
        pathlib.Path("ab"), lookalike.relative_to(cache)]


def test_clear_cache_reports_what_it_could_not_remove(cache: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    _compile_once()
    before = _ours(cache)
    folders = [p.parent for p in before]
    for folder in folders:
        folder.chmod(0o500)
    try:
        (folders[0] / "probe").write_bytes(b"")
        (folders[0] / "probe").unlink()
        chmod_works = False          # root ignores permissions: refuse the removal instead
    except OSError:
        chmod_works = True
    if not chmod_works:
        real_unlink = pathlib.Path.unlink

        def refuse(self: pathlib.Path, missing_ok: bool = False) -> None:
            if cache in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            real_unlink(self, missing_ok)

        monkeypatch.setattr(pathlib.Path, "unlink", refuse)
    try:
        code = cli.main(["clear-cache"])
    finally:
        monkeypatch.undo()
        for folder in folders:
            folder.chmod(0o700)
    out, err = capsys.readouterr()
    assert code == 1
    assert "removed no entries (0 bytes)" in out, out
    assert err.count("could not remove") >= 2 and "Permission denied" in err, err
    assert _ours(cache) == before


def test_clear_cache_of_a_missing_or_non_folder_path(tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(tmp_path / "none"))
    assert cli.main(["clear-cache"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    afile = tmp_path / "afile"
    afile.write_text("the user's")
    monkeypatch.setenv("TREBUCHET_CACHE_DIR", str(afile))
    assert cli.main(["clear-cache"]) == 1
    assert afile.read_text() == "the user's"


def test_failed_c_compile_leaves_no_entry(cache: pathlib.Path, tmp_path: pathlib.Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bad_cc = tmp_path / "badcc"
    bad_cc.write_text("#!/bin/sh\necho 'badcc: refused' >&2\nexit 1\n")
    bad_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(bad_cc))
    x = torch.randn(6)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.testing.assert_close(trebuchet.compile(_fn)(x), _fn(x))
    assert any("badcc: refused" in str(w.message) for w in record)
    left = sorted(p.relative_to(cache) for p in cache.rglob("*")
                  if p.parts[len(cache.parts)] != "graphs")        # the graph entry is valid
    assert left == [], left
    assert not [p for p in cache.rglob("*") if p.is_dir() and not any(p.iterdir())]


def test_failed_graph_write_leaves_no_temporary(cache: pathlib.Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk:
        """graph_cache's `os`, whose rename into place fails (the real `os` is untouched)."""

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def replace(self, src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(graph_cache, "os", FullDisk())
    _compile_once()
    monkeypatch.undo()
    assert list(cache.glob("graphs/*/*")) == []
    assert cache_files.clear(cache).failed == []


READ_ONLY_CACHE = textwrap.dedent("""
    import torch, trebuchet
    from trebuchet.runtime import cbuild
    fn = lambda a: torch.sin(a) * 2 + 1
    x = torch.randn(6)
    torch.testing.assert_close(trebuchet.compile(fn, strict=True)(x), fn(x))
    assert cbuild._fallback_dir is not None and any(cbuild._fallback_dir.rglob("kernels.so"))
    print("FALLBACK", cbuild._fallback_dir)
""")


def test_read_only_cache_leaves_no_temporary_folder(tmp_path: pathlib.Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (tmpdir / "trebuchet-cache-users-own").mkdir()      # not this process's: must stay
    afile = tmp_path / "afile"
    afile.write_text("a file, so the cache folder below it cannot be created (even by root)")
    env = dict(os.environ, TMPDIR=str(tmpdir), TREBUCHET_CACHE_DIR=str(afile / "cache"),
               PYTHONPATH=os.pathsep.join(p for p in (SRC_DIR, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", READ_ONLY_CACHE], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fallback = pathlib.Path(proc.stdout.split("FALLBACK", 1)[1].strip())
    assert fallback.parent == tmpdir
    assert not fallback.exists()
    assert sorted(p.name for p in tmpdir.iterdir()) == ["trebuchet-cache-users-own"]
