"""Expression emission shared by every generating target: a kernel body's IR expression
becomes one named value per distinct subexpression (structural CSE, per scope).

Input: `ir/expr.py` expressions. Output: statement lines and value names. A target
supplies its op table (primitive name -> rule writing the code of one `Op` from its
arguments' names) and the code of the leaves (constants, index values, loads) and of
one declaration; its kernel shapes (loops, reductions) subclass `Emitter`.
"""
from __future__ import annotations

from typing import Callable, Mapping

from ..ir.expr import Const, Expr, Index, Load, Op

# primitive -> (the Op, its arguments' code) -> the Op's code
OpTable = Mapping[str, Callable[[Op, list[str]], str]]


class Emitter:
    """Emits expressions into `lines`; `scopes` map expressions already computed to names."""

    def __init__(self, ops: OpTable) -> None:
        self.ops = ops
        self.lines: list[str] = []
        self.scopes: list[dict[Expr, str]] = [{}]
        self.tmp = 0
        self.local: dict[str, str] = {}    # buffer name -> local variable holding its value

    def var(self, e: Expr, indent: str) -> str:
        """Emit the statements computing e (reusing values in scope); return its name."""
        stack: list[tuple[Expr, bool]] = [(e, False)]
        while stack:
            node, ready = stack.pop()
            if self._find(node) is not None:
                continue
            if not ready:
                stack.append((node, True))
                stack.extend((c, False) for c in node.children() if self._find(c) is None)
                continue
            code = self._code(node)
            if isinstance(node, Const):
                self.scopes[-1][node] = code      # constants are written inline
                continue
            name = f"t{self.tmp}"
            self.tmp += 1
            self.lines.append(indent + self.declare(name, node, code))
            self.scopes[-1][node] = name
        return self._lookup(e)

    def hoist(self, roots: list[Expr], varies: Callable[[Expr], bool], indent: str) -> None:
        """Emit, before a loop, the largest subexpressions of `roots` that do not vary
        along it (`varies` false: a per-row scale, an embedding row's checked index), so
        they are computed once per row rather than per element or chunk."""
        stack = list(roots)
        seen: set[Expr] = set()
        while stack:
            e = stack.pop()
            if e in seen or isinstance(e, Const) or self._find(e) is not None:
                continue
            seen.add(e)
            if isinstance(e, (Op, Load)) and not varies(e):
                self.var(e, indent)
            else:
                stack.extend(e.children())

    def _find(self, e: Expr) -> str | None:
        for scope in reversed(self.scopes):
            if e in scope:
                return scope[e]
        return None

    def _lookup(self, e: Expr) -> str:
        for scope in reversed(self.scopes):
            if e in scope:
                return scope[e]
        raise KeyError(e)

    def _code(self, node: Expr) -> str:
        if isinstance(node, Const):
            return self.const_code(node)
        if isinstance(node, Index):
            return self.index_code(node)
        if isinstance(node, Load):
            if node.buf in self.local and node.dynamic is None:
                return self.local[node.buf]
            return self.load_code(node)
        assert isinstance(node, Op)
        return self.op_code(node, [self._lookup(a) for a in node.args])

    def op_code(self, node: Op, args: list[str]) -> str:
        """The code of one primitive: the op table's rule."""
        return self.ops[node.op](node, args)

    # ---- what each target writes ----
    def const_code(self, node: Const) -> str:
        raise NotImplementedError

    def index_code(self, node: Index) -> str:
        raise NotImplementedError

    def load_code(self, node: Load) -> str:
        """A load from memory (`node.dynamic`, if any, is already emitted: `_lookup` it)."""
        raise NotImplementedError

    def declare(self, name: str, node: Expr, code: str) -> str:
        """The statement binding `name` to the value `code` of `node`."""
        raise NotImplementedError
