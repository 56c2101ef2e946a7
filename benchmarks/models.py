"""Whole-model benchmarks: eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/models.py                      # every model
    python benchmarks/models.py --quick --models bert
    python benchmarks/models.py --attn eager         # explicit matmul/softmax attention everywhere
    python benchmarks/models.py --json out.json --markdown out.md

Random-initialized Hugging Face `transformers` models, built from configs (nothing
is downloaded), seeded, dropout off:

  bert        BERT-base-shaped encoder (hidden 768, 12 heads, intermediate 3072) cut to
              2 layers, inference (eval, no_grad), batch 8, seq 128
  gpt2        GPT-2-shaped decoder (n_embd 768, 12 heads) cut to 2 layers, no LM head,
              inference, batch 4, seq 256
  bert_train  small BertForMaskedLM (hidden 256, 4 layers, 4 heads, intermediate 1024,
              vocab 8192), batch 8, seq 128: forward with labels, backward, AdamW step,
              zero_grad. Only the model is compiled; the optimizer runs eagerly everywhere.

Attention (--attn auto, the default): "sdpa" for inference, where both implementations
compile and match eager with all three backends; "eager" (explicit matmul + softmax) for
the training step, so that the attention softmax and its backward run in generated
kernels (see DEFAULT_ATTN_NOTE).
Inputs are input_ids only (no attention mask); GPT-2 runs without the KV cache.

Timing is as in bench.py: all backends in one process, interleaved in a rotating
order, medians of N repeats after warm-up. The table gives each backend's time,
Trebuchet's speedup over eager and its ratio to the default backend (their time /
ours: > 1 means Trebuchet is faster). Outputs are checked against eager: inference
outputs must be close to eager's; for training, the first step's loss and gradients.

For inference models, the eager model is also run under torch.profiler to find the
time of the matmul/attention ops alone (mm, bmm, addmm, linear, scaled dot-product
attention: inclusive time of the outermost such op). Eager time minus that is the
non-matmul time, the most that fusion can win; "removed" is the share of it that a
compiled backend took away: (eager - backend) / (eager - matmul). It assumes the backend's
matmuls take eager's time: over 100% means they took less (Trebuchet sends float32
products to oneDNN where it timed faster than the BLAS eager calls: runtime/onednn.py).

The default backend is used only through torch.compile(backend="inductor").
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from common import (BACKENDS, format_text, machine_info, machine_line, make_callable, markdown_table, median,
                    ms, ratio, stats_line, time_interleaved, trebuchet_stats)

# Outermost ops counted as "matmul/attention" time (the Externs a compiler calls as library code).
MATMUL_OPS = frozenset({
    "aten::linear", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm",
    "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_efficient_attention",
})

# Inference outputs: 2 layers of matmul + layer norm + softmax with a different reduction order.
INFER_RTOL = INFER_ATOL = 1e-4
# Training: the loss, and every gradient relative to the largest gradient of its tensor.
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-5
GRAD_TOL, GRAD_FLOOR = 1e-3, 1e-3


@dataclasses.dataclass
class ModelSpec:
    name: str
    description: str
    training: bool
    build: Callable[[str], tuple[torch.nn.Module, dict[str, torch.Tensor]]]
    attn: str  # the default attention implementation (see DEFAULT_ATTN_NOTE)


def _transformers():
    import transformers

    return transformers


def build_bert(attn: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    tf = _transformers()
    config = tf.BertConfig(hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                           intermediate_size=3072, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, attn_implementation=attn)
    model = tf.BertModel(config, add_pooling_layer=False).eval()
    gen = torch.Generator().manual_seed(1)
    return model, {"input_ids": torch.randint(0, config.vocab_size, (8, 128), generator=gen)}


def build_gpt2(attn: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    tf = _transformers()
    config = tf.GPT2Config(n_embd=768, n_layer=2, n_head=12, resid_pdrop=0.0, embd_pdrop=0.0,
                           attn_pdrop=0.0, use_cache=False, attn_implementation=attn)
    model = tf.GPT2Model(config).eval()
    gen = torch.Generator().manual_seed(2)
    return model, {"input_ids": torch.randint(0, config.vocab_size, (4, 256), generator=gen)}


def build_bert_train(attn: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    tf = _transformers()
    config = tf.BertConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=1024, max_position_embeddings=512, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, attn_implementation=attn)
    model = tf.BertForMaskedLM(config).train()
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, config.vocab_size, (8, 128), generator=gen)
    masked = torch.rand(8, 128, generator=gen) < 0.15  # the usual 15% of tokens predicted
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return model, {"input_ids": ids, "labels": labels}


# Both attention implementations compile and match eager with all three backends for
# inference, so inference uses "sdpa" (transformers' default; eager runs the fused flash
# kernel). The training step uses "eager" attention (explicit matmul + softmax) so that
# the softmax and its backward are generated kernels. (Trebuchet once decomposed sdpa and
# got its gradients wrong; tests/test_attention.py now guards that.)
DEFAULT_ATTN_NOTE = "inference: sdpa; training: eager (softmax and its backward as kernels)"
MODELS = [
    ModelSpec("bert", "BERT-base shape, 2 layers, inference, batch 8 x seq 128", False, build_bert, "sdpa"),
    ModelSpec("gpt2", "GPT-2 shape, 2 layers, inference, batch 4 x seq 256", False, build_gpt2, "sdpa"),
    ModelSpec("bert_train", "BertForMaskedLM h256 L4, train step (AdamW), batch 8 x seq 128", True,
              build_bert_train, "eager"),
]
BY_NAME = {spec.name: spec for spec in MODELS}


def build(spec: ModelSpec, attn: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return spec.build(attn)


@dataclasses.dataclass
class Result:
    model: str
    description: str
    training: bool
    attn: str
    times: dict[str, float | None]  # seconds, median; None: the backend failed
    first_call: dict[str, float | None]  # seconds of the first call (compile + run), in-process
    errors: dict[str, str]
    correct: dict[str, bool]  # compiled backend -> output matches eager
    max_error: dict[str, float]  # compiled backend -> max abs error (loss error for training)
    grad_error: dict[str, float]  # training: max over tensors of |grad - eager| / max |eager grad|
    matmul: float | None = None  # seconds of the matmul/attention ops in eager (profiled), inference
    profiled_share: float | None = None  # matmul share of the profiled eager run
    trebuchet_stats: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- inference


def matmul_seconds(model: torch.nn.Module, inputs: dict[str, torch.Tensor], runs: int
                   ) -> tuple[float, float]:
    """(median seconds of the matmul/attention ops per eager run, their share of the profiled run)."""
    model(**inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(runs):
            with record_function(f"bench_run_{i}"):
                model(**inputs)
    per_run, shares = [], []
    for event in prof.events():
        if not event.name.startswith("bench_run_"):
            continue
        total, stack = 0.0, list(event.cpu_children)
        while stack:
            child = stack.pop()
            if child.name in MATMUL_OPS:
                total += child.cpu_time_total  # microseconds, inclusive of its children
            else:
                stack.extend(child.cpu_children)
        per_run.append(total * 1e-6)
        shares.append(total / event.cpu_time_total)
    return statistics.median(per_run), statistics.median(shares)


def run_inference(spec: ModelSpec, backends: list[str], attn: str, repeats: int, warmup: int,
                  profile_runs: int) -> Result:
    model, inputs = build(spec, attn)
    result = Result(spec.name, spec.description, False, attn, {}, {}, {}, {}, {}, {})
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        callables = {}
        for backend in backends:
            try:
                compiled = make_callable(backend, model)

                def call(compiled=compiled):
                    return compiled(**inputs).last_hidden_state

                start = time.perf_counter()
                out = call()
                result.first_call[backend] = time.perf_counter() - start
                callables[backend] = call
            except Exception as exc:  # a failing backend is reported, not fatal
                result.first_call[backend] = None
                result.errors[backend] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            if backend != "eager":
                result.max_error[backend] = (out - expected).abs().max().item()
                result.correct[backend] = torch.allclose(out, expected, rtol=INFER_RTOL, atol=INFER_ATOL)
        samples = time_interleaved(callables, [], repeats, warmup)
        if "eager" in backends:
            result.matmul, result.profiled_share = matmul_seconds(model, inputs, profile_runs)
    result.times = {b: median(samples.get(b)) for b in backends}
    return result


# ---------------------------------------------------------------- training


class Trainer:
    """One backend's copy of the model and its AdamW; step() is one full training step."""

    def __init__(self, backend: str, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        self.model = copy.deepcopy(model)
        self.forward = make_callable(backend, self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batch = batch

    def first_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A step that also returns the loss and the gradients, for the comparison with eager."""
        loss = self.forward(**self.batch).loss
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), grads

    def step(self) -> None:
        loss = self.forward(**self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def grad_error(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """max over tensors of max |actual - expected| / that tensor's largest |expected|.

    The scale has a floor of GRAD_FLOOR times the largest gradient of the model:
    some gradients are zero in exact arithmetic (the attention key bias: softmax
    ignores a constant added to a row) and only rounding noise in float32.
    """
    if actual.keys() != expected.keys():
        return float("inf")
    floor = GRAD_FLOOR * max((e.abs().max().item() for e in expected.values()), default=1.0)
    worst = 0.0
    for name, e in expected.items():
        scale = max(e.abs().max().item(), floor) or 1.0
        worst = max(worst, (actual[name] - e).abs().max().item() / scale)
    return worst


def run_training(spec: ModelSpec, backends: list[str], attn: str, repeats: int, warmup: int) -> Result:
    model, batch = build(spec, attn)
    result = Result(spec.name, spec.description, True, attn, {}, {}, {}, {}, {}, {})
    first: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
    trainers: dict[str, Trainer] = {}
    reference = "eager" if "eager" in backends else None
    if reference is None:  # still compare with eager
        first["eager"] = Trainer("eager", model, batch).first_step()
    for backend in backends:
        try:
            trainer = Trainer(backend, model, batch)
            start = time.perf_counter()
            first[backend] = trainer.first_step()
            result.first_call[backend] = time.perf_counter() - start
            trainers[backend] = trainer
        except Exception as exc:  # a failing backend is reported, not fatal
            result.first_call[backend] = None
            result.errors[backend] = f"{type(exc).__name__}: {exc}"[:300]
    exp_loss, exp_grads = first["eager"]
    for backend in trainers:
        if backend == "eager":
            continue
        loss, grads = first[backend]
        result.max_error[backend] = (loss - exp_loss).abs().item()
        result.grad_error[backend] = grad_error(grads, exp_grads)
        result.correct[backend] = (torch.allclose(loss, exp_loss, rtol=LOSS_RTOL, atol=LOSS_ATOL)
                                   and result.grad_error[backend] <= GRAD_TOL)
    samples = time_interleaved({b: t.step for b, t in trainers.items()}, [], repeats, warmup)
    result.times = {b: median(samples.get(b)) for b in backends}
    return result


# ---------------------------------------------------------------- reporting


def _correct_cell(r: Result) -> str:
    if not r.correct:
        return "n/a"
    bad = [b for b, ok in r.correct.items() if not ok]
    return "ok" if not bad else "MISMATCH: " + ",".join(bad)


def times_rows(results: list[Result], backends: list[str]) -> list[list[str]]:
    rows = [["model", "attn"] + [f"{b} ms" for b in backends]
            + ["vs eager", "vs inductor", "inductor vs eager", "correct"]]
    for r in results:
        ours = r.times.get("trebuchet")
        rows.append([r.model, r.attn] + [ms(r.times.get(b), 1) for b in backends]
                    + [ratio(r.times.get("eager"), ours), ratio(r.times.get("inductor"), ours),
                       ratio(r.times.get("eager"), r.times.get("inductor")), _correct_cell(r)])
    return rows


def _removed(eager: float | None, backend: float | None, matmul: float | None) -> str:
    if eager is None or backend is None or matmul is None or eager <= matmul:
        return "n/a"
    return f"{(eager - backend) / (eager - matmul):.0%}"


def fusion_rows(results: list[Result], backends: list[str]) -> list[list[str]]:
    compiled = [b for b in backends if b != "eager"]
    rows = [["model", "eager ms", "matmul ms", "non-matmul ms", "non-matmul share"]
            + [f"removed by {b}" for b in compiled]]
    for r in results:
        eager = r.times.get("eager")
        if r.training or r.matmul is None or eager is None:
            continue
        non_mm = eager - r.matmul
        rows.append([r.model, ms(eager, 1), ms(r.matmul, 1), ms(non_mm, 1), f"{non_mm / eager:.0%}"]
                    + [_removed(eager, r.times.get(b), r.matmul) for b in compiled])
    return rows


def notes(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        errs = ", ".join(f"{b} {r.max_error[b]:.1e}" for b in r.max_error)
        line = f"{r.model}: max abs error vs eager ({'first-step loss' if r.training else 'output'}): {errs}"
        if r.grad_error:
            line += "; relative grad error: " + ", ".join(f"{b} {e:.1e}" for b, e in r.grad_error.items())
        out.append(line)
        if r.trebuchet_stats:
            out.append(f"{r.model}: {stats_line(r.trebuchet_stats)}")
        for backend, error in r.errors.items():
            out.append(f"{r.model}: {backend} FAILED: {error}")
    return out


def format_markdown(results: list[Result], backends: list[str], meta: dict) -> str:
    out = [f"# Whole models ({meta['date']})", "",
           f"Machine: {machine_line(meta)}. Attention: {meta['attn']}; median of {meta['repeats']}. "
           f"Command: `{meta['command']}`.",
           "`vs eager` and `vs inductor` are their time / Trebuchet's (> 1: Trebuchet is faster); "
           "`inductor vs eager` is eager's time / the default backend's.", ""]
    out += markdown_table(times_rows(results, backends))
    fusion = fusion_rows(results, backends)
    if len(fusion) > 1:
        out += ["", "Non-matmul time of the eager model (the most fusion can win) and the share of it "
                "each backend removed, (eager - backend) / (eager - matmul); matmul time is from "
                "torch.profiler on eager:", ""]
        out += markdown_table(fusion)
    out += [""] + [f"- {line}" for line in notes(results)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--models", help="comma-separated: " + ",".join(BY_NAME))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--attn", default="auto", choices=("auto", "sdpa", "eager"),
                        help="transformers attention implementation for every model; "
                        f"auto (default): {DEFAULT_ATTN_NOTE}")
    parser.add_argument("--repeats", type=int, help="timed repeats per backend (default 31)")
    parser.add_argument("--json", help="write results as JSON here")
    parser.add_argument("--markdown", help="write the tables as Markdown here")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    specs = [BY_NAME[name] for name in args.models.split(",")] if args.models else MODELS
    repeats = args.repeats or (3 if args.quick else 31)
    warmup = 1 if args.quick else 2
    profile_runs = 3 if args.quick else 5
    meta = machine_info()
    meta.update(attn=DEFAULT_ATTN_NOTE if args.attn == "auto" else args.attn, repeats=repeats,
                command=" ".join(["python", "benchmarks/models.py", *(argv or sys.argv[1:])]))
    print(f"{machine_line(meta)}; attention {args.attn}, median of {repeats}", flush=True)

    results = []
    for spec in specs:
        if "trebuchet" in backends:
            import trebuchet

            trebuchet.reset()  # also resets TorchDynamo
        else:
            torch._dynamo.reset()
        attn = spec.attn if args.attn == "auto" else args.attn
        if spec.training:
            result = run_training(spec, backends, attn, repeats, warmup)
        else:
            result = run_inference(spec, backends, attn, repeats, warmup, profile_runs)
        if "trebuchet" in backends:
            result.trebuchet_stats = trebuchet_stats()
        results.append(result)
        for backend, error in result.errors.items():
            print(f"  {spec.name}: {backend} failed: {error}", file=sys.stderr)
        first = ", ".join(f"{b} {ms(result.first_call[b], 0)} ms" for b in backends)
        print(f"  {spec.name}: " + ", ".join(f"{b} {ms(result.times[b], 1)} ms" for b in backends)
              + f"; first call (disk caches as found): {first}", flush=True)

    print()
    print(format_text(times_rows(results, backends)))
    fusion = fusion_rows(results, backends)
    if len(fusion) > 1:
        print()
        print(format_text(fusion))
    print()
    print("\n".join(notes(results)))
    if args.json:
        payload = {"meta": meta, "results": [dataclasses.asdict(r) for r in results]}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(format_markdown(results, backends, meta))
    failed = any(not ok for r in results for ok in r.correct.values())
    failed |= "trebuchet" in backends and any("trebuchet" in r.errors for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
