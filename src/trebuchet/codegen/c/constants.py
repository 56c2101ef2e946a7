"""Kernels that differ only in their constants share one C function (codegen/c/unit.py
calls `share_constants` on the written kernels).

A network's layers repeat with other sizes: MobileNetV3's batch norms are one kernel
each, the same code over 16, 24, ..., 576 channels. unit.py already shares kernels of
identical structure; this module shares the rest of what differs only in numbers. Each
kernel's function text is split into tokens; its *skeleton* is that text with the buffer
names (its parameters and the locals named after them) replaced by their order of first
use in the body (a signature lists them by name, so a twin kernel may list them in
another order) and each numeric literal replaced by its C type. Kernels with equal
skeletons become one `static` function, `<first>_body`, in which every literal whose
value differs between them is a parameter of exactly the literal's C type (`int`,
`long`, `double`, `float`), so each use computes what the literal computed; each kernel
keeps its name and signature as a one-line function that passes its own buffers and
literals. The body is `noinline, noclone` so that GCC does not copy it back per caller,
the compile time this saves (about half of a MobileNetV3 training step's C code is such
repeats).

Literals stay literal (and must then be equal for kernels to share) where a constant
matters to the code GCC makes or C requires one: preprocessor lines (`#pragma omp`, but
for its run-time `if(...)` clause), array sizes in declarations, `__attribute__`s
(`aligned(64)`), and an integer right operand of `/` and `%` (GCC turns division by a
constant into a multiply). Literals with a suffix other than `f` and hexadecimal
integers stay too. A kernel passes its literals as the same C text, so a value is
rounded to its type exactly as the literal was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# One C token: a comment, a string, a hexadecimal float, a number, a name, a run of
# blanks, or any other character (a newline included, so the tokens join back to the text).
_TOKEN = re.compile(r"""
    (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<number>0[xX][0-9a-fA-F]*\.?[0-9a-fA-F]*[pP][+-]?\d+[fFlL]?
              |0[xX][0-9a-fA-F]+[uUlL]*
              |(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fFlLuU]*)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<space>[ \t]+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
# The names of buffers (lowering/registry.py `new_name`, graph inputs) and of the locals
# the kernel writers derive from them (acc_buf3, part_buf3, ...), and the kernel's own.
_BUFFER_NAME = re.compile(r"(?:a_|acc_|ai_|arg_|part_|v_)?(?:buf|in|const)\d+|kernel\d+")
_DECLARED_TYPES = re.compile(r"(?:const|float|double|int|long|char|bool|_Bool|u?int\d+_t|half|bf16)")
INT_MAX = 2**31 - 1
_SIGNATURE = re.compile(r"void (\w+)\(([^)]*)\)")
_PARAM = re.compile(r"\s*(.*?)\s*([A-Za-z_]\w*)\s*")


@dataclass
class _Function:
    """One kernel's C text taken apart."""

    name: str
    header: str                 # the comment lines above the function
    code: str                   # the function, from `void` on
    params: list[str]           # its parameters' names, in order
    roles: dict[str, str]       # buffer name -> its role (order of first use in the body)
    tokens: list[tuple[str, str]]       # (kind, text) of the function from `void` on
    literals: list[int]                 # indices into tokens of the numbers that may vary
    skeleton: tuple


def share_constants(parts: list[tuple[str, str]],
                    functions: list[_Function | None] | None = None) -> list[str]:
    """The C text of the kernels `parts` ((kernel name, its function text with header
    comment)), kernels that differ only in constants written as one shared body and a
    one-line function each. The result keeps the kernels' order (a group at its first
    member); each element starts with its first kernel's `// kernelN: ` comment.
    `functions`: the parts already taken apart (`parse_parts`), to save doing it again."""
    if functions is None:
        functions = parse_parts(parts)
    out: list[str] = []
    for members in sharing_groups(functions):
        if len(members) < 2:
            out.append(parts[members[0]][1])
        else:
            out.append(_write_group([functions[j] for j in members]))
    return out


def parse_parts(parts: list[tuple[str, str]]) -> list[_Function | None]:
    """Each part (as `share_constants` takes them) taken apart; None where its text is not
    one kernel function (then it shares with none)."""
    return [_parse(name, text) for name, text in parts]


def sharing_groups(functions: list[_Function | None]) -> list[list[int]]:
    """The indices of the parts that share one body, group by group in the order of their
    first member; a part that shares with none is a group of its own."""
    by_skeleton: dict[tuple, list[int]] = {}
    for i, f in enumerate(functions):
        if f is not None:
            by_skeleton.setdefault(f.skeleton, []).append(i)
    groups, done = [], set()
    for i, f in enumerate(functions):
        if i in done:
            continue
        members = by_skeleton[f.skeleton] if f is not None else [i]
        done.update(members)
        groups.append(members)
    return groups


