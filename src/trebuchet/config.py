"""All settings in one place: defaults, environment variables, per-compile options.

Environment variables (read when a compile starts, so tests can set them):
  TREBUCHET_DEBUG=1        write each graph's kernels and wrapper to debug_dir
  TREBUCHET_DEBUG_DIR      where (default: ./trebuchet_debug)
  TREBUCHET_CACHE_DIR      compiled-kernel and compiled-graph cache (default: ~/.cache/trebuchet)
  TREBUCHET_GRAPH_CACHE=0  do not reuse whole compiled graphs from the cache (the C build
                           cache still applies)
  TREBUCHET_TARGET         "c", "reference" or "auto" (default auto = c)
  TREBUCHET_STRICT=1       raise on compile errors instead of falling back to eager
  TREBUCHET_PROFILE=1      time every kernel and extern call (see trebuchet.profile_report())
  CC                       the C compiler (default: cc)
  TREBUCHET_CFLAGS         extra C compiler flags
"""
from __future__ import annotations

import dataclasses
import os
import pathlib


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass
class Options:
    """Options of one `trebuchet.compile` / backend call."""

    target: str = "auto"          # "auto" | "c" | "reference"
    strict: bool = False
    debug: bool = False
    debug_dir: str | None = None
    cache_dir: str | None = None
    cc: str | None = None
    cflags: tuple[str, ...] = ()
    inline_limit: int = 8          # ops a multi-use value may hold before it is stored
    graph_cache: bool = True       # reuse compiled graphs found on disk (runtime/graph_cache.py)
    profile: bool = False          # time each kernel/extern call (trebuchet.profile_report())

    @classmethod
    def from_env(cls, **overrides: object) -> "Options":
        opts = cls(
            target=os.environ.get("TREBUCHET_TARGET", "auto"),
            strict=_env_flag("TREBUCHET_STRICT"),
            profile=_env_flag("TREBUCHET_PROFILE"),
            debug=_env_flag("TREBUCHET_DEBUG") or bool(os.environ.get("TREBUCHET_DEBUG_DIR")),
            debug_dir=os.environ.get("TREBUCHET_DEBUG_DIR"),
            cache_dir=os.environ.get("TREBUCHET_CACHE_DIR"),
            cc=os.environ.get("CC"),
            cflags=tuple(os.environ.get("TREBUCHET_CFLAGS", "").split()),
            graph_cache=os.environ.get("TREBUCHET_GRAPH_CACHE", "1").strip().lower()
            not in ("0", "false", "no", "off"),
        )
        for key, value in overrides.items():
            if not hasattr(opts, key):
                raise TypeError(f"unknown trebuchet option {key!r}; known: "
                                f"{', '.join(f.name for f in dataclasses.fields(cls))}")
            setattr(opts, key, value)
        if opts.debug_dir and overrides.get("debug", True) is not False:
            opts.debug = True
        if opts.target not in ("auto", "c", "reference"):
            raise ValueError(f"unknown target {opts.target!r}: expected 'auto', 'c' or 'reference'")
        return opts

    def resolved_target(self) -> str:
        return "c" if self.target == "auto" else self.target

    def cache_path(self) -> pathlib.Path:
        if self.cache_dir:
            return pathlib.Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return pathlib.Path(base) / "trebuchet"

    def debug_path(self) -> pathlib.Path:
        return pathlib.Path(self.debug_dir or "trebuchet_debug")

    def compiler(self) -> str:
        return self.cc or "cc"
