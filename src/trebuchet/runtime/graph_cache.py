"""Whole-graph compile cache: an ATen graph's compiled artifact, found again by a new process.

A target caches its build by source hash (its `load`), but
lowering, scheduling and code generation would still run in every new process (about
half a second for a BERT training step). This cache stores the finished artifact of
`runtime/pipeline.py` (the target's name and source, each kernel's parameters, the
wrapper's source and the objects it names) under a key made of everything the
pipeline reads:

  - every FX node (op, target, arguments), its traced value's metadata (dtype,
    shape, strides, storage offset: symbolic sizes as their expressions) and its
    recorded stack trace (the kernels' comments quote source lines);
  - the contents of the graph's constant tensors;
  - the options that change the output (target, inline_limit, the target's own: the C
    compiler and flags), the torch
    version and a hash of Trebuchet's own source files.

An entry is the file `<root>/graphs/<key[:2]>/<key>.pkl`, written to a temporary
`.<key>.<random>.tmp` next to it and renamed into place (atomic; the temporary is
removed when the write fails); `cache_items` lists these files for `trebuchet
clear-cache`. Entries carry a checksum; an entry that fails it, or that
cannot be read back (an op of an extension library not loaded in this process), is
a miss. Graphs holding objects that cannot be stored (subgraphs of higher-order
operators) are not cached.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import pathlib
import pickle
import re
import tempfile
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily

from ..codegen.target import GeneratedCode, get_target
from ..config import Options
from .cache_files import CacheItem, children, is_dir, is_file
from .wrapper import WrapperCode

FORMAT = 3  # bump when Artifact changes shape


@dataclasses.dataclass
class Artifact:
    """Everything needed to run a compiled graph, as plain data."""

    target: str                           # the target's name (codegen/target.py)
    code: GeneratedCode | None            # its source, functions, parameters; None: no kernels
    wrapper: WrapperCode
    n_kernels: int
    op_counts: dict[str, dict[str, int]]  # lowered / extern / fallback: ATen op -> count
    kernel_ops: list[list[str]]           # ops fused into each kernel
    # Per graph output, the strides it is returned with where the compiler chose them
    # (saved activations in the layout plan), else None; reported to AOTAutograd.
    output_strides: list[tuple[int, ...] | None] = dataclasses.field(default_factory=list)


class Uncacheable(Exception):
    """The artifact holds an object that cannot be stored on disk."""


@functools.cache
def _package_hash() -> str:
    root = pathlib.Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".h") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _describe(value: Any) -> str:
    """The traced metadata of an FX node's value that lowering can depend on."""
    if isinstance(value, torch.Tensor):
        return (f"T({value.dtype},{value.device},{value.layout},{tuple(map(str, value.shape))},"
                f"{tuple(map(str, value.stride())) if value.layout == torch.strided else ''},"
                f"{value.storage_offset() if value.layout == torch.strided else ''},"
                f"{value.requires_grad})")
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return f"S({value.node.expr})"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_describe(v) for v in value) + "]"
    return f"{type(value).__name__}:{value!r}"


def _tensor_digest(t: torch.Tensor) -> bytes:
    if isinstance(t, FakeTensor) or t.device.type != "cpu" or t.layout != torch.strided:
        raise Uncacheable(f"tensor constant {_describe(t)} without readable contents")
    with unset_fake_temporarily():      # compiles run under FakeTensorMode
        flat = t.detach().contiguous().reshape(-1)
        data = flat.view(torch.uint8) if flat.numel() and flat.dtype != torch.bool else flat.to(torch.uint8)
        return hashlib.sha256(data.numpy().tobytes()).digest()