def _parse(name: str, text: str) -> _Function | None:
    """The function taken apart, or None when its text is not one `void name(...) {...}`
    (it is then written as it is)."""
    start = text.find(f"\nvoid {name}(")
    if start < 0:
        return None
    header, code = text[:start], text[start + 1:]
    try:
        params = _params(code, name)
    except ValueError:
        return None
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(code)]
    body = next((i for i, (_, tok) in enumerate(tokens) if tok == "{"), None)
    if body is None:
        return None
    # Buffer names get their role by first use in the body, not by their place in the
    # signature (parameters are listed by name: buf93 after buf107 in one kernel, buf17
    # before buf24 in its twin); the parameters' types then go with their roles.
    names: dict[str, str] = {}
    skeleton: list[str] = []
    literals: list[int] = []
    significant: list[str] = []     # the code tokens so far (no spaces or comments)
    bracket_decl = 0                # inside the [size] of an array declaration
    line_is_pp, line_start = False, False
    pp_if = 0                       # parenthesis depth inside a pragma's if(...) clause
    attribute = 0                   # parenthesis depth inside __attribute__((...))
    for i, (kind, tok) in enumerate(tokens[body:], body):
        if kind == "space" or kind == "comment":
            continue
        if tok == "\n" and kind == "other":
            line_is_pp, line_start, pp_if = False, True, 0
            continue
        if tok == "#" and line_start:
            line_is_pp = True
        line_start = False
        if line_is_pp and tok == "(" and (pp_if or significant[-1:] == ["if"]):
            pp_if += 1
        elif line_is_pp and tok == ")" and pp_if:
            pp_if -= 1
        if tok == "(" and (attribute or significant[-1:] == ["__attribute__"]):
            attribute += 1
        elif tok == ")" and attribute:
            attribute -= 1
        if kind == "name" and _BUFFER_NAME.fullmatch(tok):
            skeleton.append(names.setdefault(tok, f"@{len(names)}"))
        elif kind == "number":
            ctype = _literal_type(tok)
            fixed = (ctype is None or (line_is_pp and not pp_if) or bracket_decl or attribute
                     or (ctype in ("int", "long") and any(t in ("/", "%") for t in significant[-2:])))
            if fixed:
                skeleton.append(tok)
            else:
                skeleton.append(f"#{ctype}")
                literals.append(i)
        else:
            skeleton.append(tok)
        if tok == "[" and len(significant) >= 2 and _is_declaration(significant):
            bracket_decl += 1
        elif tok == "]" and bracket_decl:
            bracket_decl -= 1
        significant.append(tok)
    signature = sorted((names.setdefault(p, f"@{len(names)}"), ptype) for ptype, p in params)
    return _Function(name, header, code, [p for _, p in params], names, tokens, literals,
                     (*signature, *skeleton))


def _is_declaration(significant: list[str]) -> bool:
    """Whether the `[` about to follow starts an array declaration's size: the token
    before it is a name declared right there (after a type name or `*`)."""
    name, before = significant[-1], significant[-2]
    return (re.fullmatch(r"[A-Za-z_]\w*", name) is not None
            and (before == "*" or _DECLARED_TYPES.fullmatch(before) is not None))


def _literal_type(tok: str) -> str | None:
    """The C type of a numeric literal that may become a parameter, or None to keep it."""
    low = tok.lower()
    if low.startswith("0x"):
        if "p" not in low:
            return None                  # a hexadecimal integer may be unsigned
        return "float" if low.endswith("f") else None if low.endswith("l") else "double"
    if any(c in low for c in ".e"):
        if low.endswith("f"):
            return "float"
        return None if low.endswith("l") else "double"
    if not low.isdigit() or (low.startswith("0") and low != "0"):
        return None                      # u, l suffixes; octal
    return "int" if int(low) <= INT_MAX else "long"


def _params(code: str, name: str) -> list[tuple[str, str]]:
    """The (type, name) of each parameter of `void name(type a, type* b, ...)`."""
    m = _SIGNATURE.match(code)
    if m is None or m.group(1) != name:
        raise ValueError(name)
    inside = m.group(2).strip()
    if not inside or inside == "void":
        return []
    out = []
    for p in inside.split(","):
        found = _PARAM.fullmatch(p)
        if found is None:
            raise ValueError(name)
        out.append((found.group(1), found.group(2)))
    return out


def _write_group(members: list[_Function]) -> str:
    """One body with a parameter per literal that differs (positions whose literals are
    equal in every kernel share one), then each kernel's function."""
    first = members[0]
    columns: dict[tuple[str, ...], str] = {}     # the members' literals at a position -> name
    tokens = [t for _, t in first.tokens]
    for k, i in enumerate(first.literals):
        values = tuple(m.tokens[m.literals[k]][1] for m in members)
        if len(set(values)) > 1:
            tokens[i] = columns.setdefault(values, f"lit{len(columns)}")
    body_name = f"{first.name}_body"
    code = "".join(tokens)
    signature_end = code.index(")")
    extra = "".join(f", const {_literal_type(values[0])} {name}" for values, name in columns.items())
    if not first.params:
        extra = extra[2:]
    code = (f"__attribute__((noinline, noclone)) static void {body_name}"
            + code[len(f"void {first.name}"):signature_end] + extra + code[signature_end:])
    listing = ", ".join(m.name for m in members)
    differ = (f"which differ only in {len(columns)} constant(s) (lit0...: each passes its own)"
              if columns else "the same code over buffers listed in another order")
    lines = [f"// {first.name}: the body of kernels {listing}, {differ}", code.rstrip()]
    for j, m in enumerate(members):
        signature = m.code[:m.code.index(")") + 1]
        by_role = {role: name for name, role in m.roles.items()}
        args = [*(by_role[first.roles[p]] for p in first.params), *(values[j] for values in columns)]
        lines.append(m.header.rstrip("\n"))
        lines.append(f"{signature} {{ {body_name}({', '.join(args)}); }}")
    return "\n".join(lines)
