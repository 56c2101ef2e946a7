"""All settings in one place: defaults, environment variables, per-compile options.

Environment variables (read when a compile starts, so tests can set them):
  TREBUCHET_DEBUG=1        write each graph's kernels and wrapper to debug_dir
  TREBUCHET_DEBUG_DIR      where (default: ./trebuchet_debug)
  TREBUCHET_CACHE_DIR      compiled-kernel and compiled-graph cache (default: ~/.cache/trebuchet)
  TREBUCHET_GRAPH_CACHE=0  do not reuse whole compiled graphs from the cache (the C build
                           cache still applies)
  TREBUCHET_TARGET         a target of codegen/target.py ("c", "reference", "triton") or "auto"
                           (the default: c for CPU tensors, triton for CUDA tensors; "triton"
                           runs CPU tensors under TRITON_INTERPRET=1 only)
  TREBUCHET_STRICT=1       raise on compile errors instead of falling back to eager
  TREBUCHET_PROFILE=1      time every kernel and extern call (see trebuchet.profile_report())
  TREBUCHET_CUDAGRAPHS=1   replay static-shape CUDA inference graphs as CUDA graphs
  TREBUCHET_MATMUL         float32 matrix products on CPU: "auto" (the default: oneDNN where
                           it measured faster than the BLAS in this process), "onednn" or
                           "blas" (ATen's mm/addmm as eager calls them); runtime/onednn.py
  TREBUCHET_AUTOTUNE=1     time a few launch configurations of each Triton pointwise kernel
                           on its first call at a size (GPU only), cached on disk
  CC                       the C compiler (default: cc)
  TREBUCHET_CFLAGS         extra C compiler flags
  TREBUCHET_LOG            info | debug: log each compiled graph (logger "trebuchet") to stderr

Options given in code (`trebuchet.compile(m, strict=True)`, or PyTorch's way,
`torch.compile(m, backend="trebuchet", options={"strict": True})`) are type-checked
by `check_option`; environment variables keep their string parsing ("1", "yes", ...).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shlex
from typing import Any

from .codegen.target import AUTO as AUTO_TARGETS
from .codegen.target import DEFAULT as DEFAULT_TARGET
from .codegen.target import NAMES as TARGET_NAMES

TARGETS = ("auto", *TARGET_NAMES)
# torch.compile's modes. Trebuchet has one way to compile: "default" is it, and the
# others are accepted (code written for the default backend keeps working) with a
# warning that they change nothing.
MATMULS = ("auto", "onednn", "blas")
# Options naming one of a few choices: the choices, and what an unknown one is called.
_CHOICES = {"target": (TARGETS, "target"), "matmul": (MATMULS, "matmul library")}
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "lite")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass
class Options:
    """Options of one `trebuchet.compile` / backend call."""

    target: str = "auto"          # "auto" | "c" | "reference" | "triton"
    strict: bool = False
    debug: bool = False
    debug_dir: str | None = None
    cache_dir: str | None = None
    cc: str | None = None
    cflags: tuple[str, ...] = ()
    inline_limit: int = 8          # ops a multi-use value may hold before it is stored
    graph_cache: bool = True       # reuse compiled graphs found on disk (runtime/graph_cache.py)
    profile: bool = False          # time each kernel/extern call (trebuchet.profile_report())
    # CUDA inference graphs with static shapes: captured in a torch.cuda.CUDAGraph after a
    # warm-up call, then replayed (one launch for the whole graph); other graphs run as
    # usual, with a warning (runtime/cudagraphs.py). Run once on an H200 (docs/benchmarks.md).
    cudagraphs: bool = False
    # Triton on a GPU: the first call of a pointwise kernel at a size binding times a few
    # launch configurations (block sizes, warps) around the heuristic's and keeps the
    # fastest, cached beside the kernel's module (codegen/triton/autotune.py). Under the
    # interpreter it is declined with a warning. The timing is not yet run on a GPU.
    autotune: bool = False
    # Float32 matrix products of CPU graphs: "auto" | "onednn" | "blas" (runtime/onednn.py).
    matmul: str = "auto"

    @classmethod
    def from_env(cls, **overrides: object) -> "Options":
        """The environment's settings, then `overrides` (checked: `check_option`).
        `options={...}` (PyTorch's convention for backend options) is the same as passing
        its items as keywords; `mode=` is checked by `check_mode` and changes nothing."""
        overrides = _flatten(overrides)
        opts = cls(
            target=os.environ.get("TREBUCHET_TARGET", "auto"),
            strict=_env_flag("TREBUCHET_STRICT"),
            profile=_env_flag("TREBUCHET_PROFILE"),
            cudagraphs=_env_flag("TREBUCHET_CUDAGRAPHS"),
            autotune=_env_flag("TREBUCHET_AUTOTUNE"),
            matmul=os.environ.get("TREBUCHET_MATMUL", "auto").strip().lower() or "auto",
            debug=_env_flag("TREBUCHET_DEBUG") or bool(os.environ.get("TREBUCHET_DEBUG_DIR")),
            debug_dir=os.environ.get("TREBUCHET_DEBUG_DIR"),
            cache_dir=os.environ.get("TREBUCHET_CACHE_DIR"),
            cc=os.environ.get("CC"),
            cflags=tuple(os.environ.get("TREBUCHET_CFLAGS", "").split()),
            graph_cache=os.environ.get("TREBUCHET_GRAPH_CACHE", "1").strip().lower()
            not in ("0", "false", "no", "off"),
        )
        for key, value in overrides.items():
            setattr(opts, key, check_option(key, value))
        if opts.debug_dir and overrides.get("debug", True) is not False:
            opts.debug = True
        for name in _CHOICES:                  # from the environment: not yet checked
            _check_choice(name, getattr(opts, name))
        return opts

    def resolved_target(self, device_type: str | None = None) -> str:
        """The target's name; "auto" by the device type of the graph's tensors (None: CPU)."""
        if self.target != "auto":
            return self.target
        return AUTO_TARGETS.get(device_type or "cpu", DEFAULT_TARGET)

    def cache_path(self) -> pathlib.Path:
        if self.cache_dir:
            return pathlib.Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return pathlib.Path(base) / "trebuchet"

    def debug_path(self) -> pathlib.Path:
        return pathlib.Path(self.debug_dir or "trebuchet_debug")

    def compiler(self) -> str:
        return self.cc or "cc"


LOG_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG, "warning": logging.WARNING}
_log_handler: logging.Handler | None = None


def configure_logging() -> None:
    """Set the "trebuchet" logger from TREBUCHET_LOG (read when a compile starts): at
    info, one line per compiled graph; a handler to stderr is added once, and only when
    the variable is set (an application's own logging setup is otherwise left alone)."""
    global _log_handler
    value = os.environ.get("TREBUCHET_LOG", "").strip().lower()
    if not value:
        return
    logger = logging.getLogger("trebuchet")
    if value not in LOG_LEVELS:
        logger.warning("TREBUCHET_LOG=%s is not a level: use info or debug (ignored)", value)
        return
    logger.setLevel(LOG_LEVELS[value])
    if _log_handler is None:
        _log_handler = logging.StreamHandler()
        _log_handler.setFormatter(logging.Formatter("[trebuchet] %(message)s"))
        logger.addHandler(_log_handler)


_BOOLS = ("strict", "debug", "graph_cache", "profile", "cudagraphs", "autotune")
_PATHS = ("debug_dir", "cache_dir", "cc")


def check_option(name: str, value: Any) -> Any:
    """`value` for option `name`, normalized (paths to str, a cflags string split as a
    shell would); TypeError for an unknown option or a wrong type, ValueError for a
    wrong value."""
    known = [f.name for f in dataclasses.fields(Options)]
    if name not in known:
        raise TypeError(f"unknown trebuchet option {name!r}; known: {', '.join(known)}, "
                        "and options= (a dict of these) and mode=")
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise TypeError(f"trebuchet option {name} must be True or False, "
                            f"not {type(value).__name__} {value!r}")
        return value
    if name in _PATHS:
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"trebuchet option {name} must be a str or os.PathLike, "
                            f"not {type(value).__name__} {value!r}")
        path = os.fspath(value)
        if not isinstance(path, str):
            raise TypeError(f"trebuchet option {name} must be a text path, not {path!r}")
        if not path.strip():
            raise ValueError(f"trebuchet option {name} is empty")
        return path
    if name in _CHOICES:
        return _check_choice(name, value)
    if name == "cflags":
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))        # "-O1 -g" is two flags, not 7 characters
            except ValueError as e:
                raise ValueError(f"trebuchet option cflags {value!r}: {e}") from None
        if not isinstance(value, (list, tuple)) or not all(isinstance(f, str) for f in value):
            raise TypeError(f"trebuchet option cflags must be a str or a list/tuple of str, "
                            f"not {value!r}")
        return tuple(value)
    if name == "inline_limit":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"trebuchet option inline_limit must be an int, "
                            f"not {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"trebuchet option inline_limit must be >= 0, not {value}")
        return value
    raise AssertionError(f"option {name} has no check")  # every field is handled above


