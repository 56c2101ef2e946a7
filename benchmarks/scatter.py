"""Indexed writes in entry order (Scatter kernels): eager vs the default backend vs Trebuchet.

    python benchmarks/scatter.py                                    # every case, median of 21
    python benchmarks/scatter.py --cases embedding_backward --backends eager,trebuchet

The embedding backward of BERT-base's word embeddings (vocab 30522, hidden 768, 8x128
tokens: `embedding_dense_backward`, which AOTAutograd decomposes into zeros and an
index_put accumulating the tokens' gradients) and a scatter_add of the same size. All
backends run in one process with the interleaved timer of `common.py`; each time is a
median, the ratios their time / Trebuchet's (> 1: Trebuchet faster). float32 results are
checked bit for bit against eager (both add each row's tokens in token order).
"""

from __future__ import annotations

import sys

import torch

from common import case_options, format_text, run_case

aten = torch.ops.aten
VOCAB, HIDDEN, BATCH, SEQ = 30522, 768, 8, 128


def _embedding_backward(dtype: torch.dtype):
    def fn(grad, ids):
        return aten.embedding_dense_backward(grad, ids, VOCAB, -1, False)

    def make():
        return [torch.randn(BATCH, SEQ, HIDDEN).to(dtype), torch.randint(0, VOCAB, (BATCH, SEQ))]
    return fn, make


def _scatter_add():
    def fn(x, i, s):
        return aten.scatter_add(x, 0, i, s)

    def make():
        return [torch.zeros(VOCAB, HIDDEN),
                torch.randint(0, VOCAB, (BATCH * SEQ, 1)).expand(BATCH * SEQ, HIDDEN).contiguous(),
                torch.randn(BATCH * SEQ, HIDDEN)]
    return fn, make


CASES = {
    "embedding_backward": _embedding_backward(torch.float32),
    "embedding_backward_bf16": _embedding_backward(torch.bfloat16),
    "scatter_add": _scatter_add(),
}


def main(argv: list[str] | None = None) -> int:
    args, backends, names = case_options(argv, __doc__.splitlines()[0], CASES, 21)
    header = ["case"] + [f"{b} ms" for b in backends] + ["vs eager", "vs inductor", "correct"]
    rows, bad = [header], False
    for name in names:
        fn, make = CASES[name]
        torch._dynamo.reset()
        torch.manual_seed(0)
        inputs = make()
        exact = inputs[0].dtype == torch.float32
        cells, good = run_case(fn, inputs, backends, args.repeats, 2, rtol=0 if exact else 1.6e-2,
                               atol=0 if exact else 1e-2, passed="exact" if exact else "ok")
        bad |= not good
        rows.append([name] + cells)
        print("  " + "  ".join(rows[-1]), flush=True)
    print()
    print(format_text(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
