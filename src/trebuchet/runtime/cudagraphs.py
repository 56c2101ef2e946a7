"""The `cudagraphs` option: a compiled CUDA inference graph with static shapes is captured
once in a `torch.cuda.CUDAGraph` and then replayed, one launch for the whole graph instead
of one per kernel and library call.

    call 1       the ordinary compiled call (Triton compiles its kernels on first launch)
    call 2       a private instance of the compiled graph (its own buffers and error flags)
                 runs once on a side stream (warm-up), then is captured on static copies of
                 the inputs; its outputs are the graph's static outputs
    call 3..     inputs copied into the static copies, the graph replayed, the error flags
                 read (one synchronization, as without graphs), outputs copied out

Inputs that are `nn.Parameter`s are captured in place (not copied); a later call whose
parameter is another tensor runs the ordinary compiled call. Outputs are copied out of the
graph's memory (a copy per output), so a result is never overwritten by the next replay.
Graphs with dynamic shapes, training graphs (forward/backward), graphs not on a CUDA
device, profiled graphs and graphs whose capture fails run the ordinary compiled call,
with a warning.

Written for torch's documented CUDA graph API (torch.cuda.graph, CUDAGraph.replay). It ran
once on an H200 (2026-11-30: a one-kernel graph and BERT-base inference, benchmarks/gpu.py;
docs/benchmarks.md), where the replays' outputs were not checked; CI tests the bookkeeping
with the CUDA API stood in for, the decline paths and the option handling.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TrebuchetWarning
from ..warn import warn_user


def decline_reason(gm: torch.fx.GraphModule | None, kind: str, device: torch.device | None,
                   profile: bool = False) -> str | None:
    """Why this graph is not replayed as a CUDA graph, or None."""
    if profile:
        return "profile=True times each kernel call, which a replayed graph does not make"
    if device is None or device.type != "cuda":
        return f"the graph's tensors are on {device.type if device else 'cpu'}, not on a CUDA device"
    if kind != "inference":
        return f"CUDA graphs apply to inference graphs, and this is a {kind} (training) graph"
    if gm is None:
        return "no graph to inspect"
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            if not all(isinstance(s, int) for s in (*val.shape, *val.stride())):
                return "the graph has dynamic shapes"
        else:
            return f"input {node.name} is not a tensor ({type(val).__name__})"
    return None


def wrap(fn: Callable, make_private: Callable[[], Callable], gm: torch.fx.GraphModule | None,
         kind: str, device: torch.device | None, profile: bool = False) -> Callable:
    """`fn`, replayed as a CUDA graph when the graph allows it (else `fn`, with a warning)."""
    reason = decline_reason(gm, kind, device, profile)
    if reason:
        warn_user(f"trebuchet: cudagraphs=True: {reason}; it runs without CUDA graphs",
                  TrebuchetWarning)
        return fn
    assert device is not None
    return GraphReplay(fn, make_private, device)


class GraphReplay:
    """The boxed callable that captures on its second call and replays after."""

    def __init__(self, plain: Callable, make_private: Callable[[], Callable], device: torch.device):
        self.plain, self.make_private, self.device = plain, make_private, device
        self.calls = 0
        self.failed = False
        self.graph: Any = None
        self.static: list[Any] = []
        self.own: list[bool] = []          # a static copy of ours (else a parameter in place)
        self.ptrs: list[int] = []
        self.outputs: Any = None
        self.check: Callable[[], None] | None = None
        self.private: Callable | None = None   # the captured instance (kept: its buffers)

    def __call__(self, args: list) -> Any:
        if self.failed:
            return self.plain(args)
        if self.graph is None:
            self.calls += 1
            if self.calls == 1:
                return self.plain(args)
            return self._capture(args)
        return self._replay(args)

    def _capture(self, args: list) -> Any:
        private = self.make_private()
        static = [a if isinstance(a, torch.nn.Parameter) else a.clone() for a in args]
        stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            out = private(list(static))     # warm-up (data errors raise here, as eager)
        current.wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = private(list(static))
        except Exception as e:  # noqa: BLE001 - an op that cannot be captured: no graphs
            self.failed = True
            warn_user(f"trebuchet: cudagraphs=True: capturing the graph failed "
                      f"({type(e).__name__}: {e}); it runs without CUDA graphs", TrebuchetWarning)
            args.clear()
            return out
        self.graph, self.static, self.outputs = graph, static, outputs
        # the captured kernels use the private instance's kept buffers (its BufferSlots:
        # memory allocated at the warm-up, outside the graph's pool, that the capture
        # reused for intermediates): it lives as long as the graph, or a replay would write
        # into memory the allocator has handed out again
        self.private = private
        self.own = [not isinstance(a, torch.nn.Parameter) for a in args]
        self.ptrs = [a.data_ptr() for a in static]
        self.check = getattr(private, "check_errors", None)
        args.clear()
        return out

    def _replay(self, args: list) -> Any:
        for i, a in enumerate(args):
            if self.own[i]:
                if a.data_ptr() != self.ptrs[i]:
                    self.static[i].copy_(a)
            elif a.data_ptr() != self.ptrs[i]:
                return self.plain(args)       # another parameter tensor: not what was captured
        self.graph.replay()
        if self.check is not None:
            self.check()
        args.clear()
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in self.outputs)
