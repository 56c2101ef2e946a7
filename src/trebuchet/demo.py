"""`python -m trebuchet`: a small end-to-end demonstration.

Builds a random-initialized 2-layer transformer block from plain torch.nn
(LayerNorm, Linear, GELU, softmax attention written out, residuals), compiles
it with Trebuchet, checks it against eager (exit code 1 on mismatch), times
both in interleaved rounds (median, quartiles, a warning when the machine is too busy
for a stable figure), and shows what the compiler fused into each generated kernel. With
`--profile` (or TREBUCHET_PROFILE=1) it ends with the per-kernel profile of the
timed calls (`trebuchet.profile_report()`).
"""

from __future__ import annotations

import math
import sys
import textwrap
import time

import torch
from torch import nn

import trebuchet
from trebuchet.config import Options
from trebuchet.report.timing import busy_note, interleaved, summary

BATCH, SEQ, HIDDEN, HEADS, LAYERS = 8, 128, 256, 4, 2
WARMUP, ROUNDS = 3, 21
ATOL, RTOL = 1e-4, 1e-4


class Block(nn.Module):
    """Pre-norm transformer layer: attention and MLP, each with a residual."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, 4 * hidden)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        d = h // self.heads
        q, k, v = self.qkv(self.norm1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        attn = torch.softmax(scores, dim=-1) @ v
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, h))
        return x + self.down(self.act(self.up(self.norm2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, hidden: int = HIDDEN, heads: int = HEADS, layers: int = LAYERS) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _print_fusion(stats: dict) -> None:
    kernels = stats.get("kernel_ops", [])
    print(f"\nGenerated kernels: {len(kernels)}")
    for i, ops in enumerate(kernels):
        names = ", ".join(str(op).removeprefix("aten.").removesuffix(".default") for op in ops)
        head = f"  kernel {i:2d} ({len(ops)} ops): "
        print(textwrap.fill(names, width=100, initial_indent=head,
                            subsequent_indent=" " * len(head)))
    for key in ("lowered_ops", "extern_ops", "fallback_ops"):
        counts = stats.get(key, {})
        total = sum(counts.values())
        detail = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
        print(f"{key.replace('_', ' ')}: {total}" + (f" ({detail})" if detail else ""))
    print(f"graphs: {stats.get('graphs', 0)}, graph fallbacks: {stats.get('graph_fallbacks', 0)}, "
          f"compile time: {stats.get('compile_seconds', 0.0):.2f} s")


def main(profile: bool = False) -> int:
    """Run the demo; returns the exit code: 0 when compiled matches eager, else 1.
    `profile` (also on with TREBUCHET_PROFILE=1) prints the per-kernel profile."""
    profile = profile or Options.from_env().profile
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    x = torch.randn(BATCH, SEQ, HIDDEN)
    params = sum(p.numel() for p in model.parameters())
    print(f"Trebuchet demo: {LAYERS}-layer transformer block, hidden {HIDDEN}, {HEADS} heads, "
          f"input {BATCH}x{SEQ}x{HIDDEN}, {params / 1e6:.2f}M parameters")

    trebuchet.reset()
    compiled = trebuchet.compile(model, profile=profile)
    with torch.no_grad():
        start = time.perf_counter()
        actual = compiled(x)
        first_call = time.perf_counter() - start
        expected = model(x)

        max_err = (actual - expected).abs().max().item()
        ok = torch.allclose(actual, expected, atol=ATOL, rtol=RTOL)
        print(f"first call (compile + run): {first_call:.2f} s")
        print(f"max abs error vs eager: {max_err:.3g} -> {'PASS' if ok else 'FAIL'}")

        fns = {"eager": lambda: model(x), "trebuchet": lambda: compiled(x)}
        interleaved(fns, WARMUP)
        trebuchet.profile_reset()        # profile the timed calls, not the warm-up
        times = interleaved(fns, ROUNDS)
    e, c = summary(times["eager"]), summary(times["trebuchet"])
    print(f"timing: {ROUNDS} interleaved rounds (eager and Trebuchet alternate), "
          f"{torch.get_num_threads()} threads; median [quartiles]")
    print(f"eager:     {e['median_ms']:8.2f} ms  [{e['q1_ms']:.2f} .. {e['q3_ms']:.2f}]")
    print(f"trebuchet: {c['median_ms']:8.2f} ms  [{c['q1_ms']:.2f} .. {c['q3_ms']:.2f}]  "
          f"speedup {e['median_ms'] / c['median_ms']:.2f}x"
          + ("  (with profiling probes)" if profile else ""))
    note = busy_note(e, c)
    if note:
        print(note)

    _print_fusion(trebuchet.stats())
    if profile:
        calls = max((g["calls"] for g in trebuchet.profile_data()["graphs"]), default=0)
        print(f"\nProfile of the {calls} timed calls (warm-up included):")
        print(trebuchet.profile_report(), end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
