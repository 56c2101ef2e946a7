"""Removing Trebuchet's own files from a cache folder (`trebuchet clear-cache`).

The cache folder may be shared with other files (TREBUCHET_CACHE_DIR can name any
folder), so nothing is removed by folder: each cache lists the files it writes,
recognised by their exact names and places (each target's `cache_items`, for C
`cbuild.cache_items`; `graph_cache.cache_items`); those files are deleted, then
their folders when that leaves them empty. Anything else stays, and the report says what was removed, what
could not be and why.
"""
from __future__ import annotations

import dataclasses
import errno
import pathlib
import re


@dataclasses.dataclass
class CacheItem:
    """One entry of ours (or an unfinished one): its files, then its folders, innermost first."""

    kind: str                       # "kernels" | "graph" | "temp"
    files: list[pathlib.Path]
    dirs: list[pathlib.Path]


@dataclasses.dataclass
class ClearReport:
    removed: dict[str, int] = dataclasses.field(default_factory=dict)   # kind -> entries
    bytes: int = 0
    failed: list[tuple[pathlib.Path, str]] = dataclasses.field(default_factory=list)
    kept: list[pathlib.Path] = dataclasses.field(default_factory=list)  # not ours, left alone


def clear(root: pathlib.Path) -> ClearReport:
    """Delete the cache entries of ours under `root` and nothing else."""
    from ..codegen.target import NAMES, get_target   # their builds import this module
    from . import graph_cache

    report = ClearReport()
    items = [i for name in NAMES for i in get_target(name).cache_items(root)]
    items += graph_cache.cache_items(root)
    for item in items:
        ok = all([_remove_file(f, report) for f in item.files])
        ok = all([_remove_dir(d, report) for d in item.dirs]) and ok
        # Counted when all of it is gone; a folder holding only other files is not an entry.
        if ok and (item.files or not item.dirs[-1].exists()):
            report.removed[item.kind] = report.removed.get(item.kind, 0) + 1
    # The folders grouping entries (<key[:2]>/, graphs/), once they are left empty: only
    # those that held an entry of ours, so an empty folder of the user's named "ab" stays.
    groups: set[pathlib.Path] = set()
    for item in items:
        path = item.dirs[-1] if item.dirs else item.files[0]
        while path.parent != root and root in path.parents:
            path = path.parent
            groups.add(path)
    for folder in sorted(groups, key=lambda p: len(p.parts), reverse=True):
        _remove_dir(folder, report)
    seen = {p for item in items for p in (*item.files, *item.dirs)} | groups
    seen |= {p for p, _ in report.failed}
    report.kept += [c for c in children(root) if c not in seen and c not in report.kept]
    report.kept.sort()
    return report


def _remove_file(path: pathlib.Path, report: ClearReport) -> bool:
    try:
        size = path.lstat().st_size
        path.unlink()
    except FileNotFoundError:
        return True                     # another process removed it first
    except OSError as e:
        report.failed.append((path, e.strerror or str(e)))
        return False
    report.bytes += size
    return True


def _remove_dir(path: pathlib.Path, report: ClearReport) -> bool:
    """Remove a folder of ours if it is empty; one holding other files is kept (and
    listed); True when it is gone or kept only for files that are not ours."""
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            report.failed.append((path, e.strerror or str(e)))
            return False
    failed = {p for p, _ in report.failed}
    try:
        left = list(path.iterdir())
    except OSError as e:
        report.failed.append((path, f"cannot list it: {e.strerror or e}"))
        return False
    if any(p in failed or p.parent in failed for p in left):
        return False                    # ours, already reported
    report.kept += [p for p in left if p not in report.kept]
    return True


def children(folder: pathlib.Path) -> list[pathlib.Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def is_dir(path: pathlib.Path) -> bool:
    """A real folder (not a link to one: its target is not ours to clear)."""
    return path.is_dir() and not path.is_symlink()


def is_file(path: pathlib.Path) -> bool:
    return path.is_file() and not path.is_symlink()


def matching(folder: pathlib.Path, names: re.Pattern[str]) -> list[pathlib.Path]:
    """The regular files in `folder` whose names match `names`."""
    return [p for p in children(folder) if names.fullmatch(p.name) and is_file(p)]
