"""Model FLOPs per token (ropekit.sweep.cost), and what this machine's matmuls reach, for the benchmarks'
utilisation figures.

.venv/bin/python benchmarks/flops.py     # fp32 matmul GFLOP/s of this machine
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from ropekit.models import ModelConfig, model_config
from ropekit.sweep import cost
from ropekit.sweep.cost import layer_windows, mean_keys

__all__ = ["flops_per_token", "layer_windows", "matmul_gflops", "mean_keys"]


def flops_per_token(config: Any, length: int) -> float:
    """Forward FLOPs per token of a length-T sequence: ropekit.sweep.cost's formula (one for the
    package and the benchmarks), of a ropekit ModelConfig or of a transformers config (resolved into
    one as a checkpoint's config.json is)."""
    if not isinstance(config, ModelConfig):
        config = model_config(config.to_dict())
    return cost.flops_per_token(config, length)


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
