"""Image networks: eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/cnn.py                              # every workload
    python benchmarks/cnn.py --models resnet18 --modes infer --layouts channels_last --repeats 5
    python benchmarks/cnn.py --batch 2 --size 112 --quick
    python benchmarks/cnn.py --compile-time               # also compile time added over aot_eager
    python benchmarks/cnn.py --batch 1 --train-batch 2 --size 64 --repeats 1 --warmup 0   # a smoke run
    python benchmarks/cnn.py --markdown out.md --json out.json

ResNet-18 and MobileNetV3-Small (benchmarks/cnn_models.py) and ViT-Tiny/16
(benchmarks/vit_models.py), written from the published architectures since torchvision
(and so timm) does not import here, random-initialized and seeded:
  *_infer  eval mode under no_grad, batch 8 (--batch), 224x224 (--size)
  *_train  a training step: forward, cross-entropy on random labels, backward, SGD step,
           zero_grad, batch 4 (--train-batch), dropout off; only the model is compiled
the convolutional networks each with contiguous and channels_last inputs and weights
(--layouts; their names end in the layout), the ViT once (vit_tiny_infer, vit_tiny_train:
its only convolution is the patch embedding, the layout option does not apply).

--compile-time also compiles each workload with torch.compile(backend="aot_eager")
(TorchDynamo + AOTAutograd, the graphs run eagerly: the floor every backend pays) and
reports each backend's compile time, its first call minus its median call, and the
compile time each adds over aot_eager; Trebuchet's added time / the default backend's is
the compile-time target's figure. Trebuchet compiles first, then aot_eager, then the
default backend (what a network's first compile costs once in a process counts against
Trebuchet). With --compile-repeats N (default 3), Trebuchet and aot_eager each compile the
workload N times, each time cold and after a reset, and their median first call counts
(one first call of a few seconds moved by up to 0.9 s between runs on the 2-core machine);
the default backend, whose compiles take 5-45 s, once. The compiles are cold: each workload gets new empty
TREBUCHET_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR folders, the default backend's
on-disk caches are off (torch.compiler.config.force_disable_caches, the setting behind
TORCHINDUCTOR_FORCE_DISABLE_CACHES), TorchDynamo and Trebuchet are reset before each
workload, and before the first workload each backend compiles a small network once (the
one-time imports and set-up of a process are not counted). The garbage collector runs
before each timed first call (for every backend), so no compile pays for collecting the
garbage of the compiles before it. What stays warm in the
process: the default backend's in-memory cache of compiled kernels by source, so a kernel
identical to one of an earlier workload is not compiled again.

At the end, the targets of issue 11 (common.targets): each workload's speed-up over
eager at least 0.95x the default backend's and not below eager, the geomean of
Trebuchet's speed-up / the default's at least 1.1x, and, with --compile-time, the compile
time added over aot_eager at most 0.1x the default's.

All backends run in one process, interleaved in a rotating order (common.time_interleaved);
the table gives medians, each compiled backend's speed-up over eager, and Trebuchet's time
ratio to the default backend (its time / ours: > 1 means Trebuchet is faster). Outputs are
checked against eager before timing (inference: the logits; training: the first step's loss
and every gradient, relative to the largest of its tensor). The default backend is reached
only through torch.compile(backend="inductor").
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

import cnn_models
import vit_models
from common import (BACKENDS, format_text, machine_info, machine_line, make_callable, markdown_table, median,
                    ms, ratio, stats_line, targets, time_interleaved, trebuchet_stats)

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


# name -> a builder given the image size (the ViT's position embedding depends on it)
MODELS: dict[str, Callable[[int], torch.nn.Module]] = {
    "resnet18": lambda size: cnn_models.resnet18(),
    "mobilenet_v3_small": lambda size: cnn_models.mobilenet_v3_small(),
    "vit_tiny": lambda size: vit_models.vit_tiny(img_size=size),
}
LAYOUT_FREE = {"vit_tiny"}   # one row each, contiguous: the layout option does not apply


def _no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout off (p = 0) in training steps: each backend would draw its own masks."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def cnn_workloads(args: argparse.Namespace) -> list[Workload]:
    out = []
    for model in args.models:
        def build(model: str = model) -> torch.nn.Module:
            return MODELS[model](args.size)
        for layout in ["contiguous"] if model in LAYOUT_FREE else args.layouts:
            cl = layout == "channels_last"
            suffix = "" if model in LAYOUT_FREE else f"_{layout}"
            torch.manual_seed(1)
            if "infer" in args.modes:
                x = torch.randn(args.batch, 3, args.size, args.size)
                out.append(infer_workload(f"{model}_infer{suffix}", build, x, cl))
            if "train" in args.modes:
                x = torch.randn(args.train_batch, 3, args.size, args.size)
                out.append(train_workload(f"{model}_train{suffix}", build, x, cl, prepare=_no_dropout))
    return out


FLOOR = "aot_eager"          # the compile-time floor: TorchDynamo + AOTAutograd, graphs run eagerly
CACHE_ENV = ("TREBUCHET_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")


@contextlib.contextmanager
def cold_caches(on: bool) -> Iterator[None]:
    """With `on`, new empty on-disk cache folders for Trebuchet and the default backend
    while the block runs (one workload), the previous settings restored after."""
    if not on:
        yield
        return
    saved = {k: os.environ.get(k) for k in CACHE_ENV}
    with tempfile.TemporaryDirectory(prefix="trebuchet-cnn-cold-") as tmp:
        try:
            for k in CACHE_ENV:
                os.environ[k] = os.path.join(tmp, k.lower())
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def warm_up_backends(backends: list[str]) -> None:
    """Compile a small network (convolution, batch norm, layer norm, linear; forward and
    backward) once with each backend, so that the one-time imports and set-up of a process
    count in no workload's compile time."""
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.LayerNorm(8 * 6 * 6), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    with cold_caches(True):
        for b in backends:
            fn = make_callable(b, copy.deepcopy(net))
            fn(x).sum().backward()
            with torch.no_grad():
                fn(x)
    _reset()