def _check_choice(name: str, value: Any) -> str:
    choices, what = _CHOICES[name]
    if not isinstance(value, str):
        raise TypeError(f"trebuchet option {name} must be a str, not {type(value).__name__}")
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ValueError(f"unknown {what} {value!r}: expected {expected}")
    return value


def check_mode(mode: Any) -> str:
    """torch.compile's `mode`, checked: one of MODES (None is "default")."""
    if mode is None:
        return "default"
    if not isinstance(mode, str):
        raise TypeError(f"torch.compile mode must be a str, not {type(mode).__name__} {mode!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} for trebuchet: expected one of "
                         f"{', '.join(MODES)}")
    return mode


def _flatten(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword options with `options={...}` merged in and `mode` taken out (checked)."""
    overrides = dict(overrides)
    nested = overrides.pop("options", None)
    mode = check_mode(overrides.pop("mode", None))
    if mode != "default":
        from .warn import warn_user
        warn_user(f"trebuchet: mode={mode!r} changes nothing; Trebuchet compiles every mode "
                  "the same way")
    if nested is None:
        return overrides
    if not isinstance(nested, dict) or not all(isinstance(k, str) for k in nested):
        raise TypeError(f"trebuchet options= must be a dict of option names to values, "
                        f"not {nested!r}")
    both = sorted(set(nested) & set(overrides))
    if both:
        raise TypeError(f"trebuchet option(s) {', '.join(both)} given both as keywords and in options=")
    return {**overrides, **nested}
