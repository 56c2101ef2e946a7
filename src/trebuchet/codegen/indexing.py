"""Print sympy index expressions as code (C or Python) for int64 arithmetic.

Index expressions are non-negative integer arithmetic over loop variables and
size symbols, with FloorDiv/ModularIndexing from PyTorch's sympy functions; a
float-valued expression of sizes (a SymFloat scalar) prints as double arithmetic.
"""
from __future__ import annotations

from typing import Callable

import sympy
from torch.utils._sympy import functions as F


def print_index(expr: sympy.Expr, lang: str = "c", name: Callable[[sympy.Symbol], str] = str) -> str:
    """`lang` is "c" (int64_t arithmetic), "py" (Python ints) or "triton" (Python
    arithmetic on Triton values: min/max as tl.minimum/tl.maximum, elementwise)."""
    p = _Printer(lang, name)
    return p.doprint(sympy.sympify(expr))


class _Printer:
    def __init__(self, lang: str, name: Callable[[sympy.Symbol], str]):
        self.lang, self.name = lang, name

    def doprint(self, e: sympy.Expr) -> str:
        if isinstance(e, sympy.Integer) or (e.is_Number and e.is_integer):
            v = int(e)
            if self.lang == "c":
                return f"INT64_C({v})" if abs(v) > 2**31 - 1 else str(v)
            return str(v)
        if isinstance(e, sympy.Symbol):
            return self.name(e)
        if isinstance(e, sympy.Add):
            terms = [self.doprint(a) for a in sympy.Add.make_args(e)]
            return "(" + " + ".join(terms) + ")"
        if isinstance(e, sympy.Mul):
            return "(" + " * ".join(self.doprint(a) for a in e.args) + ")"
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) > 0:
            return "(" + " * ".join([self.doprint(e.base)] * int(e.exp)) + ")"
        if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) < 0:    # 1 / n: a float
            return f"(1.0 / {self._float(e.base ** -e.exp)})"
        if isinstance(e, F.FloorDiv):
            a, b = (self.doprint(x) for x in e.args)
            return f"({a} / {b})" if self.lang == "c" else f"({a} // {b})"
        if isinstance(e, F.ModularIndexing):
            a, b, m = (self.doprint(x) for x in e.args)
            div = "/" if self.lang == "c" else "//"
            return f"(({a} {div} {b}) % {m})"
        if isinstance(e, (F.Mod, F.PythonMod, sympy.Mod)):
            a, b = (self.doprint(x) for x in e.args)
            return f"({a} % {b})"
        if isinstance(e, (sympy.Max, F.Max)):
            return self._fold(e.args, "max")
        if isinstance(e, (sympy.Min, F.Min)):
            return self._fold(e.args, "min")
        if isinstance(e, (sympy.floor, F.FloorToInt)) and len(e.args) == 1:
            inner = e.args[0]
            if isinstance(inner, sympy.Mul):
                num, den = inner.as_numer_denom()
                return self.doprint(F.FloorDiv(num, den))
        if isinstance(e, F.CeilDiv):
            a, b = e.args
            return self.doprint(F.FloorDiv(a + b - 1, b))
        # Float-valued size arithmetic (a SymFloat scalar: batch norm's n / (n - 1))
        if isinstance(e, (F.IntTrueDiv, F.FloatTrueDiv)):
            a, b = (self._float(x) for x in e.args)
            return f"({a} / {b})"
        if isinstance(e, F.ToFloat):
            return self._float(e.args[0])
        if isinstance(e, sympy.Float):
            return repr(float(e))
        if isinstance(e, sympy.Rational):
            raise NotImplementedError(f"non-integer index {e}")
        raise NotImplementedError(f"cannot print index {e} ({type(e).__name__})")

    def _float(self, e: sympy.Expr) -> str:
        """e as a double (C) or float (Python, Triton) value."""
        code = self.doprint(e)
        return f"((double){code})" if self.lang == "c" else f"float({code})" if self.lang == "py" else code

    def _fold(self, args: tuple, fn: str) -> str:
        parts = [self.doprint(a) for a in args]
        out = parts[0]
        for p in parts[1:]:
            if self.lang == "c":
                cmp = ">" if fn == "max" else "<"
                out = f"(({out}) {cmp} ({p}) ? ({out}) : ({p}))"
            elif self.lang == "triton":
                out = f"tl.{fn}imum({out}, {p})"
            else:
                out = f"{fn}({out}, {p})"
        return out
