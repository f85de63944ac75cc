"""FlexAttention's compiled CPU kernel against ropekit's CPU path for sliding layers: should the CPU take it?

One sliding layer of Gemma 3 270M's shape (4 query heads, 1 key/value head, head dim 256, window 512):
``sliding_attention`` (SDPA band by band) against ``flex_two_region_attention`` with no far region (one fused
band, compiled). Timed best of ``--repeats`` after one call; the first call (the compile) is timed apart, and
the outputs' difference reported. (The two-region path needs the kernel's log-sum-exp, which torch 2.13's
compiled CPU kernel does not return: on the CPU it has only the eager reference, which holds every score.)

    PYTHONPATH=. .venv/bin/python benchmarks/flex_cpu.py --lengths 4096 16384 --out benchmarks/results/flex_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ropekit.models.attention import sliding_attention
from ropekit.models.flex import flex_two_region_attention

HEADS, KV_HEADS, DIM, WINDOW = 4, 1, 256, 512


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(length: int, dtype: torch.dtype, repeats: int) -> dict:
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, length, DIM, dtype=dtype)
    k, v = (torch.randn(1, KV_HEADS, length, DIM, dtype=dtype) for _ in range(2))
    ours = lambda: sliding_attention(q, k, v, window=WINDOW, scale=DIM**-0.5)  # noqa: E731
    flex = lambda: flex_two_region_attention(  # noqa: E731
        q, k, q, k, v, window=length, layer_window=WINDOW, scale=DIM**-0.5, compiled=True
    )
    first = timed(flex)
    error = (flex().float() - ours().float()).abs().max().item()
    times = {name: min(timed(fn) for _ in range(repeats)) for name, fn in (("sliding", ours), ("flex", flex))}
    return {"length": length, "dtype": str(dtype).removeprefix("torch."), "flex_first_call_s": first,
            "sliding_attention_s": times["sliding"], "flex_s": times["flex"],
            "speedup": times["sliding"] / times["flex"], "max_abs_diff": error}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096])
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for dtype in args.dtypes:
        for length in args.lengths:
            rows.append(measure(length, getattr(torch, dtype), args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": platform.node(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    meta["command"] = "PYTHONPATH=. python benchmarks/flex_cpu.py " + " ".join(sys.argv[1:])
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
