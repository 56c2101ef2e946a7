"""The report as one self-contained HTML page: the tables, a roofline chart of every
kernel and library call, and the class breakdown as stacked bars (eager vs compiled).
Charts are drawn by matplotlib and embedded as inline SVG; no script, font or style
comes from the network.

Each chart element carries an SVG id, so tests (and people) can find them:
`roofline-kernels` and `roofline-library` (one marker per generated kernel / library
call), `bars` (the stacked bars).
"""
from __future__ import annotations

import html
import io
import re
from typing import Any

from .classes import CLASSES, LABELS
from .text import class_table, kernel_table, render

COLORS = {"contraction": "#4c72b0", "normalization": "#dd8452", "element-wise": "#55a868",
          "data movement": "#c44e52", "other": "#8c8c8c"}


def unescape_title(text: str) -> str:
    """A title as --dump-dom prints it, back to text."""
    return html.unescape(text)


class HtmlUnavailable(RuntimeError):
    """matplotlib is missing: the page cannot draw its charts."""


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise HtmlUnavailable("the HTML page needs matplotlib: pip install matplotlib "
                              "(or install trebuchet[report])") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "trebuchet"      # stable ids in the SVG
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def roofline_svg(data: dict[str, Any]) -> str:
    """Achieved GFLOP/s against FLOP/byte, with the machine's two roofs. Steps without
    FLOPs (pure copies) are drawn at the left edge, at their achieved bandwidth's height."""
    plt = _plt()
    bw, peak = data["machine"]["copy_gbps"], data["machine"]["peak_gflops"]
    rows = [k for k in data["kernels"] if k["ns"]]
    xs = [k["intensity"] for k in rows if k["intensity"]] or [1.0]
    x_lo = min(min(xs) / 4, 0.01)
    x_hi = max(max(xs) * 4, 4 * peak / bw)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ridge = peak / bw
    ax.plot([x_lo, ridge, x_hi], [x_lo * bw, peak, peak], color="black", lw=1.2)
    ax.text(x_lo * 1.3, x_lo * bw * 1.6, f"copy {bw:.1f} GB/s", fontsize=8, rotation=0)
    ax.text(ridge * 1.2, peak * 1.15, f"matmul {peak:.1f} GFLOP/s", fontsize=8)
    for kind, marker, gid, label in (("kernel", "o", "roofline-kernels", "generated kernel"),
                                     ("extern", "s", "roofline-library", "library call")):
        pts = [k for k in rows if (k["kind"] == "extern") == (kind == "extern")]
        if not pts:
            continue
        x = [k["intensity"] if k["intensity"] else x_lo for k in pts]
        y = [k["gflops"] if k["gflops"] else x_lo * k["gbps"] for k in pts]
        sc = ax.scatter(x, y, c=[COLORS[k["cls"]] for k in pts], marker=marker, s=36,
                        edgecolors="black", linewidths=0.5, zorder=3)
        sc.set_gid(gid)
        ax.scatter([], [], marker=marker, c="white", edgecolors="black", linewidths=0.5, label=label)
    for cls in CLASSES:
        if any(k["cls"] == cls for k in rows):
            ax.scatter([], [], c=COLORS[cls], label=LABELS[cls], s=36)
    ax.set_xlim(x_lo / 1.5, x_hi)
    ax.set_xlabel("arithmetic intensity (FLOP / byte, minimal bytes)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("roofline: every kernel and library call (per model step)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def bars_svg(data: dict[str, Any]) -> str:
    """Stacked bars: each class's share of FLOPs, bytes and time, eager vs Trebuchet."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    groups = [("FLOPs", "flops"), ("bytes", "bytes"), ("time", "ns")]
    labels, xs = [], []
    for g, (title, key) in enumerate(groups):
        for s, side in enumerate(("eager", "trebuchet")):
            x = g * 2.6 + s
            xs.append(x)
            labels.append(f"{title}\n{side}")
            bottom = 0.0
            for cls in CLASSES:
                pct = data["classes"][side][cls][f"{key}_pct"]
                if pct <= 0:
                    continue
                bar = ax.bar([x], [pct], bottom=bottom, color=COLORS[cls], width=0.8,
                             edgecolor="white", linewidth=0.5,
                             label=None)
                bar.patches[0].set_gid(f"bar-{key}-{side}-{cls.replace(' ', '_')}")
                bottom += pct
    for cls in CLASSES:
        ax.bar([xs[0]], [0], color=COLORS[cls], label=LABELS[cls])      # legend entries only
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("% of the column")
    ax.set_ylim(0, 100)
    ax.set_title("operator classes: eager vs Trebuchet")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    svg = _svg(fig)
    plt.close(fig)
    return re.sub(r"<svg ", '<svg id="bars" ', svg, count=1)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
pre { font-size: 12px; background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
"""


def _summary(data: dict[str, Any]) -> str:
    t, f, m = data["timing"], data["fusion"], data["machine"]
    return (f"Target {data['target']}: speedup {t['speedup']:.2f}x (eager {t['eager']['median_ms']:.3f} ms, "
            f"Trebuchet {t['trebuchet']['median_ms']:.3f} ms, medians of {t['eager']['rounds']} "
            f"interleaved rounds); fusion removed {f['removed_pct']:.1f} % of the time outside "
            f"tensor contractions. Machine: copy {m['copy_gbps']:.1f} GB/s, float32 matmul "
            f"{m['peak_gflops']:.1f} GFLOP/s, {m['threads']} threads (measured in this run).")


def page(data: dict[str, Any]) -> str:
    """The whole page as one string."""
    esc = html.escape
    roof, bars = roofline_svg(data), bars_svg(data)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>trebuchet report: {esc(data['model'])}</title>", f"<style>{_STYLE}</style></head><body>",
        f"<h1>trebuchet report: {esc(data['model'])}</h1>",
        f"<p>{esc(_summary(data))}</p>",
        f'<div class="charts"><div id="roofline">{roof}</div><div>{bars}</div></div>',
        "<p>Roofline: one marker per generated kernel (circle) and library call (square), per "
        "model step; x: FLOPs per minimal byte moved, y: achieved GFLOP/s; the lines are the copy "
        "bandwidth times the intensity and the float32 matmul rate, both measured in this run. "
        "Steps without floating-point work (copies, gathers) sit at the left edge, at the height "
        "of their bandwidth. Bars: each class's share of FLOPs, bytes and time.</p>",
        "<h2>operator classes (each column sums to 100 %)</h2>",
        f"<pre>{esc(chr(10).join(class_table(data)))}</pre>",
        "<h2>kernels and library calls</h2>",
        f"<pre>{esc(chr(10).join(kernel_table(data, limit=None, ops_width=60)))}</pre>",
        "<h2>the full text report</h2>", f"<pre>{esc(render(data, kernel_limit=0))}</pre>",
        "</body></html>", ""])
