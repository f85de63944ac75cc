"""Tokens/s and peak memory of the position methods that act in attention (ReRoPE, leaky ReRoPE,
Self-Extend, log-n; ropekit/rope/positions.py) against the default rope on the fused kernel, and
transformers' forward as the baseline of the same run.

Each measurement runs in a fresh process (peak RSS is that run's own), methods alternate within a
repeat, and every process scores the same tokens (the first L of Hamlet) with ``token_nll`` in the
dtype asked for (``auto``: what ropekit picks on this machine). Windows follow each method's source
at SmolLM2's trained 8192: ReRoPE's and leaky ReRoPE's 1024 (bojone's 512 at 4096, scaled), leaky's
k 16, Self-Extend's group 8 and neighbour window 2048 (LongLM's README settings for Llama-2 at 4096,
scaled).

    .venv/bin/python benchmarks/position_methods.py --lengths 4096 16384 --repeats 2 \
        --out benchmarks/results/position_methods_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from model_nll import peak_rss_gb, run_capped, run_meta, summarise, tokens  # noqa: E402

METHODS = {
    "default": "default",
    "rerope": "rerope:1024",
    "leaky_rerope": "leaky_rerope:1024,16",
    "self_extend": "self_extend:8,2048",
    "log_n": '{"rope_type": "default", "log_n": true}',
    "rerope+log_n": '{"rope_type": "rerope", "window": 1024, "log_n": true}',
}


def child(model_name: str, rope: str, ids_file: str, threads: int, dtype: str) -> dict:
    import torch

    import ropekit

    torch.set_num_threads(threads)
    ids = torch.load(ids_file)
    rope_scaling = json.loads(rope) if rope.startswith("{") else rope
    model = ropekit.load_model(model_name, rope_scaling=rope_scaling, dtype=dtype)
    rss_loaded = peak_rss_gb()
    start = time.perf_counter()
    nll = ropekit.token_nll(model, ids)
    seconds = time.perf_counter() - start
    return {
        "length": len(ids),
        "seconds": seconds,
        "tokens_per_s": len(ids) / seconds,
        "rss_after_load_gb": rss_loaded,
        "peak_rss_gb": peak_rss_gb(),
        "mean_nll": float(nll.double().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (ropekit's choice)")
    parser.add_argument("--memory-gb", type=float, default=22.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.child, args.ids, args.threads, args.dtype)))
        return
    import torch

    from ropekit.models import resolve_dtype

    dtype = resolve_dtype(args.dtype).name
    baseline = [] if args.no_transformers else ["transformers"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        all_ids = tokens(args.model, max(args.lengths))
        for length in args.lengths:
            ids_file = f"{tmp}/ids{length}.pt"
            torch.save(torch.tensor(all_ids[:length]), ids_file)
            runs: dict[str, list[dict]] = {name: [] for name in [*args.methods, *baseline]}
            for _ in range(args.repeats):
                for name, done in runs.items():
                    if done and done[-1]["status"] != "ok":
                        continue  # out of memory once is out of memory
                    if name == "transformers":
                        cmd = [sys.executable, str(Path(__file__).parent / "model_nll.py"), "--child", "transformers"]
                        cmd += ["--model", args.model, "--ids", ids_file, "--threads", str(args.threads)]
                        done.append(run_capped(name, cmd + ["--dtype", dtype], args.memory_gb))
                    else:
                        cmd = [sys.executable, __file__, "--child", METHODS[name], "--model", args.model]
                        cmd += ["--ids", ids_file, "--threads", str(args.threads), "--dtype", dtype]
                        done.append(run_capped(name, cmd, args.memory_gb))
            default = summarise(runs["default"]) if "default" in runs else None
            for name, method_runs in runs.items():
                row = {"model": args.model, "length": length, "dtype": dtype, "method": name}
                row |= {"rope": METHODS.get(name, "default (transformers' forward)"), **summarise(method_runs)}
                if default and default["status"] == "ok" and row["status"] == "ok":
                    row["speed_vs_default"] = row["tokens_per_s_median"] / default["tokens_per_s_median"]
                    row["peak_rss_vs_default"] = row["peak_rss_gb"] / default["peak_rss_gb"]
                results.append(row)
                print(json.dumps(row), flush=True)
    meta = run_meta(args.threads, dtype=dtype)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
