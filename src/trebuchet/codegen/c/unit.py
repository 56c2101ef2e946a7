"""The C translation unit of a graph: the prelude, then each kernel's function
(kernels.py; a scatter kernel's by scatter.py); kernels of identical structure share one
function (repeated layers compile once), and kernels that differ only in constants
share one body (constants.py: the same layer at other sizes compiles once).
"""
from __future__ import annotations

import pathlib
from typing import Iterable

from ...ir.expr import Expr, Load, rewrite
from ...ir.nodes import Scatter
from ...scheduler.describe import Param, Pointer
from ...scheduler.coalesce import coalesce
from ...scheduler.kernels import Kernel, is_scatter
from ..target import GeneratedCode
from .constants import parse_parts, share_constants, sharing_groups
from .kernels import KernelWriter, specializable
from .scatter import ScatterWriter

PRELUDE = (pathlib.Path(__file__).parent / "prelude.h").read_text()


def structure(k: Kernel, params: list[Param], internal: set[str]) -> tuple:
    """Everything a kernel's C function depends on, with buffer names replaced by their
    roles (pointer parameters by position, the kernel's own buffers by node order):
    kernels of equal structure have the same code up to those names, so they can share
    one function (called with their own arguments)."""
    names = {p.name: f"p{i}" for i, p in enumerate(params) if isinstance(p, Pointer)}
    for n in k.nodes:
        names.setdefault(n.buf.name, f"q{len(names)}")

    def role(e: Expr) -> Expr | None:
        if isinstance(e, Load):
            return Load(names.get(e.buf, e.buf), e.index, e.dtype, e.dynamic)
        return None

    def scatter(n) -> tuple:     # a Scatter's store offset, initial contents and layout
        if not isinstance(n.buf, Scatter):
            return ()
        return (n.dynamic and rewrite(n.dynamic, role), rewrite(n.buf.init, role),
                tuple(n.buf.shape), tuple(n.buf.stride))

    nodes = tuple((names[n.buf.name], type(n.buf).__name__, n.buf.dtype,
                   getattr(n.buf, "reduce_type", None), rewrite(n.body, role), n.store_index,
                   n.stage, n.level, n.buf.name in internal, *scatter(n)) for n in k.nodes)
    args = tuple((type(p).__name__, names[p.name], p.dtype, p.role) if isinstance(p, Pointer)
                 else (type(p).__name__, p.name) for p in params)
    return (tuple(k.outer), tuple(k.inner), args, nodes)


def generate(kernels: Iterable[Kernel], internal: set[str], params: dict[str, list[Param]],
             notes: dict[str, str] | None = None) -> GeneratedCode:
    """The translation unit, and the C function each kernel calls (kernels of identical
    structure share one function: repeated layers compile once)."""
    parts: list[tuple[str, str]] = []
    functions: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    written: dict[int, Kernel] = {}        # part index -> a kernel `_specialize` may rewrite
    sincos = False
    for k in kernels:
        if not is_scatter(k):
            k = coalesce(k)      # longer innermost loops (H x W as one)
        key = structure(k, params[k.name], internal)
        if key in seen:
            functions[k.name] = seen[key]
            parts.append((k.name, f"// {k.name}: same code as {seen[key]}; " + ", ".join(k.origins())))
            continue
        seen[key] = functions[k.name] = k.name
        writer = ScatterWriter if is_scatter(k) else KernelWriter
        w = writer(k, internal, params[k.name], (notes or {}).get(k.name, ""))
        if writer is KernelWriter and specializable(k):
            written[len(parts)] = k
        parts.append((k.name, w.write()))
        sincos |= w.sincos
    taken_apart = parse_parts(parts)
    _specialize(parts, taken_apart, written, internal, params, notes or {})
    prelude = PRELUDE
    if sincos:
        prelude = "#define T_SINCOS 1  /* the prelude's huge-argument sin/cos path */\n" + PRELUDE
    return GeneratedCode("\n\n".join([prelude, *share_constants(parts, taken_apart)]) + "\n", functions,
                         {k: params[k] for k in functions})


def _specialize(parts: list[tuple[str, str]], taken_apart: list, written: dict[int, Kernel],
                internal: set[str], params: dict[str, list[Param]], notes: dict[str, str]) -> None:
    """Rewrite kernels with the code of their own sizes' case only (KernelWriter's
    `specialize`: a column reduction's split known at compile time), group by group of
    kernels that share one body: a group is rewritten when its rewritten kernels still
    share one body (or it is one kernel), else kept as written. Specialized everywhere,
    MobileNetV3-Small's batch norm backwards over 16 to 576 channels stopped sharing and
    its training forward's C took 3x as long to compile. `parts` and `taken_apart` (the
    parts' `parse_parts`) are updated in place."""
    for members in sharing_groups(taken_apart):
        if not all(i in written for i in members):
            continue
        writers = [KernelWriter(written[i], internal, params[parts[i][0]], notes.get(parts[i][0], ""),
                                specialize=True) for i in members]
        cases = {w.split_case() for w in writers}
        if None in cases or len(cases) > 1:       # other code for other sizes: keep sharing
            continue
        new = [(parts[i][0], w.write()) for i, w in zip(members, writers)]
        parsed = parse_parts(new)
        if len(members) == 1 or len(sharing_groups(parsed)) == 1:
            for i, part, f in zip(members, new, parsed):
                parts[i], taken_apart[i] = part, f
