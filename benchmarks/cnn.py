"""Convolutional networks: eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/cnn.py                              # every workload
    python benchmarks/cnn.py --workloads resnet18_infer --layouts channels_last --repeats 5
    python benchmarks/cnn.py --batch 2 --size 112 --quick
    python benchmarks/cnn.py --markdown out.md --json out.json

ResNet-18 and MobileNetV3-Small (benchmarks/cnn_models.py: written from the published
architectures, since torchvision does not import here), random-initialized and seeded:
  *_infer  eval mode under no_grad, batch 8 (--batch), 224x224 (--size)
  *_train  a training step: forward, cross-entropy on random labels, backward, SGD step,
           zero_grad, batch 4 (--train-batch), dropout off; only the model is compiled
each with contiguous and channels_last inputs and weights (--layouts).

All backends run in one process, interleaved in a rotating order (common.time_interleaved);
the table gives medians, each compiled backend's speed-up over eager, and Trebuchet's time
ratio to the default backend (its time / ours: > 1 means Trebuchet is faster). Outputs are
checked against eager before timing (inference: the logits; training: the first step's loss
and every gradient, relative to the largest of its tensor). The default backend is reached
only through torch.compile(backend="inductor").
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import cnn_models
from common import (BACKENDS, format_text, machine_info, machine_line, make_callable, markdown_table, median,
                    ms, ratio, stats_line, time_interleaved, trebuchet_stats)

INFER_TOL = 1e-3          # logits after 20 layers of convolutions summed in another order
# Each gradient relative to its tensor's largest element. A training step of a random
# ResNet-18 with batch norm over a batch of 4 is ill-conditioned: eager's float32 gradients
# differ from its float64 ones by 4.5e-2 of their scale (batch 4, 96x96), the compiled
# backends' from eager's by 5.8e-2 (default backend) and 7.7e-2 (Trebuchet) at 224x224,
# while Trebuchet's are within 6e-6 of eager's at 96x96.
GRAD_TOL = 0.1


@dataclasses.dataclass
class Workload:
    """A named benchmark: `setup(backend)` returns the step function and its inputs."""

    name: str
    setup: Callable[[str], tuple[Callable[..., Any], list[Any]]]
    # runs each backend's step against eager's: backend -> "ok (...)" or "MISMATCH (...)"
    check: Callable[[dict[str, Callable[..., Any]], list[Any]], dict[str, str]]


def _layout(t: Any, channels_last: bool) -> Any:
    return t.to(memory_format=torch.channels_last) if channels_last else t


def infer_workload(name: str, build: Callable[[], torch.nn.Module], x: torch.Tensor,
                   channels_last: bool, prepare: Callable[[Any], Any] = lambda m: m,
                   context: Callable[[], Any] = torch.no_grad, tol: float = INFER_TOL) -> Workload:
    torch.manual_seed(0)
    model = _layout(prepare(build().eval()), channels_last)
    x = _layout(x, channels_last)

    def setup(backend: str) -> tuple[Callable[..., Any], list[Any]]:
        fn = make_callable(backend, model)

        def step(inp: torch.Tensor) -> Any:
            with context():
                return fn(inp)
        return step, [x]

    def check(steps: dict[str, Callable[..., Any]], inputs: list[Any]) -> dict[str, str]:
        ref = _logits(steps["eager"](*inputs)).float()
        notes = {}
        for backend, step in steps.items():
            out = _logits(step(*inputs)).float()
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            ok = torch.allclose(out, ref, rtol=tol, atol=tol * ref.abs().max().item())
            notes[backend] = f"{'ok' if ok else 'MISMATCH'} (output error {err:.1e} of its scale)"
        return notes
    return Workload(name, setup, check)


def _logits(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def train_workload(name: str, build: Callable[[], torch.nn.Module], x: torch.Tensor,
                   channels_last: bool, loss_fn: Callable[[Any], torch.Tensor] | None = None,
                   prepare: Callable[[Any], Any] = lambda m: m,
                   context: Callable[[], Any] = torch.enable_grad,
                   loss_tol: float = 1e-3, grad_tol: float = GRAD_TOL) -> Workload:
    torch.manual_seed(0)
    base = _layout(prepare(build().train()), channels_last)
    x = _layout(x, channels_last)
    labels = torch.randint(0, 1000, (x.shape[0],))
    loss_fn = loss_fn or (lambda out: F.cross_entropy(out.float(), labels))
    models: dict[str, torch.nn.Module] = {}
    first: dict[str, tuple[float, list[torch.Tensor]]] = {}

    def setup(backend: str) -> tuple[Callable[..., Any], list[Any]]:
        model = copy.deepcopy(base)
        models[backend] = model
        fn = make_callable(backend, model)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step(inp: Any) -> float:
            with context():
                loss = loss_fn(fn(inp))
            loss.backward()
            if backend not in first:
                first[backend] = (loss.item(), [p.grad.detach().clone() for p in model.parameters()
                                                if p.grad is not None])
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        return step, [x]

    def check(steps: dict[str, Callable[..., Any]], inputs: list[Any]) -> dict[str, str]:
        for step in steps.values():
            step(*inputs)
        ref_loss, ref_grads = first["eager"]
        notes = {}
        for backend, (loss, grads) in first.items():
            loss_ok = abs(loss - ref_loss) <= loss_tol * max(1.0, abs(ref_loss))
            if len(grads) != len(ref_grads):
                notes[backend] = "MISMATCH (another set of gradients)"
                continue
            # relative to each gradient's scale, floored at 1% of the largest (a gradient
            # that is zero but for rounding, as a key bias's, compares its noise)
            floor = 1e-2 * max(r.float().abs().max().item() for r in ref_grads)
            worst = 0.0
            for g, r in zip(grads, ref_grads):
                scale = max(r.float().abs().max().item(), floor) or 1.0
                err = (g.float() - r.float()).abs().max().item() / scale
                worst = max(worst, err)
            ok = loss_ok and worst <= grad_tol
            notes[backend] = (f"{'ok' if ok else 'MISMATCH'} (loss {loss:.4f} vs {ref_loss:.4f}, "
                              f"gradient error {worst:.1e} of its scale)")
        return notes
    return Workload(name, setup, check)


MODELS = {"resnet18": cnn_models.resnet18, "mobilenet_v3_small": cnn_models.mobilenet_v3_small}


def _no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout off (p = 0) in training steps: each backend would draw its own masks."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def cnn_workloads(args: argparse.Namespace) -> list[Workload]:
    out = []
    for model in args.models:
        for layout in args.layouts:
            cl = layout == "channels_last"
            torch.manual_seed(1)
            if "infer" in args.modes:
                x = torch.randn(args.batch, 3, args.size, args.size)
                out.append(infer_workload(f"{model}_infer_{layout}", MODELS[model], x, cl))
            if "train" in args.modes:
                x = torch.randn(args.train_batch, 3, args.size, args.size)
                out.append(train_workload(f"{model}_train_{layout}", MODELS[model], x, cl,
                                          prepare=_no_dropout))
    return out


def run(workloads: list[Workload], backends: list[str], repeats: int, warmup: int) -> list[dict[str, Any]]:
    """Compile (timed: the first call), check against eager, time interleaved; one row each."""
    rows = []
    for w in workloads:
        import trebuchet

        trebuchet.reset()
        torch._dynamo.reset()
        steps, compile_s = {}, {}
        inputs: list[Any] = []
        for b in backends:
            step, inputs = w.setup(b)
            start = time.perf_counter()
            step(*inputs)
            compile_s[b] = time.perf_counter() - start
            steps[b] = step
        notes = w.check(steps, inputs)
        stats = trebuchet_stats() if "trebuchet" in backends else None
        samples = time_interleaved(steps, inputs, repeats=repeats, warmup=warmup)
        row = {"workload": w.name, "median_s": {b: median(s) for b, s in samples.items()},
               "first_call_s": compile_s, "trebuchet_stats": stats, "check": notes}
        rows.append(row)
        print(_text_row(row, backends), flush=True)
        for backend, note in notes.items():
            if backend != "eager":
                print(f"    {backend}: {note}", flush=True)
        if stats is not None:
            print("   ", stats_line(stats), flush=True)
    return rows


def table(rows: list[dict[str, Any]], backends: list[str]) -> list[list[str]]:
    head = ["workload"] + [f"{b} ms" for b in backends]
    head += [f"{b} vs eager" for b in backends if b != "eager"]
    if "inductor" in backends and "trebuchet" in backends:
        head.append("trebuchet vs inductor")
    head.append("matches eager")
    out = [head]
    for row in rows:
        t = row["median_s"]
        cells = [row["workload"]] + [ms(t.get(b), 1) for b in backends]
        cells += [ratio(t.get("eager"), t.get(b)) for b in backends if b != "eager"]
        if "inductor" in backends and "trebuchet" in backends:
            cells.append(ratio(t.get("inductor"), t.get("trebuchet")))
        bad = [b for b, note in row.get("check", {}).items() if not note.startswith("ok")]
        cells.append("not " + ", ".join(bad) if bad else "yes")
        out.append(cells)
    return out


def _text_row(row: dict[str, Any], backends: list[str]) -> str:
    return format_text(table([row], backends)).splitlines()[-1]


def main(argv: list[str] | None = None,
         workloads_fn: Callable[[argparse.Namespace], list[Workload]] = cnn_workloads,
         add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up round")
    p.add_argument("--json")
    p.add_argument("--markdown")
    if add_args is None:
        p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
        p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
        p.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"],
                       choices=["contiguous", "channels_last"])
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--train-batch", type=int, default=4)
        p.add_argument("--size", type=int, default=224)
    else:
        add_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 5, 1
    info = machine_info()
    print(machine_line(info))
    command = " ".join(["python", "benchmarks/" + os.path.basename(sys.argv[0]), *sys.argv[1:]])
    print("command: " + command)
    rows = run(workloads_fn(args), args.backends, args.repeats, args.warmup)
    print()
    print(format_text(table(rows, args.backends)))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join([machine_line(info), "", f"command: `{command}`", ""]
                              + markdown_table(table(rows, args.backends)) + [""]
                              + [f"- {r['workload']} {b}: {n}" for r in rows for b, n in r["check"].items()
                                 if b != "eager"]
                              + [f"- {r['workload']}: {stats_line(r['trebuchet_stats'])}" for r in rows
                                 if r["trebuchet_stats"]]) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