def graph_key(gm: torch.fx.GraphModule, options: Options, target_name: str | None = None,
              role: str = "") -> str:
    """The cache key of `gm` compiled for `target_name` (None: the options' target for CPU);
    `role`: what else the pipeline reads (the graph's kind, the outputs whose layout is free,
    whether its float32 products go to oneDNN)."""
    h = hashlib.sha256()
    target = get_target(target_name or options.resolved_target())
    h.update(f"{FORMAT}|{_package_hash()}|{torch.__version__}|{target.name}|"
             f"{options.inline_limit}|{target.options_key(options)}|{role}\n".encode())
    for node in gm.graph.nodes:
        h.update(node.format_node().encode())
        h.update(_describe(node.meta.get("val")).encode())
        h.update((node.meta.get("stack_trace") or "").encode())
        # A tensor argument's repr elides values: hash its contents.
        torch.fx.node.map_aggregate((node.args, node.kwargs), lambda a: _hash_tensor_arg(h, a))
        if node.op == "get_attr":
            value = gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            h.update(_describe(value).encode())
            if isinstance(value, torch.Tensor):
                h.update(_tensor_digest(value))
            elif not isinstance(value, (int, float, bool)):
                raise Uncacheable(f"graph attribute {node.target} of type {type(value).__name__}")
        h.update(b"\n")
    return h.hexdigest()


def _hash_tensor_arg(h: Any, arg: Any) -> Any:
    if isinstance(arg, torch.Tensor):
        h.update(_describe(arg).encode() + _tensor_digest(arg))
    return arg


def _resolve_op(namespace: str, name: str, overload: str) -> torch._ops.OpOverload:
    return getattr(getattr(getattr(torch.ops, namespace), name), overload)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch._ops.OpOverload):
            return _resolve_op, (obj.namespace, obj._opname, obj._overloadname)
        if isinstance(obj, (torch._ops.HigherOrderOperator, torch.fx.GraphModule)):
            raise Uncacheable(f"cannot store {type(obj).__name__} {obj}")
        return NotImplemented


def _entry_path(root: pathlib.Path, key: str) -> pathlib.Path:
    return root / "graphs" / key[:2] / f"{key}.pkl"


def load(root: pathlib.Path, key: str) -> Artifact | None:
    path = _entry_path(root, key)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    digest, _, payload = blob.partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None                                   # truncated or damaged: a miss
    try:
        with unset_fake_temporarily():            # constants unpickle as real tensors
            artifact = pickle.loads(payload)
    except Exception:  # noqa: BLE001 - e.g. an op whose library is not loaded here
        return None
    return artifact if isinstance(artifact, Artifact) else None


def store(root: pathlib.Path, key: str, artifact: Artifact) -> bool:
    """Write the entry; False when the artifact cannot be stored or the folder is unusable."""
    buf = io.BytesIO()
    try:
        with unset_fake_temporarily():
            _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(artifact)
    except (Uncacheable, pickle.PicklingError, TypeError, AttributeError):
        return False
    payload = buf.getvalue()
    path = _entry_path(root, key)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        os.replace(tmp, path)                         # atomic on one filesystem
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)                        # e.g. the disk filled up while writing
        return False
    return True


_ENTRY = re.compile(r"([0-9a-f]{64})\.pkl")
_TEMPS = re.compile(r"\.([0-9a-f]{64})\.[a-z0-9_]{8}\.tmp"    # store()
                    r"|tmp[a-z0-9_]{8}\.tmp")                  # store() of the earlier layout


def cache_items(root: pathlib.Path) -> list[CacheItem]:
    """This module's files in the cache folder `root` (`<root>/graphs/<key[:2]>/<key>.pkl`
    and unfinished writes next to them), recognised by their exact names."""
    items = []
    graphs = root / "graphs"
    if not is_dir(graphs):
        return items
    for group in children(graphs):
        if not (re.fullmatch(r"[0-9a-f]{2}", group.name) and is_dir(group)):
            continue
        for f in children(group):
            entry, temp = _ENTRY.fullmatch(f.name), _TEMPS.fullmatch(f.name)
            if entry and entry[1][:2] == group.name and is_file(f):
                items.append(CacheItem("graph", [f], []))
            elif temp and is_file(f):
                items.append(CacheItem("temp", [f], []))
    return items
