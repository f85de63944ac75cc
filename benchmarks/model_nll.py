"""Per-token NLL of one long text: ropekit's token_nll against transformers' forward(labels=...).

Each measurement runs in a fresh process (so peak RSS is that run's own, from the OS accounting),
the two implementations alternate, and every case repeats. Both read the same GGUF file in the same
dtype (``--dtype``: one or more of float32, bfloat16 and auto, resolved as ropekit resolves it;
with several, every case runs in each, alternating) and score the same tokens (the first L tokens
of Hamlet from the embedded corpus). Each row also carries the model FLOPs per token
(benchmarks/flops.py) and the achieved fraction of this machine's matmul throughput in that dtype;
the ceilings of every dtype asked for are measured at the start of the run.

    .venv/bin/python benchmarks/model_nll.py --lengths 2048 8192 --repeats 3 --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def child(impl: str, model_name: str, ids_file: str, threads: int, dtype: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    ids = torch.load(ids_file)
    start = time.perf_counter()
    if impl == "ropekit":
        import ropekit

        model = ropekit.load_model(model_name, dtype=dtype)
        loaded = time.perf_counter()
        rss_loaded = peak_rss_gb()
        t0 = time.perf_counter()
        nll = ropekit.token_nll(model, ids)
        seconds = time.perf_counter() - t0
        mean = float(nll.double().mean())
    else:
        model = transformers_model(model_name, dtype)
        loaded = time.perf_counter()
        rss_loaded = peak_rss_gb()
        t0 = time.perf_counter()
        with torch.inference_mode():
            loss = model(ids[None], labels=ids[None]).loss
        seconds = time.perf_counter() - t0
        mean = float(loss)
    return {
        "impl": impl,
        "length": len(ids),
        "seconds": seconds,
        "tokens_per_s": len(ids) / seconds,
        "load_s": loaded - start,
        "rss_after_load_gb": rss_loaded,
        "peak_rss_gb": peak_rss_gb(),
        "mean_nll": mean,
    }


def tokens(model_name: str, length: int) -> list[int]:
    import ropekit
    from ropekit.data import shakespeare

    tokenizer = ropekit.load_model(model_name).tokenizer
    ids = tokenizer.encode(next(d.text for d in shakespeare().documents if d.name == "Hamlet"))
    if len(ids) < length:
        raise SystemExit(f"Hamlet has {len(ids)} tokens, fewer than {length}")
    return ids[:length]


def run_case(impl: str, model: str, ids_file: str, threads: int, memory_gb: float, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--model", model, "--ids", ids_file, "--threads", str(threads)]
    return run_capped(impl, cmd + ["--dtype", dtype], memory_gb)


def transformers_model(model_name: str, dtype: str):
    """transformers' model of an embedded model's GGUF file, in ``dtype``, with sdpa attention."""
    import torch
    from transformers import AutoModelForCausalLM

    from ropekit.models import embedded_path

    path = embedded_path(model_name)
    return AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=getattr(torch, dtype), attn_implementation="sdpa"
    ).eval()


def run_capped(impl: str, cmd: list[str], memory_gb: float) -> dict:
    """A child benchmark process under an address-space cap: its last stdout line (JSON) with status
    ok, or status oom / error with the last line of its stderr. The cap turns running out of memory
    into a recorded result, not a dead machine."""
    limit = f"ulimit -v {int(memory_gb * 2**20)}; exec {shlex.join(cmd)}"
    result = subprocess.run(["bash", "-c", limit], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        out_of_memory = ("MemoryError", "Cannot allocate memory", "DefaultCPUAllocator: can't allocate")
        status = "oom" if any(s in result.stderr for s in out_of_memory) or result.returncode in (-9, 137) else "error"
        return {"impl": impl, "status": status, "detail": tail[-300:]}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "status": "ok"}


def run_meta(threads: int, **extra) -> dict:
    """What a benchmark's numbers depend on: machine, threads, versions, the command that made them."""
    import torch

    import ropekit

    return {
        "machine": platform.processor() or platform.machine(),
        "cpus": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ropekit": ropekit.__version__,
        "transformers": __import__("transformers").__version__,
        "command": " ".join(sys.argv),
        **extra,
    }


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {"status": runs[0]["status"], "detail": runs[0].get("detail")}
    tps = [r["tokens_per_s"] for r in ok]
    return {
        "status": "ok",
        "runs": len(ok),
        "tokens_per_s_median": statistics.median(tps),
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in ok),
        "rss_after_load_gb": max(r["rss_after_load_gb"] for r in ok),
        "mean_nll": ok[0]["mean_nll"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--impls", nargs="+", default=["ropekit", "transformers"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", nargs="+", default=["float32"], help="float32, bfloat16, auto (ropekit's choice)")
    parser.add_argument("--memory-gb", type=float, default=22.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.ids, args.threads, args.dtype[0])))
        return
    import torch
    from flops import flops_per_token, matmul_gflops

    from ropekit.models import model_config, read_model_config, resolve_dtype

    precisions = {p.name: p for p in map(resolve_dtype, args.dtype)}  # "auto" may resolve to one already asked
    # This machine's ceilings, measured before the runs.
    peaks = {name: matmul_gflops(args.threads, dtype=p.dtype) for name, p in precisions.items()}
    config = model_config(read_model_config(args.model)[1])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        all_ids = tokens(args.model, max(args.lengths))
        for length in args.lengths:
            ids_file = f"{tmp}/ids{length}.pt"
            torch.save(torch.tensor(all_ids[:length]), ids_file)
            runs = {(dtype, impl): [] for dtype in precisions for impl in args.impls}
            for _ in range(args.repeats):
                for (dtype, impl), done in runs.items():
                    if done and done[-1]["status"] != "ok":
                        continue  # out of memory once is out of memory
                    done.append(run_case(impl, args.model, ids_file, args.threads, args.memory_gb, dtype))
            flops = flops_per_token(config, length)
            for (dtype, impl), impl_runs in runs.items():
                row = {"model": args.model, "length": length, "dtype": dtype, "impl": impl, **summarise(impl_runs)}
                row["flops_per_token"] = flops
                if row["status"] == "ok":
                    row["gflops"] = flops * row["tokens_per_s_median"] / 1e9
                    row["fraction_of_matmul_peak"] = row["gflops"] / peaks[dtype]
                results.append(row)
                print(json.dumps(row), flush=True)
    meta = run_meta(args.threads, matmul_gflops=peaks, dtype_reasons={name: p.reason for name, p in precisions.items()})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
