"""Distributed training under Trebuchet: DDP, FSDP2, activation checkpointing, tensor parallel.

Every multi-rank case runs its 2 ranks as child processes of this file
(``python tests/test_distributed.py <case> <rank> <world> <store> <out>``), so a
hang or a crash (segfault) in a rank fails the test instead of killing pytest:
the ranks rendezvous through a FileStore in the test's tmp dir, use the gloo
backend on CPU with one OpenMP thread each, and are killed after TIMEOUT_S. Each
rank saves its losses, final (full, unsharded) weights and ``trebuchet.stats()``;
the test compares them with a single-process eager run on the concatenated batch.
The children inherit TREBUCHET_CACHE_DIR from the pytest process (tests/conftest.py).

Models are tiny and random-initialized (nothing is downloaded); dropout is off so
eager and compiled runs are comparable.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

import trebuchet

pytestmark = pytest.mark.distributed

WORLD = 2
TIMEOUT_S = 180          # per multi-rank test: a hang fails instead of blocking CI
SEQ, BATCH, VOCAB = 16, 4, 100   # BATCH is the global batch, split evenly over the ranks
LR = 1e-3
# DDPOptimizer (Dynamo's graph splitting at DDP bucket boundaries) requires buckets of at
# least DDP's first-bucket size, 1 MB; a BERT of hidden size 128 (2.1 MB of weights,
# 0.8 MB per layer) then fills more than one bucket, so its graph is split.
BUCKET_MB = 1
DDP_HIDDEN = 128


# ---------------------------------------------------------------- models and data

def _bert(hidden: int = 64) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=4 * hidden, max_position_embeddings=32, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="eager")
    return transformers.BertForMaskedLM(config)


def _bert_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    # Every position carries a label, so each rank's mean loss covers the same number
    # of tokens and DDP's average of the rank gradients is the full-batch gradient.
    labels = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    return {"input_ids": ids, "labels": labels}


class Block(torch.nn.Module):
    """Linear + GELU + LayerNorm with a residual connection."""

    def __init__(self, dim: int, checkpointed: bool = False) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.checkpointed = checkpointed

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(torch.nn.functional.gelu(self.linear(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointed:
            return checkpoint(self._body, x, use_reentrant=False)
        return self._body(x)


class Blocks(torch.nn.Module):
    def __init__(self, dim: int = 32, n: int = 2, checkpointed: bool = False) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(dim, checkpointed) for _ in range(n))
        self.head = torch.nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return torch.nn.functional.mse_loss(self.head(x).squeeze(-1), target)


def _blocks(checkpointed: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return Blocks(checkpointed=checkpointed)


def _blocks_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2000 + step)
    return {"x": torch.randn(BATCH, SEQ, 32, generator=gen), "target": torch.randn(BATCH, SEQ, generator=gen)}


class MLP(torch.nn.Module):
    def __init__(self, dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.up = torch.nn.Linear(dim, hidden)
        self.down = torch.nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.down(torch.nn.functional.gelu(self.up(x))), target)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP()


def _mlp_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3000 + step)
    x = torch.randn(BATCH, SEQ, 32, generator=gen)
    return {"x": x, "target": torch.randn(BATCH, SEQ, 32, generator=gen)}


def _loss(model: Callable, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The scalar loss of one step, whatever the model returns."""
    out = model(**batch)
    return out.loss if "input_ids" in batch else out


