"""The `autotune=True` option: on a GPU, the first call of a pointwise kernel at a size
binding times a few launch configurations around the heuristic's and keeps the fastest;
the choices are cached on disk beside the generated module (`tb_<hash>.tune.json` next to
`tb_<hash>.py`, launch.py), so a later process reuses them without timing again.

A configuration is relative to the launch heuristic (kernels.py, tiles.py): one scale per
block (the block is the heuristic's times 2**scale, clamped to 16..4096: prelude.py's
`_t_tuned`) and the warps. The lists, per kernel shape (`CONFIGS`):
  * pointwise (flattened, XBLOCK): the heuristic's block at 4 warps, half and twice the
    block at 4 warps, the block and twice it at 8 warps;
  * tile ([YBLOCK, XBLOCK]): the heuristic's tile at 4 and 8 warps, half the tile along y,
    along x, and a tile twice as tall at 8 warps.
Reduction kernels keep the heuristic (not tuned yet). Timing runs on copies of the tensor
arguments (`layout_copy`: their strides over a copy of the memory they span), so a kernel
writing into an input, or setting its error flag, leaves the real arguments untouched:
each configuration once to compile, then `REPEATS` runs between CUDA events, the median
kept; a configuration that fails to compile or launch is skipped. The real call then
launches the chosen configuration once. Copies that do not fit in memory: the heuristic.
Under a CUDA graph capture nothing is timed (the heuristic, or a choice already made).

The GPU timing path (`cuda_timer`) is written for Triton 3.6-3.9 and torch's CUDA events
but is UNVERIFIED on hardware (no GPU where it was written); the choice logic, the
configuration lists and the cache file are tested with a stand-in timer.
"""
from __future__ import annotations

import json
import pathlib
import statistics
from typing import Any, Callable

import torch

from .launch import write_atomic

Config = tuple[tuple[int, ...], int]          # (block scales, warps)

CONFIGS: dict[str, list[Config]] = {
    "pointwise": [((0,), 4), ((-1,), 4), ((1,), 4), ((0,), 8), ((1,), 8)],
    "tile": [((0, 0), 4), ((0, 0), 8), ((-1, 0), 4), ((0, -1), 4), ((1, 0), 8)],
}
REPEATS = 10
VERSION = 1

Timer = Callable[[Callable[[], None]], float]     # runs fn, returns milliseconds


def cuda_timer(fn: Callable[[], None]) -> float:
    """The median time in milliseconds of `fn` over REPEATS runs, after one run that
    compiles it, measured with CUDA events on the current stream (unverified on a GPU)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPEATS):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def tune_path(module: pathlib.Path) -> pathlib.Path:
    """The choices' file beside a generated module: tb_<hash>.tune.json."""
    return module.with_suffix(".tune.json")


def read_choices(path: pathlib.Path) -> dict[str, Config]:
    """The choices stored in `path` (key -> config); a missing, unreadable or malformed
    file, and entries that are not one of CONFIGS' configurations, are ignored."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    choices = data.get("choices")
    known = {c for configs in CONFIGS.values() for c in configs}
    out: dict[str, Config] = {}
    for key, value in (choices.items() if isinstance(choices, dict) else ()):
        try:
            config = (tuple(int(s) for s in value[0]), int(value[1]))
        except (TypeError, ValueError, IndexError):
            continue
        if config in known:
            out[key] = config
    return out


def write_choices(path: pathlib.Path, choices: dict[str, Config]) -> None:
    """Merge `choices` into the file, atomically (a temporary file renamed into place);
    a cache that cannot be written only costs timing again next time."""
    merged = {**read_choices(path), **choices}
    text = json.dumps({"version": VERSION,
                       "choices": {k: [list(s), w] for k, (s, w) in sorted(merged.items())}},
                      indent=1)
    try:
        write_atomic(path, text, ".json")
    except OSError:
        pass


def size_key(name: str, args: tuple) -> str:
    """The kernel's name and its size binding: the integer arguments (size symbols) and
    the tensors' shapes and dtypes."""
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{tuple(a.shape)}{str(a.dtype)[6:]}")
        elif isinstance(a, int):
            parts.append(str(a))
    return f"{name}|{';'.join(parts)}"


class AutoTuner:
    """The launch functions of one generated module, tuned: `wrap(name, fn)` returns a
    function with fn's arguments that launches with the chosen configuration."""

    def __init__(self, path: pathlib.Path, timer: Timer = cuda_timer,
                 capturing: Callable[[], bool] | None = None):
        self.path, self.timer = path, timer
        self.capturing = capturing or _capturing
        self.choices: dict[str, Config] = read_choices(path)
        self.declined: set[str] = set()       # keys where no configuration ran: the heuristic

    def wrap(self, name: str, fn: Callable) -> Callable:
        configs = CONFIGS.get(getattr(fn, "tb_shape", ""))
        if configs is None:
            return fn

        def launch(*args: Any) -> None:
            key = size_key(name, args)
            config = self.choices.get(key)
            if config is None and key not in self.declined and not self.capturing():
                config = self.choose(key, fn, configs, args)
            fn(*args, tb_config=config)
        launch.__name__ = name
        return launch

    def choose(self, key: str, fn: Callable, configs: list[Config], args: tuple) -> Config | None:
        """The fastest of `configs` on clones of the tensor arguments, stored; None (the
        heuristic) when none runs."""
        try:
            clones = tuple(layout_copy(a) if isinstance(a, torch.Tensor) else a for a in args)
        except RuntimeError:            # out of memory for the copies: the heuristic
            self.declined.add(key)
            return None
        times = {}
        for config in configs:
            try:
                times[config] = self.timer(lambda c=config: fn(*clones, tb_config=c))
            except Exception:       # noqa: BLE001 - a config that does not compile or launch
                continue
        if not times:
            self.declined.add(key)
            return None
        best = min(configs, key=lambda c: times.get(c, float("inf")))  # ties: the earlier
        self.choices[key] = best
        write_choices(self.path, {key: best})
        return best


def layout_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` with its strides, over a copy of the whole span of memory they reach
    (a kernel indexes from the data pointer with the strides it was generated for: a
    `clone()` of a strided view would be compacted, and indexing it would go out of it)."""
    if t.numel() == 0:
        return t.clone()
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.as_strided((span,), (1,)).clone().as_strided(t.shape, t.stride())


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


__all__ = ["AutoTuner", "CONFIGS", "cuda_timer", "read_choices", "write_choices", "tune_path",
           "size_key", "layout_copy"]
