"""The memory-wall report: where a model's time goes, eager vs compiled.

    zoo.py       the models known by name, or module.path:callable
    classes.py   operator classes (contraction, normalization, element-wise, data movement, other)
    counting.py  FLOPs and bytes of ATen ops (from shapes) and of generated kernels (from the IR)
    machine.py   the roofs: copy bandwidth and matmul FLOP/s, measured in the run
    eager.py     every eager ATen op counted (dispatch mode) and timed (torch.profiler)
    compiled.py  every kernel and library call, from the `profile` option
    run.py       the measurements, as one dict (the JSON)
    text.py      the tables `trebuchet report` prints
    html.py      the self-contained HTML page (matplotlib charts as inline SVG)
    explain.py   `trebuchet explain`: graph breaks, kernels, and why neighbours did not fuse
"""
from __future__ import annotations

import json
import pathlib
import re
from typing import Any


def slug(name: str) -> str:
    """A file name for a model spec ("pkg.mod:make" -> "pkg.mod_make")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def write(data: dict[str, Any], out_dir: pathlib.Path, name: str, html: bool = True) -> list[pathlib.Path]:
    """Write `<name>.json` (and `<name>.html`) into out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{slug(name)}.json"]
    paths[0].write_text(json.dumps(data, indent=1, default=str) + "\n")
    if html:
        from .html import page

        paths.append(out_dir / f"{slug(name)}.html")
        paths[1].write_text(page(data))
    return paths
