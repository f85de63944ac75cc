"""Retrieval trials per second: ropekit's ``score_answer`` (one forward, only the answer's positions
projected) against transformers' ``generate(do_sample=False)`` on the same passkey prompts.

Each measurement runs in a fresh process (peak RSS is that run's own), ropekit and transformers
alternate, and both read the same GGUF file in the same dtype. A trial is one prompt of L tokens
(the passkey at 50 % depth, trial i of seed 0) and its answer: ropekit scores it; transformers
generates as many tokens as the answer has and compares them. Each row also says whether the two
agree on every trial (ropekit's ``exact`` against "generate produced the answer").

    .venv/bin/python benchmarks/retrieval_speed.py --model smollm2-135m --lengths 4096 16384 --trials 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from model_nll import peak_rss_gb, run_capped, transformers_model  # beside this script


def trials(tokenizer, length: int, n: int) -> list:
    from ropekit.tasks import build_trial

    return [build_trial(tokenizer, "passkey", length, 50, i, seed=0, digits=5) for i in range(n)]


def child(impl: str, model_name: str, length: int, n: int, threads: int, dtype: str) -> dict:
    import torch

    import ropekit

    torch.set_num_threads(threads)
    model = ropekit.load_model(model_name, dtype=dtype)
    prompts = trials(model.tokenizer, length, n)
    if impl == "transformers":
        del model
        model = transformers_model(model_name, dtype)
    rss_loaded = peak_rss_gb()
    seconds, exact = [], []
    for trial in prompts:
        start = time.perf_counter()
        if impl == "ropekit":
            exact.append(ropekit.score_answer(model, trial.prompt_ids, trial.answer_ids).exact)
        else:
            ids = torch.tensor(trial.prompt_ids)[None]
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=len(trial.answer_ids),
                    min_new_tokens=len(trial.answer_ids),
                    do_sample=False,
                    pad_token_id=0,
                )
            exact.append(out[0, ids.shape[1] :].tolist() == list(trial.answer_ids))
        seconds.append(time.perf_counter() - start)
    return {
        "impl": impl,
        "length": length,
        "seconds": seconds,
        "exact": exact,
        "rss_after_load_gb": rss_loaded,
        "peak_rss_gb": peak_rss_gb(),
    }


def run_case(impl: str, args: argparse.Namespace, length: int, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--model", args.model, "--lengths", str(length)]
    cmd += ["--trials", str(args.trials), "--threads", str(args.threads), "--dtype", dtype]
    return run_capped(impl, cmd, args.memory_gb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--trials", type=int, default=3, help="prompts per length (each timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (ropekit's choice here)")
    parser.add_argument("--memory-gb", type=float, default=22.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.lengths[0], args.trials, args.threads, args.dtype)))
        return
    import torch

    import ropekit
    from ropekit.models import resolve_dtype

    precision = resolve_dtype(args.dtype)
    results = []
    for length in args.lengths:
        runs = {impl: run_case(impl, args, length, precision.name) for impl in ("ropekit", "transformers")}
        ours, theirs = runs["ropekit"], runs["transformers"]
        row = {"model": args.model, "length": length, "dtype": precision.name, "trials": args.trials}
        for impl, r in runs.items():
            if r["status"] != "ok":
                row[impl] = {"status": r["status"], "detail": r["detail"]}
                continue
            row[impl] = {
                "status": "ok",
                "trials_per_s": len(r["seconds"]) / sum(r["seconds"]),
                "seconds_min": min(r["seconds"]),
                "seconds_median": statistics.median(r["seconds"]),
                "seconds_max": max(r["seconds"]),
                "peak_rss_gb": r["peak_rss_gb"],
                "exact": r["exact"],
            }
        if ours["status"] == theirs["status"] == "ok":
            row["agree"] = ours["exact"] == theirs["exact"]
        results.append(row)
        print(json.dumps(row), flush=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": args.threads,
        "torch": torch.__version__,
        "ropekit": ropekit.__version__,
        "transformers": __import__("transformers").__version__,
        "command": " ".join(sys.argv),
        "dtype": precision.name,
        "dtype_reason": precision.reason,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
