"""The C translation unit of a graph: the prelude, then each kernel's function
(kernels.py); kernels with identical code share one function (repeated layers
compile once), and kernels that check data get their error flag.
"""
from __future__ import annotations

import pathlib
import re
from typing import Iterable

from ...scheduler.describe import Param, Pointer
from ...scheduler.kernels import Kernel
from ..target import GeneratedCode
from .kernels import KernelWriter

PRELUDE = (pathlib.Path(__file__).parent / "prelude.h").read_text()

_BUF_NAME = re.compile(r"(?<![A-Za-z0-9])((?:in|buf|const)\d+)\b")


def canonical(code: str, params: list[Param], name: str) -> str:
    """Kernel code with buffer names replaced by their roles: equal text, equal kernel."""
    alias = {p.name: f"p{i}" for i, p in enumerate(params) if isinstance(p, Pointer)}
    body = "\n".join(line for line in code.splitlines() if not line.startswith("//"))
    body = body.replace(f"void {name}(", "void KERNEL(")

    def sub(m: re.Match) -> str:
        return alias.setdefault(m.group(1), f"q{len(alias)}")

    return _BUF_NAME.sub(sub, body)


def generate(kernels: Iterable[Kernel], internal: set[str], params: dict[str, list[Param]],
             notes: dict[str, str] | None = None) -> GeneratedCode:
    """The translation unit, and the C function each kernel calls (kernels with identical
    code share one function: repeated layers compile once)."""
    parts = [PRELUDE]
    functions: dict[str, str] = {}
    seen: dict[str, str] = {}
    for k in kernels:
        w = KernelWriter(k, internal, params[k.name], (notes or {}).get(k.name, ""))
        code = w.write()
        key = canonical(code, params[k.name], k.name)
        if key in seen:
            functions[k.name] = seen[key]
            parts.append(f"// {k.name}: same code as {seen[key]}; " + ", ".join(k.origins()))
            continue
        seen[key] = functions[k.name] = k.name
        parts.append(code)
    if any(re.search(r"\bt_(sin|cos)f\(", code) for code in parts[1:]):
        parts[0] = "#define T_SINCOS 1  /* the prelude's huge-argument sin/cos path */\n" + PRELUDE
    return GeneratedCode("\n\n".join(parts) + "\n", functions,
                         {k: params[k] for k in functions})
