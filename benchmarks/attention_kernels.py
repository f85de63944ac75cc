"""Causal attention on the CPU: which kernel is fastest in bf16, and how far from the matmul ceiling.

At long contexts a pass is causal attention (BENCHMARKS.md, "where the bf16 time goes"), so bf16's
speed-up is bounded by the attention kernel. This times one layer's causal attention at SmolLM2's
shape (9 query heads, 3 key/value heads, head dim 64) in the ways torch offers on the CPU:

- ``sdpa``: ``F.scaled_dot_product_attention(is_causal=True)``, torch's fused flash kernel (what
  ropekit runs), in fp32 and in bf16;
- ``flex``: ``torch.compile(flex_attention)`` with a causal block mask, in bf16 (inductor's CPU
  template);
- ``blocked``: 512-query blocks as three separate ops over bf16 matmuls (scores = Q K^T, an fp32
  softmax, P V), the keys cut at each block's end. Its scores come out of the matmul in bf16 (torch
  2.13 has no fp32-output bf16 matmul on the CPU), too coarse for logits, so its time is a lower
  bound on what a correct blocked kernel would take.

Each is checked against fp32 SDPA (max abs error of the output) and timed best-of-``--repeats``;
GFLOP/s counts the causal work, 2 * 2 * head_dim * heads * T^2 / 2 FLOPs. The bf16 and fp32 matmul
ceilings (a 2048^3 matmul, best of ten) are measured in the same run.

    .venv/bin/python benchmarks/attention_kernels.py --lengths 4096 16384 \
        --out benchmarks/results/attention_kernels_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 512


def matmul_ceiling(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of the best of ten n^3 matmuls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(10))
    return 2 * n**3 / best / 1e9


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention for blocks of queries as separate matmul, softmax and matmul ops."""
    length = q.shape[-2]
    out = torch.empty_like(q)
    k, v = k.repeat_interleave(HEADS // KV_HEADS, 1)[0], v.repeat_interleave(HEADS // KV_HEADS, 1)[0]
    mask = torch.ones(BLOCK, BLOCK, dtype=torch.bool).tril()
    for start in range(0, length, BLOCK):
        end = min(start + BLOCK, length)
        scores = torch.bmm(q[0, :, start:end], k[:, :end].transpose(1, 2)).float() * scale
        scores[:, :, start:end].masked_fill_(~mask[: end - start, : end - start], float("-inf"))
        out[0, :, start:end] = torch.bmm(torch.softmax(scores, -1).to(q.dtype), v[:, :end])
    return out


def measure(length: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, length, HEAD_DIM)
    k, v = torch.randn(1, KV_HEADS, length, HEAD_DIM), torch.randn(1, KV_HEADS, length, HEAD_DIM)
    scale = HEAD_DIM**-0.5
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    bf = [t.bfloat16() for t in (q, k, v)]
    mask = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, length, length, device="cpu")
    flex = torch.compile(flex_attention)
    cases = {
        ("sdpa", "float32"): lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        ("sdpa", "bfloat16"): lambda: F.scaled_dot_product_attention(*bf, is_causal=True, enable_gqa=True),
        ("flex", "bfloat16"): lambda: flex(*bf, block_mask=mask, enable_gqa=True, scale=scale),
        ("blocked", "bfloat16"): lambda: blocked(*bf, scale),
    }
    flops = 2 * HEAD_DIM * HEADS * length**2
    rows = []
    for (kernel, dtype), fn in cases.items():
        out, first = timed(fn)  # flex compiles here
        best = min(timed(fn)[1] for _ in range(repeats))
        error = (out.float() - reference).abs().max().item()
        rows.append(
            {
                "length": length,
                "kernel": kernel,
                "dtype": dtype,
                "seconds": best,
                "first_call_s": first,
                "gflops": flops / best / 1e9,
                "max_abs_error": error,
            }
        )
        print(
            f"{length:>6} {kernel:>8} {dtype:>9} {best:8.3f} s {flops / best / 1e9:6.0f} GFLOP/s  error {error:.1e}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    ceilings = {name: matmul_ceiling(dtype) for name, dtype in dtypes.items()}
    print("matmul ceilings, GFLOP/s:", {k: round(v) for k, v in ceilings.items()})
    rows = [row for length in args.lengths for row in measure(length, args.repeats)]
    if args.out:
        meta = {
            "machine": platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
            "matmul_gflops": ceilings,
            "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM},
        }
        args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
