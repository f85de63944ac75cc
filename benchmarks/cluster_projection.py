"""A realistic cluster sweep on paper (issue 14): an 8B model (Llama-3.1-8B's shape), 8 ropes x 3 layer
mixes x 4k..128k x 10 documents, from ropekit's FLOPs model and its planner, at a stated GPU rate.

Each (layer mix, rope) is planned as a sweep plans it (``plan_document`` in first mode: static ropes
one pass at 128k serving every length by prefix, dynamic a pass per length past its trained length,
longrope one per regime); its seconds are its passes' FLOPs (``cost.flops_per_token`` at each pass's
length) over ``--tflops`` x ``--utilisation`` (H100 bf16 dense peak 989 TFLOP/s at 40 % until a GPU
measures ropekit's MFU at these lengths: BENCHMARKS.md, GPU). Work units are whole (layer mix, rope)
groups or, with ``--per-document``, one document of one group; they are packed longest first onto W
GPUs (what the claims do), giving the wall time (makespan) and GPU-hours. The peak memory of the
longest pass is ``cost.pass_memory``'s.

    .venv/bin/python benchmarks/cluster_projection.py --gpus 8 32 128
"""

from __future__ import annotations

import argparse
import heapq

import torch

from ropekit.eval.perplexity import plan_document
from ropekit.models import checkpoint_config, plan_config
from ropekit.sweep.cost import flops_per_token, pass_memory

LLAMA_8B = {
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 14336, "vocab_size": 128256,
    "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}  # fmt: skip
ROPES = ["native", "default", "linear:16", "dynamic:16", "yarn:16", "yarn:32", "longrope:16", "llama3:16"]
MIXES = ["all-global", "LLLG@4096", "LLLG@4096+nope"]
LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072]


def units(docs: int, per_document: bool) -> tuple[list[float], int, float]:
    """Each unit's FLOPs, the longest pass's tokens, and the FLOPs of a pass per length instead."""
    checkpoint = checkpoint_config(LLAMA_8B)
    out, longest, naive = [], 0, 0.0
    for mix in MIXES:
        for rope in ROPES:
            config = plan_config(checkpoint, rope_scaling=rope, layer_mix=mix)
            plan = plan_document(config, max(LENGTHS), LENGTHS, mode="first")
            flops = sum(p.tokens * flops_per_token(config, p.end) for p in plan.passes)
            longest = max([longest, *(p.tokens for p in plan.passes)])
            out += [flops] * docs if per_document else [flops * docs]
            naive += docs * sum(n * flops_per_token(config, n) for n in LENGTHS)
    return out, longest, naive


def makespan(work: list[float], gpus: int) -> float:
    """Longest first onto the least loaded GPU."""
    loads = [0.0] * gpus
    for w in sorted(work, reverse=True):
        heapq.heapreplace(loads, loads[0] + w)
    return max(loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--tflops", type=float, default=989.0, help="peak bf16 TFLOP/s of one GPU (H100 SXM dense)")
    parser.add_argument("--utilisation", type=float, default=0.4, help="fraction of the peak a pass reaches")
    args = parser.parse_args()
    rate = args.tflops * 1e12 * args.utilisation
    config = plan_config(checkpoint_config(LLAMA_8B), rope_scaling="native", layer_mix="all-global")
    for per_document in (False, True):
        work, longest, naive = units(args.docs, per_document)
        seconds = [w / rate for w in work]
        memory = pass_memory(config, longest, torch.bfloat16).total / 2**30
        what = "one document of a (layer mix, rope)" if per_document else "a (layer mix, rope) group"
        print(
            f"\nunits: {what}: {len(work)} units, {sum(work) / 1e18:.2f} EFLOP ({naive / 1e18:.2f} with a pass per "
            f"length), {sum(seconds) / 3600:.2f} GPU-hours at {args.tflops:.0f} TFLOP/s x {args.utilisation:.0%}; "
            f"longest unit {max(seconds) / 60:.1f} min; longest pass {longest} tokens, peak memory {memory:.0f} GiB"
        )
        for gpus in args.gpus:
            wall = makespan(seconds, gpus)
            print(f"  {gpus:>4} GPUs: wall {wall / 60:6.1f} min, busy {sum(seconds) / (wall * gpus):.0%}")


if __name__ == "__main__":
    main()
