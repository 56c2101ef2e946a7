"""BERT in bfloat16: eager vs torch.compile's default backend vs Trebuchet.

    python benchmarks/bf16.py                         # every workload
    python benchmarks/bf16.py --workloads bf16_infer autocast_train --quick
    python benchmarks/bf16.py --workloads bf16_infer --repeats 1 --warmup 0 --compile-time   # a smoke run

A random-initialized BERT (Hugging Face `transformers`, built from a config, nothing
downloaded; sdpa attention, dropout off), run two ways:
  bf16_*      the model converted with `.to(torch.bfloat16)`
  autocast_*  a float32 model under `torch.autocast("cpu", torch.bfloat16)`
  *_infer     BertModel, hidden 768, 12 heads, intermediate 3072, 2 layers, batch 8 x seq 128,
              eval under no_grad
  *_train     BertForMaskedLM, hidden 256, 4 layers, 4 heads, vocab 8192, batch 8 x seq 128:
              forward, masked-LM cross-entropy (15% of tokens), backward, SGD step, zero_grad
Timing, checks, the table, --compile-time (compile time added over aot_eager, cold caches)
and the targets summary at the end as in benchmarks/cnn.py (its runner), with bfloat16's
tolerance.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

import torch
import torch.nn.functional as F

from cnn import Workload, infer_workload, main, train_workload

WORKLOADS = ["bf16_infer", "autocast_infer", "bf16_train", "autocast_train"]
BF16_TOL = 3e-2
# A bfloat16 training step's gradients: the default backend's differed from eager's by 0.127
# of a gradient's scale, Trebuchet's by 0.120 (bf16_train, measured 2026-11-29): rounding.
BF16_GRAD_TOL = 0.2


def _autocast() -> Any:
    return torch.autocast("cpu", torch.bfloat16)


@contextlib.contextmanager
def _autocast_no_grad() -> Any:
    with torch.no_grad(), _autocast():
        yield


def _bert_infer() -> torch.nn.Module:
    import transformers as tf

    config = tf.BertConfig(hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                           intermediate_size=3072, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    return tf.BertModel(config, add_pooling_layer=False)


def _bert_train() -> torch.nn.Module:
    import transformers as tf

    config = tf.BertConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=1024, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    return tf.BertForMaskedLM(config)


def bf16_workloads(args: argparse.Namespace) -> list[Workload]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 8192, (8, 128), generator=gen)
    masked = torch.rand(8, 128, generator=gen) < 0.15
    labels = torch.where(masked, ids, torch.full_like(ids, -100))

    def mlm_loss(out: Any) -> torch.Tensor:
        logits = out.logits.float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)

    def to_bf16(m: torch.nn.Module) -> torch.nn.Module:
        return m.to(torch.bfloat16)

    out = []
    for name in args.workloads:
        mode, kind = name.split("_")
        prepare = to_bf16 if mode == "bf16" else (lambda m: m)
        if kind == "infer":
            context = torch.no_grad if mode == "bf16" else _autocast_no_grad
            out.append(infer_workload(name, _bert_infer, ids, False, prepare=prepare, context=context,
                                      tol=BF16_TOL))
        else:
            context = torch.enable_grad if mode == "bf16" else _autocast
            out.append(train_workload(name, _bert_train, ids, False, loss_fn=mlm_loss, prepare=prepare,
                                      context=context, loss_tol=BF16_TOL, grad_tol=BF16_GRAD_TOL))
    return out


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS)


if __name__ == "__main__":
    sys.exit(main(workloads_fn=bf16_workloads, add_args=_args, description=__doc__))
