"""The report as text tables (what `trebuchet report` prints), from run.py's dict."""
from __future__ import annotations

from typing import Any, Sequence

from .classes import CLASSES, LABELS
from .timing import busy_note


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


def table(head: Sequence[str], rows: list[Sequence[str]], left: int = 1) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns left-aligned."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]


def class_table(data: dict[str, Any]) -> list[str]:
    e, c = data["classes"]["eager"], data["classes"]["trebuchet"]
    head = ["operator class", "eager FLOPs", "bytes", "time", "trebuchet FLOPs", "bytes", "time"]
    rows = []
    for cls in (*CLASSES, "total"):
        a, b = e[cls], c[cls]
        rows.append([LABELS.get(cls, cls)] + [f"{a[k + '_pct']:5.1f} %" for k in ("flops", "bytes", "ns")]
                    + [f"{b[k + '_pct']:5.1f} %" for k in ("flops", "bytes", "ns")])
    rows.append(["  (absolute)", _si(e["total"]["flops"], "FLOP"), _si(e["total"]["bytes"], "B"),
                 _ms(e["total"]["ns"]), _si(c["total"]["flops"], "FLOP"), _si(c["total"]["bytes"], "B"),
                 _ms(c["total"]["ns"])])
    return table(head, rows)


def kernel_table(data: dict[str, Any], limit: int | None = 25, ops_width: int = 34) -> list[str]:
    from ..runtime.profiler import short_ops

    head = ["graph", "step", "class", "fused ATen ops", "calls", "read", "written", "time", "GB/s",
            "% copy", "FLOP/B", "bound", "% bound"]
    rows = []
    kernels = data["kernels"]
    for k in kernels[:limit] if limit else kernels:
        rows.append([k["graph"], k["name"], LABELS[k["cls"]], short_ops(k["ops"], ops_width),
                     str(k["calls"]), _si(k["bytes_read"], "B"), _si(k["bytes_written"], "B"),
                     f"{k['ns'] / 1e3:.1f} us",
                     f"{k['gbps']:.1f}", f"{100 * k['copy_fraction']:.0f} %" if k["copy_fraction"] else "-",
                     f"{k['intensity']:.2f}" if k["intensity"] is not None else "-",
                     k["bound"] or "-", f"{100 * k['of_bound']:.0f} %" if k["of_bound"] else "-"])
    out = table(head, rows, left=4)
    if limit and len(kernels) > limit:
        rest = kernels[limit:]
        out.append(f"... and {len(rest)} more steps ({_ms(sum(k['ns'] for k in rest))}; all in the JSON)")
    return out


def render(data: dict[str, Any], kernel_limit: int | None = 25) -> str:
    m, t, tot, f = data["machine"], data["timing"], data["totals"], data["fusion"]
    comp = data["compile"]
    out = [f"trebuchet report: {data['model']}, target {data['target']}",
           f"machine: copy bandwidth {m['copy_gbps']:.1f} GB/s, float32 matmul "
           f"{m['peak_gflops']:.1f} GFLOP/s (both measured in this run), {m['threads']} threads",
           f"compiled: {comp['graphs']} graphs, {comp['kernels']} kernels in "
           f"{t['compile_seconds']:.1f} s; outputs vs eager: max abs difference {t['max_abs_diff']:.2e}"]
    if comp["graph_fallbacks"]:
        out.append(f"warning: {comp['graph_fallbacks']} graphs fell back to eager "
                   f"(ops without a rule: {comp['fallback_ops']})")
    e, c = t["eager"], t["trebuchet"]
    out += ["", "end to end (median of interleaved rounds, [quartiles]):",
            f"  eager      {e['median_ms']:9.3f} ms  [{e['q1_ms']:.3f} .. {e['q3_ms']:.3f}]  "
            f"{e['rounds']} rounds",
            f"  trebuchet  {c['median_ms']:9.3f} ms  [{c['q1_ms']:.3f} .. {c['q3_ms']:.3f}]",
            f"  speedup    {t['speedup']:9.2f} x"]
    note = busy_note(e, c)
    if note:
        out.append("  " + note)
    out += ["", "where the time goes, by operator class (each column sums to 100 %):"]
    out += ["  " + x for x in class_table(data)]
    out += [f"  eager: ATen ops' self time {_ms(tot['eager_op_ns'])} of {_ms(tot['eager_wall_ns'])} "
            "per profiled step (the rest: Python between ops, profiler overhead)",
            f"  trebuchet: kernels + library calls {_ms(tot['compiled_step_ns'])} of "
            f"{_ms(tot['compiled_graph_ns'])} inside compiled graphs: margin {tot['margin_pct']:.1f} % "
            "(wrapper overhead and profiler probes); graphs: "
            f"{_ms(tot['compiled_graph_ns'])} of {_ms(tot['compiled_wall_ns'])} per profiled step"]
    out += ["", "fusion: the most it can win is the time outside tensor contractions (end-to-end median "
            "x the share of a profiled step outside them):",
            f"  eager      {f['eager_non_contraction_ms']:.3f} ms = {e['median_ms']:.3f} ms x "
            f"(1 - {100 * f['eager_contraction_share']:.1f} % in contractions)",
            f"  trebuchet  {f['trebuchet_non_contraction_ms']:.3f} ms = {c['median_ms']:.3f} ms x "
            f"(1 - {100 * f['trebuchet_contraction_share']:.1f} % in library contractions)",
            f"  fusion removed {f['removed_pct']:.1f} % of the non-contraction time"]
    out += ["", "kernels and library calls of the compiled graphs (per model step, by time; "
            "% copy above 100: data served from cache):"]
    out += ["  " + x for x in kernel_table(data, kernel_limit)]
    return "\n".join(out) + "\n"