def timed_first_call(step: Callable[..., Any], inputs: list[Any]) -> float:
    """Seconds of `step`'s first call (its compile), the garbage collector run just before:
    a full collection of this process's heap (~400,000 objects after a few compiles) takes
    0.35-0.6 s, and without it one fell at random into one backend's compile or another's,
    collecting the garbage every earlier compile left (in one run, inside two of
    Trebuchet's three ViT-Tiny compiles: 0.36 s and 0.63 s, none in the third)."""
    gc.collect()
    start = time.perf_counter()
    step(*inputs)
    return time.perf_counter() - start


def _reset() -> None:
    import trebuchet

    trebuchet.reset()          # its counters and TorchDynamo's caches
    torch._dynamo.reset()


def _compile_row(first: dict[str, float], warm: dict[str, float | None]) -> dict[str, Any]:
    """Compile seconds (first call - a warm call), each backend's added over aot_eager, and
    Trebuchet's added time / the default backend's."""
    compile_s = {b: first[b] - w for b, w in warm.items() if w is not None and b != "eager"}
    added = {}
    if FLOOR in compile_s:
        added = {b: c - compile_s[FLOOR] for b, c in compile_s.items() if b != FLOOR}
    share = None
    if added.get("inductor", 0) > 0 and "trebuchet" in added:
        share = added["trebuchet"] / added["inductor"]
    return {"compile_s": compile_s, "added_s": added, "added_ratio": share}


def run(workloads: list[Workload], backends: list[str], repeats: int, warmup: int,
        compile_time: bool = False, compile_repeats: int = 1) -> list[dict[str, Any]]:
    """Compile (timed: the first call), check against eager, time interleaved; one row each.
    With `compile_time`, also aot_eager's first call, on cold caches, and Trebuchet compiles
    first: what a network's first compile in a process costs once (TorchDynamo's look-ups
    of its classes and functions) counts against Trebuchet, not the floor or the default;
    then Trebuchet and aot_eager compile `compile_repeats - 1` more times, and the median
    of their first calls counts."""
    order = list(backends)
    if compile_time:
        first_ones = [b for b in ("eager", "trebuchet") if b in backends]
        order = first_ones + [FLOOR] + [b for b in backends if b not in first_ones]
    rows = []
    for w in workloads:
        with cold_caches(compile_time):
            _reset()
            steps, first = {}, {}
            inputs: list[Any] = []
            for b in order:
                step, inputs = w.setup(b)
                first[b] = timed_first_call(step, inputs)
                steps[b] = step
            notes = w.check(steps, inputs)
            stats = trebuchet_stats() if "trebuchet" in backends else None
            samples = time_interleaved({b: steps[b] for b in backends}, inputs, repeats=repeats,
                                       warmup=warmup)
            medians = {b: median(s) for b, s in samples.items()}
            row = {"workload": w.name, "median_s": medians, "first_call_s": first,
                   "trebuchet_stats": stats, "check": notes}
            if compile_time:
                floor = median(time_interleaved({FLOOR: steps[FLOOR]}, inputs, repeats=3, warmup=0)[FLOOR])
                first = {**first, **_first_calls(w, [b for b in order if b in (FLOOR, "trebuchet")],
                                                 first, compile_repeats)}
                row["first_call_s"] = first
                row["compile"] = _compile_row(first, {**medians, FLOOR: floor})
        rows.append(row)
        print(_text_row(row, backends), flush=True)
        for backend, note in notes.items():
            if backend != "eager":
                print(f"    {backend}: {note}", flush=True)
        if stats is not None:
            print("   ", stats_line(stats), flush=True)
        if compile_time:
            seconds = ", ".join(f"{b} {c:.2f}" for b, c in row["compile"]["compile_s"].items())
            print(f"    compile s: {seconds}; trebuchet added / inductor added: {_share(row)}", flush=True)
    return rows


