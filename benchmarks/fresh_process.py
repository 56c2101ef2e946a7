"""Each backend alone in a new process, as a user's script runs it: step time and page faults.

    python benchmarks/fresh_process.py --workloads resnet18_infer_contiguous
    python benchmarks/fresh_process.py --workloads mobilenet_v3_small_infer_channels_last bf16_train \\
        --backends inductor trebuchet --steps 20

benchmarks/cnn.py and bf16.py run every backend in one process, interleaved, so that
their ratios come from one machine state; but the C heap is then shaped by all of them.
Here each (workload, backend) pair runs in its own Python process (an image network
built, compiled with `torch.compile(model, backend=...)` and stepped as a user's script
does; bf16.py's BERT workloads through their setup), `--warmup` steps, then `--steps`
timed ones: the median step
time and the minor page faults per step (`resource.getrusage`), which show whether the
heap is grown and given back on every step (fresh memory faults on its first write).
Absolute times from separate processes are noisier than cnn.py's interleaved ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from common import BACKENDS, machine_info, machine_line


def _image_step(name: str, backend: str) -> tuple[Callable[[], Any], list]:
    """A user's script for an image workload of cnn.py: the model built, its input made,
    `torch.compile(model, backend=...)`, a step function; nothing else in the process."""
    import torch
    import torch.nn.functional as F

    import cnn
    model, rest = next((m, name[len(m) + 1:]) for m in cnn.MODELS if name.startswith(m + "_"))
    mode, _, layout = rest.partition("_")
    torch.manual_seed(0)
    net = cnn.MODELS[model](224).train(mode == "train")
    x = torch.randn(8 if mode == "infer" else 4, 3, 224, 224)
    labels = torch.randint(0, 1000, (x.shape[0],))
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fn = net if backend == "eager" else torch.compile(net, backend=backend)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step() -> Any:
        if mode == "infer":
            with torch.no_grad():
                return fn(x)
        F.cross_entropy(fn(x), labels).backward()
        opt.step()
        opt.zero_grad()
    return step, []


def _one(name: str, backend: str, warmup: int, steps: int) -> dict:
    import cnn
    if any(name.startswith(m + "_") for m in cnn.MODELS):
        step, inputs = _image_step(name, backend)
    else:                                   # bf16.py's BERT workloads, through their setup
        import floor
        (w,) = floor.workloads([name])
        step, inputs = w.setup(backend)
    for _ in range(warmup):
        step(*inputs)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(*inputs)
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"workload": name, "backend": backend, "ms": statistics.median(times) * 1e3,
            "faults_per_step": faults / steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=[])
    p.add_argument("--backends", nargs="+", default=["inductor", "trebuchet"], choices=list(BACKENDS))
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--one", nargs=2, metavar=("WORKLOAD", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_one(*args.one, args.warmup, args.steps)))
        return 0
    if not args.workloads:
        p.error("name the workloads (--workloads), e.g. resnet18_infer_contiguous")
    print(machine_line(machine_info()))
    print("command: python " + " ".join(sys.argv))
    for name in args.workloads:
        for backend in args.backends:
            with tempfile.TemporaryDirectory() as cache:      # cold caches, as a first run
                env = dict(os.environ, TREBUCHET_CACHE_DIR=cache, TORCHINDUCTOR_CACHE_DIR=cache)
                out = subprocess.run([sys.executable, __file__, "--one", name, backend,
                                      "--warmup", str(args.warmup), "--steps", str(args.steps)],
                                     capture_output=True, text=True, env=env,
                                     cwd=os.path.dirname(os.path.abspath(__file__)))
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                print(f"{name} {backend}: failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
                continue
            r = json.loads(lines[-1])
            print(f"{name:40s} {backend:10s} {r['ms']:9.2f} ms  {r['faults_per_step']:8.0f} "
                  "page faults per step", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
