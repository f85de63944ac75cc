"""Model FLOPs per token, and what this machine's matmuls reach, for the benchmarks' utilisation figures.

.venv/bin/python benchmarks/flops.py     # fp32 matmul GFLOP/s of this machine
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch


def layer_windows(config: Any) -> list[int | None]:
    """Each layer's attention window (None: full causal), from a ropekit ModelConfig (``layers``) or a
    transformers config (``layer_types`` and ``sliding_window``)."""
    if hasattr(config, "layers"):
        return [layer.window for layer in config.layers]
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    return [config.sliding_window if t == "sliding_attention" else None for t in types]


def mean_keys(length: int, window: int | None) -> float:
    """Keys a query attends to, averaged over positions 1..T: mean of min(t, window)."""
    if window is None or length <= window:
        return (length + 1) / 2
    return window - window * (window - 1) / (2 * length)


def flops_per_token(config: Any, length: int) -> float:
    """Forward FLOPs per token of a length-T sequence (no recomputation, norms and rope ignored).

    matmul = L * (2*H*nh*hd [q, o] + 2*H*nkv*hd [k, v] + 3*H*I [gate, up, down]) + H*V [LM head]
    attention = sum over layers of 4 * nh * hd * K, with K = (T+1)/2 on a causal full layer and
        K = mean over t=1..T of min(t, W) = W - W(W-1)/(2T) (when T > W) on a sliding layer of window W
    flops/token = 2 * matmul + attention
    """
    c = config
    H, nh, nkv, hd = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    per_layer = 2 * H * nh * hd + 2 * H * nkv * hd + 3 * H * c.intermediate_size
    matmul = c.num_hidden_layers * per_layer + H * c.vocab_size
    keys = sum(mean_keys(length, window) for window in layer_windows(c))
    return 2 * matmul + 4 * nh * hd * keys


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of a square matmul in ``dtype`` on the CPU with ``threads`` threads: the physical
    ceiling the benchmarks' model FLOPs are compared against."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="matmul throughput of this machine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    print(f"{matmul_gflops(args.threads, dtype=getattr(torch, args.dtype)):.1f} GFLOP/s")