def _first_calls(w: Workload, backends: list[str], first: dict[str, float],
                 compile_repeats: int) -> dict[str, float]:
    """The median first call of each backend over `compile_repeats` cold compiles (the one
    already timed and the others, each after a reset, on new empty caches)."""
    seconds = {b: [first[b]] for b in backends}
    for _ in range(compile_repeats - 1):
        for b in backends:
            with cold_caches(True):
                _reset()
                step, inputs = w.setup(b)
                seconds[b].append(timed_first_call(step, inputs))
    return {b: median(s) for b, s in seconds.items()}


def _share(row: dict[str, Any]) -> str:
    share = (row.get("compile") or {}).get("added_ratio")
    return "n/a" if share is None else f"{share:.3f}x"


def compile_table(rows: list[dict[str, Any]], backends: list[str]) -> list[list[str]]:
    """Compile seconds per backend (first call - median call), added over aot_eager, and
    Trebuchet's added / the default backend's added."""
    compiled = [FLOOR] + [b for b in backends if b != "eager"]
    added = [b for b in backends if b not in ("eager", FLOOR)]
    out = [["workload"] + [f"{b} compile s" for b in compiled] + [f"{b} added s" for b in added]
           + ["trebuchet added / inductor added"]]
    for row in rows:
        c = row.get("compile") or {}
        out.append([row["workload"]] + [_seconds(c.get("compile_s", {}).get(b)) for b in compiled]
                   + [_seconds(c.get("added_s", {}).get(b)) for b in added] + [_share(row)])
    return out


def _seconds(t: float | None) -> str:
    return "n/a" if t is None else f"{t:.2f}"


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
         add_args: Callable[[argparse.ArgumentParser], None] | None = None,
         description: str | None = None) -> int:
    """Runs the workloads, prints the tables and the targets; 1 if an output did not match
    eager. `description`: the --help text (the calling script's docstring; this one's)."""
    p = argparse.ArgumentParser(description=description or __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up round")
    p.add_argument("--compile-time", action="store_true",
                   help="also compile with aot_eager, on cold caches: compile time added over aot_eager")
    p.add_argument("--compile-repeats", type=int, default=3,
                   help="with --compile-time: cold compiles of Trebuchet and aot_eager per "
                        "workload, their median first call counts (default 3)")
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
    if args.compile_time:
        # the default backend's on-disk caches off (TORCHINDUCTOR_FORCE_DISABLE_CACHES is read
        # once, when torch is imported; this is the public setting it feeds)
        torch.compiler.config.force_disable_caches = True
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")   # that is the point
        warm_up_backends([FLOOR] + [b for b in args.backends if b != "eager"])
    rows = run(workloads_fn(args), args.backends, args.repeats, args.warmup, args.compile_time,
               max(1, args.compile_repeats))
    goal_table, goal_lines = targets(rows)
    print()
    print(format_text(table(rows, args.backends)))
    if args.compile_time:
        print("\nCompile time (first call - median call; added: over aot_eager), cold caches:")
        print(format_text(compile_table(rows, args.backends)))
    print("\nTargets (issue 11):")
    if goal_table:
        print(format_text(goal_table))
    print("\n".join(goal_lines))
    if args.markdown:
        lines = [machine_line(info), "", f"command: `{command}`", ""]
        lines += markdown_table(table(rows, args.backends)) + [""]
        lines += [f"- {r['workload']} {b}: {n}" for r in rows for b, n in r["check"].items() if b != "eager"]
        lines += [f"- {r['workload']}: {stats_line(r['trebuchet_stats'])}" for r in rows
                  if r["trebuchet_stats"]]
        if args.compile_time:
            lines += ["", "Compile time in seconds (first call - median call; added: over aot_eager), cold "
                      "caches:", ""] + markdown_table(compile_table(rows, args.backends))
        lines += ["", "Targets (issue 11):", ""]
        lines += (markdown_table(goal_table) + [""] if goal_table else []) + goal_lines
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "rows": rows, "targets": goal_lines}, f, indent=1, default=str)
    mismatched = [r["workload"] for r in rows if any(not n.startswith("ok") for n in r["check"].values())]
    if mismatched:
        print("outputs that did not match eager: " + ", ".join(mismatched))
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
