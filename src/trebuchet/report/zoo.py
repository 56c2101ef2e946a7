"""The models `trebuchet report` and `explain` know by name: random-initialized
Hugging Face `transformers` models built from configs (nothing is downloaded), or
any `module.path:callable` returning `(model, example_inputs)`.

    bert  gpt2  llama  vit  t5        tiny (hidden 64, 2 layers): seconds to report
    bert-base gpt2-base ...           base-shaped widths (hidden 768, 12 heads, FFN 3072)
                                      with 2 layers unless --layers says otherwise

`--layers`, `--hidden`, `--heads` size any of them; `--batch` and `--seq` size the
inputs (for vit, `--seq` is the number of patches per side's square: image = patch *
sqrt(seq), rounded).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import os
import pathlib
import sys
from typing import Any, Callable

import torch

NAMES = ("bert", "gpt2", "llama", "vit", "t5")
SIZES = ("tiny", "base")


class ModelError(ValueError):
    """A model the zoo cannot give (an unknown name, a callable that fails to load)."""


@dataclasses.dataclass
class Sizes:
    batch: int = 2
    seq: int = 32
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    train: bool = False


@dataclasses.dataclass
class Model:
    name: str
    description: str
    module: Any
    args: tuple
    kwargs: dict

    def __call__(self) -> Any:
        return self.module(*self.args, **self.kwargs)


def _dims(size: str, s: Sizes) -> tuple[int, int, int, int]:
    """(hidden, heads, layers, ffn)"""
    hidden, heads, ffn = (64, 4, 128) if size == "tiny" else (768, 12, 3072)
    hidden = s.hidden or hidden
    heads = s.heads or (heads if hidden % heads == 0 else 1)
    if hidden % heads:
        raise ModelError(f"--hidden {hidden} is not a multiple of --heads {heads}: pick sizes "
                         "where it is (e.g. --hidden 256 --heads 4)")
    ffn = 4 * hidden if s.hidden else ffn
    return hidden, heads, s.layers or 2, ffn


def _tf() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelError("the model zoo needs Hugging Face transformers: pip install transformers "
                         "(or install trebuchet[report])") from None
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def _ids(vocab: int, s: Sizes, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (s.batch, s.seq), generator=gen)


def build(spec: str, s: Sizes) -> Model:
    """A zoo name (`bert`, `bert-base`, ...) or `module.path:callable`."""
    if ":" in spec:
        return _from_callable(spec, s)
    name, _, size = spec.partition("-")
    size = size or "tiny"
    if name not in NAMES or size not in SIZES:
        raise ModelError(f"unknown model {spec!r}: use one of "
                         f"{', '.join(NAMES)} (tiny) or NAME-base, or module.path:callable "
                         "returning (model, example_inputs)")
    tf = _tf()
    hidden, heads, layers, ffn = _dims(size, s)
    attn = "eager" if s.train else "sdpa"
    torch.manual_seed(0)
    shape = f"hidden {hidden}, {heads} heads, {layers} layers, FFN {ffn}"
    vocab = 1024 if size == "tiny" else 30522
    if name == "bert":
        cfg = tf.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, max_position_embeddings=max(512, s.seq),
                            attn_implementation=attn)
        module = tf.BertModel(cfg, add_pooling_layer=False)
        kwargs = {"input_ids": _ids(vocab, s, 1)}
    elif name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                            n_inner=ffn, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            use_cache=False, n_positions=max(1024, s.seq), attn_implementation=attn)
        module = tf.GPT2Model(cfg)
        kwargs = {"input_ids": _ids(vocab, s, 2)}
    elif name == "llama":
        cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads,
                             intermediate_size=ffn, max_position_embeddings=max(2048, s.seq),
                             use_cache=False, attn_implementation=attn)
        module = tf.LlamaModel(cfg)
        kwargs = {"input_ids": _ids(vocab, s, 3)}
    elif name == "vit":
        patch = 8 if size == "tiny" else 16
        side = max(1, round(math.sqrt(s.seq)))
        cfg = tf.ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=ffn, image_size=patch * side, patch_size=patch,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           attn_implementation=attn)
        module = tf.ViTModel(cfg, add_pooling_layer=False)
        gen = torch.Generator().manual_seed(4)
        kwargs = {"pixel_values": torch.randn(s.batch, 3, patch * side, patch * side, generator=gen)}
        shape += f", image {patch * side}x{patch * side}, patch {patch}"
    else:
        cfg = tf.T5Config(vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=ffn,
                          num_layers=layers, num_heads=heads, dropout_rate=0.0, use_cache=False,
                          attn_implementation=attn)
        module = tf.T5Model(cfg)
        kwargs = {"input_ids": _ids(vocab, s, 5), "decoder_input_ids": _ids(vocab, s, 6)}
    module.train(s.train)
    desc = (f"{name} ({size}: {shape}), random init, batch {s.batch}"
            + ("" if name == "vit" else f", seq {s.seq}") + (", training" if s.train else ", inference"))
    return Model(spec, desc, module, (), kwargs)


def _import(path: str) -> Any:
    """A module by dotted name (from the current folder too) or a .py file by path."""
    if path.endswith(".py"):
        file = pathlib.Path(path)
        if not file.is_file():
            raise ModelError(f"no file {path!r}: give the path of a Python file, or module.path")
        spec = importlib.util.spec_from_file_location(f"_trebuchet_user_{file.stem}", file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    sys.path.insert(0, os.getcwd())     # a module in the current folder, as `python -m` finds it
    importlib.invalidate_caches()
    try:
        return importlib.import_module(path)
    finally:
        sys.path.pop(0)


def _from_callable(spec: str, s: Sizes) -> Model:
    path, _, attr = spec.partition(":")
    try:
        mod = _import(path)
    except ImportError as e:
        raise ModelError(f"cannot import {path!r} (from {spec!r}): {e}. The module must be "
                         "importable from the current folder or the Python path") from None
    fn: Callable | None = getattr(mod, attr, None)
    if not callable(fn):
        raise ModelError(f"{path} has no callable {attr!r}: {spec!r} must name a function "
                         "returning (model, example_inputs)")
    made = fn()
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
        raise ModelError(f"{spec} returned {type(made).__name__}, not (model, example_inputs)")
    module, inputs = made
    args, kwargs = ((), dict(inputs)) if isinstance(inputs, dict) else (
        tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,), {})
    if isinstance(module, torch.nn.Module):
        module.train(s.train)
    return Model(spec, f"{spec} (user callable)" + (", training" if s.train else ", inference"),
                 module, args, kwargs)
