"""Warnings attributed to the user's code.

A graph is compiled deep inside TorchDynamo and AOTAutograd, so a fixed
`stacklevel` points into torch. `warn_user` reports the innermost frame that is
neither torch's, Trebuchet's nor the standard library's: the line that called the
compiled function (or ran its backward).
"""
from __future__ import annotations

import os
import sys
import sysconfig
import types
import warnings

import torch

from .errors import TrebuchetWarning

def _folder(path: str) -> str:
    return os.path.join(os.path.realpath(path), "")


_SKIP = (_folder(os.path.dirname(torch.__file__)), _folder(os.path.dirname(__file__)))
_STDLIB = _folder(sysconfig.get_paths()["stdlib"])
# In some installs (conda) site-packages lies inside the stdlib folder: not ours to skip.
_SITE = tuple({_folder(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):               # <frozen importlib...>; <string> is user code
        return filename.startswith("<frozen")
    path = os.path.realpath(filename)
    return path.startswith(_SKIP) or (path.startswith(_STDLIB) and not path.startswith(_SITE))


def user_frame() -> types.FrameType | None:
    """The innermost frame outside torch, Trebuchet and the standard library."""
    frame = sys._getframe(1)
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def warn_user(message: str, category: type[Warning] = TrebuchetWarning) -> None:
    """`warnings.warn(message, category)` with the location of the user's code."""
    frame = user_frame()
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    globs = frame.f_globals
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=globs.get("__name__"),
                           registry=globs.setdefault("__warningregistry__", {}))
    # No module_globals: for `python -c` code (<string>, __main__ loaded by the builtin
    # importer) linecache would ask that loader for the source and raise ImportError.
