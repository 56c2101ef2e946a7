"""Varying sequence lengths: eager vs torch.compile's default backend vs Trebuchet, per length.

    python benchmarks/seq_lengths.py                         # bert and llama, inference
    python benchmarks/seq_lengths.py --train                 # forward + backward steps
    python benchmarks/seq_lengths.py --models bert --lengths 16 37 129 --repeats 5
    python benchmarks/seq_lengths.py --dynamic               # torch.compile(dynamic=True)

Each compiled model is made once and called at every length in turn, as a user's model
sees them: with default settings TorchDynamo compiles the first length statically and
recompiles with symbolic sizes at the second, after which every length runs the same
compiled graphs. The table gives, per length, each backend's median time (interleaved
in one process, as in bench.py), Trebuchet's speedup over eager and its ratio to the
default backend (their time / ours), and the counters show how many graphs Trebuchet
compiled and whether any fell back to eager (they must not).

Models (random-initialized `transformers` configs, nothing downloaded, dropout off), each
with an attention mask that pads the second half of the second row:
  bert   BertModel, hidden 256, 4 heads, intermediate 1024, 2 layers, batch 4, sdpa attention
  llama  LlamaModel, hidden 256, 8 heads (4 key/value), intermediate 688, 2 layers, batch 4

The default backend is used only through torch.compile(backend="inductor").
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from common import (BACKENDS, format_text, machine_info, machine_line, markdown_table, median, ms, ratio,
                    stats_line, time_interleaved, trebuchet_stats)

LENGTHS = (16, 37, 64, 128, 129, 255, 512)
BATCH = 4


def build(name: str, training: bool) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    if name == "bert":
        model = tf.BertModel(tf.BertConfig(
            vocab_size=8192, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=1024, max_position_embeddings=512, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, attn_implementation="sdpa"), add_pooling_layer=False)
    elif name == "llama":
        model = tf.LlamaModel(tf.LlamaConfig(
            vocab_size=8192, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
            attn_implementation="sdpa"))
    else:
        raise SystemExit(f"unknown model {name!r}: expected bert or llama")
    return model.train(training)


def batch(length: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(length)
    mask = torch.ones(BATCH, length, dtype=torch.long)
    mask[1, length // 2:] = 0
    return {"input_ids": torch.randint(0, 8192, (BATCH, length), generator=gen), "attention_mask": mask}


def compiled_model(backend: str, model: torch.nn.Module, dynamic: bool | None) -> Callable:
    if backend == "eager":
        return model
    if backend == "trebuchet":
        import trebuchet

        return trebuchet.compile(model, dynamic=dynamic)
    return torch.compile(model, backend=backend, dynamic=dynamic)


def step_fn(model: Callable, params: list[torch.nn.Parameter], inputs: dict, training: bool) -> Callable:
    """One call: inference under no_grad, or forward + backward (gradients dropped)."""
    if not training:
        def infer() -> torch.Tensor:
            with torch.no_grad():
                return model(**inputs).last_hidden_state
        return infer

    def train() -> torch.Tensor:
        out = model(**inputs).last_hidden_state
        out.pow(2).mean().backward()
        for p in params:
            p.grad = None
        return out.detach()
    return train


def run(name: str, lengths: list[int], training: bool, dynamic: bool | None, repeats: int,
        warmup: int) -> dict[str, Any]:
    import trebuchet

    trebuchet.reset()
    models = {b: build(name, training) for b in BACKENDS}     # same seed: same weights
    runners = {b: compiled_model(b, m, dynamic) for b, m in models.items()}
    rows: list[dict[str, Any]] = []
    for length in lengths:
        inputs = batch(length)
        calls = {b: step_fn(runners[b], list(models[b].parameters()), inputs, training) for b in BACKENDS}
        expected = calls["eager"]()
        errors = {}
        for b in BACKENDS[1:]:
            errors[b] = float((calls[b]() - expected).abs().max())   # compiles at a new shape
        samples = time_interleaved(calls, [], repeats, warmup)
        times = {b: median(samples[b]) for b in BACKENDS}
        rows.append({"length": length, "times": times, "max_error": errors})
        print(f"  {name} length {length}: " + ", ".join(f"{b} {ms(t)} ms" for b, t in times.items()),
              file=sys.stderr, flush=True)
    return {"model": name, "training": training, "dynamic": dynamic, "rows": rows,
            "trebuchet": trebuchet_stats()}


def table(result: dict[str, Any]) -> list[list[str]]:
    out = [["length", "eager ms", "default ms", "trebuchet ms", "vs eager", "vs default", "max |err|"]]
    for row in result["rows"]:
        t = row["times"]
        out.append([str(row["length"]), ms(t["eager"]), ms(t["inductor"]), ms(t["trebuchet"]),
                    ratio(t["eager"], t["trebuchet"]), ratio(t["inductor"], t["trebuchet"]),
                    f"{row['max_error']['trebuchet']:.1e}"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bert", "llama"])
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument("--train", action="store_true", help="forward + backward instead of inference")
    parser.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True)")
    parser.add_argument("--repeats", type=int, help="timed repeats per length (default 9, --quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds per length (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the tables here")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    torch._dynamo.config.recompile_limit = 64
    info = machine_info()
    print(machine_line(info))
    command = " ".join(["python", "benchmarks/seq_lengths.py", *sys.argv[1:]])
    results, md = [], [f"Command: `{command}`", "", f"Machine: {machine_line(info)}", ""]
    for name in args.models:
        result = run(name, args.lengths, args.train, True if args.dynamic else None, repeats, warmup)
        results.append(result)
        mode = "training step" if args.train else "inference"
        title = f"{name}, {mode}, batch {BATCH}, {'dynamic=True' if args.dynamic else 'default settings'}"
        print(f"\n{title}\n{format_text(table(result))}\n{stats_line(result['trebuchet'])}")
        md += [f"**{title}** ({stats_line(result['trebuchet'])})", "", *markdown_table(table(result)), ""]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "results": results}, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