def _local(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """This rank's share of the global batch (rows rank*B/world ...)."""
    per = BATCH // world
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


def _train(model: torch.nn.Module, step_fn: Callable, make_batch: Callable, steps: int,
           rank: int = 0, world: int = 1) -> list[float]:
    """AdamW steps; each rank sees its share of the batch. Returns this rank's losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = []
    for step in range(steps):
        loss = _loss(step_fn, _local(make_batch(step), rank, world))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"step {step}: loss {losses[-1]}", flush=True)   # in a rank's log: how far it got
    return losses


def _full_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters in registration order, unsharded (DTensor -> full tensor)."""
    out = []
    for p in model.parameters():
        p = p.detach()
        if hasattr(p, "full_tensor"):
            p = p.full_tensor()
        out.append(p.clone())
    return out


# ---------------------------------------------------------------- the rank programs

def _compile(model: Callable) -> Callable:
    return torch.compile(model, backend="trebuchet")


def _ddp_rank(rank: int, world: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _bert(DDP_HIDDEN)
    ddp = DDP(_compile(model), bucket_cap_mb=BUCKET_MB)
    losses = _train(ddp, ddp, _bert_batch, 5, rank, world)
    return {"losses": losses, "params": _full_params(model)}


def _fsdp_rank(rank: int, world: int, reshard: bool, make: Callable, make_batch: Callable,
               layers: Callable, steps: int) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard

    model = make()
    for layer in layers(model):
        fully_shard(layer, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    losses = _train(model, _compile(model), make_batch, steps, rank, world)
    return {"losses": losses, "params": _full_params(model)}


def _tp_rank(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world,))
    model = parallelize_module(_mlp(), mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
    # Tensor parallelism splits the weights, not the batch: every rank runs the full batch.
    losses = _train(model, _compile(model), _mlp_batch, 3)
    return {"losses": losses, "params": _full_params(model)}


def _bert_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model.bert.encoder.layer)


def _block_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model.blocks)


CASES: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "ddp": _ddp_rank,
    "fsdp_reshard": lambda r, w: _fsdp_rank(r, w, True, _bert, _bert_batch, _bert_layers, 3),
    "fsdp_keep": lambda r, w: _fsdp_rank(r, w, False, _bert, _bert_batch, _bert_layers, 3),
    "fsdp_checkpoint": lambda r, w: _fsdp_rank(r, w, True, lambda: _blocks(True), _blocks_batch,
                                               _block_layers, 3),
    "tp": _tp_rank,
}


