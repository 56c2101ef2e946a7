"""Text generation: per-token decode time of eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/generation.py                        # small configs, both models, both caches
    python benchmarks/generation.py --size tiny --quick    # the test configs, few repeats
    python benchmarks/generation.py --models llama --caches static --json out.json

Hugging Face `generate`, greedy, with random-initialized GPT-2 and Llama built from
configs (nothing is downloaded), `model.forward` compiled by each backend
(`model.forward = torch.compile(model.forward, backend=...)`), with the default dynamic
KV cache and with the static cache (`cache_implementation="static"`).

  tiny   the tests' configs: hidden 64, 2 layers, vocab 128
  small  hidden 256, 4 layers, 8 heads (Llama: 4 KV heads), intermediate 1024, vocab 4096

Per-token decode time = (time of generate with N new tokens - time with 1 new token) /
(N - 1): the prefill and generate's fixed costs cancel. Both generate calls of every
backend are timed interleaved in one process (common.time_interleaved), medians of the
repeats, after warm-up calls that compile every graph (prefill, decode, decode with
symbolic sizes). Every backend's tokens are checked against eager's; the script exits 1
if Trebuchet's differ or a Trebuchet graph fell back to eager.

The default backend is used only through torch.compile(backend="inductor").
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from common import (format_text, machine_info, machine_line, markdown_table, median, ms, ratio,
                    stats_line, time_interleaved, trebuchet_stats)

MODELS = ("gpt2", "llama")
CACHES = ("dynamic", "static")
SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=2, kv_heads=2, inter=128, vocab=128),
    "small": dict(hidden=256, layers=4, heads=8, kv_heads=4, inter=1024, vocab=4096),
}


def build(kind: str, size: str) -> torch.nn.Module:
    import transformers as tf

    s = SIZES[size]
    torch.manual_seed(0)
    if kind == "gpt2":
        config = tf.GPT2Config(n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                               n_inner=s["inter"], vocab_size=s["vocab"], n_positions=512,
                               bos_token_id=0, eos_token_id=None)
        return tf.GPT2LMHeadModel(config).eval()
    config = tf.LlamaConfig(hidden_size=s["hidden"], intermediate_size=s["inter"],
                            num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                            num_key_value_heads=s["kv_heads"], vocab_size=s["vocab"],
                            max_position_embeddings=512, bos_token_id=0, eos_token_id=None)
    return tf.LlamaForCausalLM(config).eval()


def generator(model: torch.nn.Module, ids: torch.Tensor, cache: str, new_tokens: int
              ) -> Callable[[], torch.Tensor]:
    kwargs: dict[str, Any] = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)

    return run


def bench_case(kind: str, cache: str, args: argparse.Namespace) -> dict[str, Any]:
    import trebuchet

    torch._dynamo.reset()
    trebuchet.reset()
    base = build(kind, args.size)
    vocab = base.config.vocab_size
    ids = torch.randint(1, vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    long_, short = {}, {}
    for backend in args.backends:
        model = copy.deepcopy(base)
        if backend != "eager":
            model.forward = torch.compile(model.forward, backend=backend)
        long_[backend] = generator(model, ids, cache, args.new_tokens)
        short[backend] = generator(model, ids, cache, 1)
    tokens = {b: fn() for b, fn in long_.items()}        # compiles prefill and decode graphs
    for fn in long_.values():
        fn()                                             # and the decode graph with symbolic sizes
    callables = {f"{b}:{n}": fn for b in args.backends for n, fn in (("long", long_[b]), ("short", short[b]))}
    samples = time_interleaved(callables, [], repeats=args.repeats, warmup=1)
    per_token = {b: (median(samples[f"{b}:long"]) - median(samples[f"{b}:short"])) / (args.new_tokens - 1)
                 for b in args.backends}
    reference = tokens.get("eager")
    same = {b: reference is None or torch.equal(t, reference) for b, t in tokens.items()}
    return {"model": kind, "cache": cache, "per_token_s": per_token, "same_tokens": same,
            "generate_s": {b: median(samples[f"{b}:long"]) for b in args.backends},
            "trebuchet": trebuchet_stats() if "trebuchet" in args.backends else None}


def table(results: list[dict[str, Any]], backends: list[str]) -> list[list[str]]:
    head = ["case"] + [f"{b} ms/token" for b in backends]
    if "trebuchet" in backends and "eager" in backends:
        head.append("speedup vs eager")
    if "trebuchet" in backends and "inductor" in backends:
        head.append("vs inductor")
    head.append("tokens = eager")
    rows = [head]
    for r in results:
        t = r["per_token_s"]
        row = [f"{r['model']} {r['cache']}"] + [ms(t[b]) for b in backends]
        if "trebuchet" in backends and "eager" in backends:
            row.append(ratio(t["eager"], t["trebuchet"]))
        if "trebuchet" in backends and "inductor" in backends:
            row.append(ratio(t["inductor"], t["trebuchet"]))
        row.append(", ".join(b for b in backends if b != "eager" and r["same_tokens"][b]) or "-")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--caches", default=",".join(CACHES))
    parser.add_argument("--backends", default="eager,inductor,trebuchet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, help="timed repeats (default 11, --quick 3)")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args(argv)
    args.backends = args.backends.split(",")
    args.repeats = args.repeats or (3 if args.quick else 11)
    # Every case compiles model.forward of the same class again: keep Dynamo from giving up.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 4096

    info = machine_info()
    results = []
    failed = False
    for kind in args.models.split(","):
        for cache in args.caches.split(","):
            r = bench_case(kind, cache, args)
            results.append(r)
            if r["trebuchet"] is not None:
                print(f"{kind} {cache}: {stats_line(r['trebuchet'])}", file=sys.stderr)
                failed |= r["trebuchet"]["graph_fallbacks"] > 0 or not r["same_tokens"].get("trebuchet", True)
    rows = table(results, args.backends)
    title = (f"Decode time per token ({args.size} configs, batch {args.batch}, prompt {args.prompt}, "
             f"{args.new_tokens} new tokens, greedy; medians of {args.repeats})")
    print(title)
    print(machine_line(info))
    print(format_text(rows))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join([f"**{title}**", "", machine_line(info), ""] + markdown_table(rows)) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=1, default=str)
    if failed:
        print("FAILED: Trebuchet's tokens differ from eager's or a graph fell back", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