def _rank_main(case: str, rank: int, world: int, store: str, out: str) -> None:
    faulthandler.enable()   # a crash prints every thread's Python stack into the rank's log
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 64
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = CASES[case](rank, world)
        result["stats"] = trebuchet.stats()
        result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught
                              if issubclass(w.category, trebuchet.TrebuchetWarning)]
        torch.save(result, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- the parent side

def _log_tail(path: Path, chars: int = 4000) -> str:
    """The end of a rank's log, without faulthandler's long list of extension modules."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("Extension modules:")]
    return "\n".join(lines)[-chars:]


def _run_ranks(case: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Runs `case` on WORLD child ranks; fails the test on a crash, an error or a hang."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    procs, logs = [], []
    for rank in range(WORLD):
        log_path = tmp_path / f"{case}.rank{rank}.log"
        logs.append(log_path)
        with open(log_path, "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, case, str(rank), str(WORLD), str(tmp_path / f"{case}.store"),
                 str(tmp_path / f"{case}.rank{rank}.pt")],
                stdout=log, stderr=subprocess.STDOUT, env=env))
    deadline = time.monotonic() + TIMEOUT_S
    timed_out = False
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    codes = [proc.returncode for proc in procs]
    if timed_out or any(codes):
        tails = "\n".join(f"--- rank {r} (exit code {c}) ---\n{_log_tail(p)}"
                           for r, (c, p) in enumerate(zip(codes, logs)))
        pytest.fail(f"{case}: {'timed out after %d s' % TIMEOUT_S if timed_out else 'a rank failed'}"
                    f" (exit codes {codes}; negative = killed by that signal)\n{tails}")
    return [torch.load(tmp_path / f"{case}.rank{rank}.pt") for rank in range(WORLD)]


def _assert_clean(results: list[dict[str, Any]]) -> None:
    for rank, result in enumerate(results):
        stats = result["stats"]
        assert stats["graphs"] >= 2, f"rank {rank}: trebuchet compiled no training graph: {stats}"
        assert stats["graph_fallbacks"] == 0, f"rank {rank}: {result['warnings']}"
        assert not result["warnings"], f"rank {rank}: {result['warnings']}"


def _assert_matches(results: list[dict[str, Any]], losses: list[float], params: list[torch.Tensor],
                    average_losses: bool = True) -> None:
    """Losses (the mean over ranks when each rank holds a share of the batch) and final
    weights of every rank match the single-process eager run."""
    rank_losses = torch.tensor([r["losses"] for r in results])
    got = rank_losses.mean(0) if average_losses else rank_losses[0]
    torch.testing.assert_close(got, torch.tensor(losses), rtol=1e-4, atol=1e-5)
    for rank, result in enumerate(results):
        assert len(result["params"]) == len(params)
        for i, (a, e) in enumerate(zip(result["params"], params)):
            # A few AdamW steps from gradients whose float32 rounding differs from eager's
            # (other reduction orders, gloo's sum of two halves).
            torch.testing.assert_close(a, e, rtol=1e-4, atol=2e-5,
                                       msg=lambda m: f"rank {rank} param {i}: {m}")


def _eager(make: Callable, make_batch: Callable, steps: int) -> tuple[list[float], list[torch.Tensor]]:
    model = make()
    losses = _train(model, model, make_batch, steps)
    return losses, _full_params(model)


def test_ddp_bert_graph_split(tmp_path: Path) -> None:
    """DDP over a Trebuchet-compiled tiny BERT: DDPOptimizer splits the graph at the
    bucket boundaries, and 5 AdamW steps on 2 ranks match eager on the full batch."""
    results = _run_ranks("ddp", tmp_path)
    _assert_clean(results)
    for rank, result in enumerate(results):
        # One forward and one backward graph without the split; each bucket adds a pair.
        assert result["stats"]["graphs"] >= 4, f"rank {rank}: DDPOptimizer did not split: {result['stats']}"
    losses, params = _eager(lambda: _bert(DDP_HIDDEN), _bert_batch, 5)
    _assert_matches(results, losses, params)


@pytest.mark.parametrize("case", ["fsdp_reshard", "fsdp_keep"])
def test_fsdp2_bert(case: str, tmp_path: Path) -> None:
    """FSDP2 (fully_shard per BERT layer and at the root, reshard_after_forward True
    and False) over a Trebuchet-compiled tiny BERT: 3 steps match eager."""
    results = _run_ranks(case, tmp_path)
    _assert_clean(results)
    losses, params = _eager(_bert, _bert_batch, 3)
    _assert_matches(results, losses, params)


def _saved_bytes(step_fn: Callable, batch: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes autograd saves for backward during one forward pass, and the loss."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(step_fn, batch)
    return saved, loss


def test_activation_checkpointing() -> None:
    """torch.utils.checkpoint (non-reentrant) under a Trebuchet compile: the compiled
    forward saves less for backward than without checkpointing, and training matches
    eager with checkpointing."""
    batch = _blocks_batch(0)
    plain = _compile(_blocks(False))
    saved_plain, _ = _saved_bytes(plain, batch)
    torch._dynamo.reset()
    trebuchet.reset()

    model = _blocks(True)
    compiled = _compile(model)
    saved_ckpt, _ = _saved_bytes(compiled, batch)
    assert saved_ckpt < saved_plain, (saved_ckpt, saved_plain)

    model = _blocks(True)
    losses = _train(model, _compile(model), _blocks_batch, 3)
    eager_losses, eager_params = _eager(lambda: _blocks(True), _blocks_batch, 3)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-5)
    for a, e in zip(_full_params(model), eager_params):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=2e-5)
    stats = trebuchet.stats()
    assert stats["graphs"] >= 2 and stats["graph_fallbacks"] == 0, stats


def test_fsdp2_activation_checkpointing(tmp_path: Path) -> None:
    """Checkpointed blocks, each sharded with FSDP2, compiled with Trebuchet: 3 steps
    on 2 ranks match eager."""
    results = _run_ranks("fsdp_checkpoint", tmp_path)
    _assert_clean(results)
    losses, params = _eager(lambda: _blocks(True), _blocks_batch, 3)
    _assert_matches(results, losses, params)


def test_tensor_parallel_mlp(tmp_path: Path) -> None:
    """ColwiseParallel/RowwiseParallel MLP on a 2-rank CPU DeviceMesh, compiled with
    Trebuchet: every rank's losses and the full weights match eager.

    Known limitation (xfail below): AOTAutograd's graphs for DTensor code take opaque
    inputs (FakeScriptObject, passed through and returned unchanged), which the lowering
    rejects (lowering/graph.py `_placeholder`), so both graphs run eagerly with a
    TrebuchetWarning. The answers must still be eager's, and nothing else may fail.
    """
    results = _run_ranks("tp", tmp_path)
    losses, params = _eager(_mlp, _mlp_batch, 3)
    _assert_matches(results, losses, params, average_losses=False)
    if any(r["stats"]["graph_fallbacks"] for r in results):
        for rank, result in enumerate(results):
            stats, caught = result["stats"], result["warnings"]
            assert stats["graphs"] == 0 and stats["graph_fallbacks"] == 2, f"rank {rank}: {stats}"
            assert len(caught) == 2 and all("FakeScriptObject" in w for w in caught), f"rank {rank}: {caught}"
        pytest.xfail("DTensor graphs take opaque FakeScriptObject inputs that Trebuchet does not lower: "
                     "both graphs ran eagerly (with a warning) and matched eager")
    _assert_clean(results)


if __name__ == "__main__":
    _case, _rank, _world, _store, _out = sys.argv[1:]
    with contextlib.suppress(KeyboardInterrupt):
        _rank_main(_case, int(_rank), int(_world), _store, _out)
