"""ropekit's decoder against transformers on real model shapes with random weights (no download).

Both sides read the same random checkpoint, written by transformers itself, and score the same
random tokens: ropekit with ``token_nll``, transformers with ``forward(labels=...)`` (sdpa). Each
implementation is loaded, measured at every length, and freed before the other is loaded; the
order alternates across repeats. With ``--ropes``, ropekit alone runs once under each rope (the
attention-level methods against the plain rope). Meant for one H100/H200 in bf16; tiny shapes run on
a CPU. The JSON is rewritten after every measurement, so a run cut short keeps what it measured.

    python benchmarks/gpu_models.py --shape llama-3.2-1b --out benchmarks/results/llama_h100.json
    python benchmarks/gpu_models.py --shape llama-3.2-1b --lengths 32768 131072 --warmup each \
        --ropes default rerope:2048 leaky_rerope:2048,16 self_extend:8,2048
    python benchmarks/gpu_models.py --shape tiny-gemma --lengths 64 128 --repeats 1   # CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from flops import flops_per_token
from to_markdown import gpu_table

IMPLS = ("ropekit", "transformers")
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
GEMMA3_LAYERS = (["sliding_attention"] * 5 + ["full_attention"]) * 4 + ["sliding_attention"] * 2  # 26 layers
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, vocab_size=128256, rope_theta=500000.0,
        rope_scaling={**LLAMA3_ROPE, "original_max_position_embeddings": 8192},
        max_position_embeddings=131072, tie_word_embeddings=True,
    ),
    "gemma-3-1b": dict(
        model_type="gemma3_text", hidden_size=1152, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, intermediate_size=6912, vocab_size=262144, sliding_window=512,
        layer_types=GEMMA3_LAYERS, rope_theta=1e6, rope_local_base_freq=10000.0, query_pre_attn_scalar=256,
        max_position_embeddings=32768, final_logit_softcapping=None,
    ),
    "tiny-llama": dict(
        model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=128, vocab_size=512, rope_theta=500000.0,
        rope_scaling={**LLAMA3_ROPE, "factor": 4.0, "original_max_position_embeddings": 64},
        max_position_embeddings=1024, tie_word_embeddings=True,
    ),
    "tiny-gemma": dict(
        model_type="gemma3_text", hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
        head_dim=32, intermediate_size=128, vocab_size=512, sliding_window=32,
        layer_types=["sliding_attention"] * 3 + ["full_attention"], rope_theta=1e6, rope_local_base_freq=10000.0,
        query_pre_attn_scalar=32, max_position_embeddings=1024, final_logit_softcapping=None,
    ),
}  # fmt: skip
OOM_TEXT = re.compile(r"out of memory|can't allocate memory", re.IGNORECASE)
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]  # dense, no sparsity


def make_config(shape: str) -> Any:
    """The transformers config of a shape (legacy rope keys become ``rope_parameters`` there)."""
    from transformers import AutoConfig

    kwargs = dict(SHAPES[shape])
    return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)


def write_checkpoint(shape: str, folder: Path, dtype: torch.dtype) -> Any:
    """A random transformers model of the shape (seed 0) saved as safetensors; returns its config."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(shape), attn_implementation="sdpa", dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
    return model.config


def load(label: str, folder: Path, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """The model of one implementation on the device and its scoring function (ids -> mean NLL).
    ``label`` is an implementation, or ``ropekit ROPE``: ropekit under that rope."""
    impl, _, rope = label.partition(" ")
    if impl == "ropekit":
        import ropekit

        model = ropekit.load_model(folder, rope_scaling=rope or None, dtype=dtype, device=device)
        return model, lambda ids: float(ropekit.token_nll(model, ids).double().mean())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(device).eval()

    def score(ids: torch.Tensor) -> float:
        with torch.inference_mode():
            return float(model(ids[None], labels=ids[None]).loss)

    return model, score


def free(device: torch.device) -> None:
    """Give back what freed tensors held (the caller has dropped its references)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(score: Any, ids: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """One timed scoring call: seconds, tokens/s, peak memory, mean NLL; status 'oom' if it ran out."""
    cuda = device.type == "cuda"
    if cuda:
        free(device)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    try:
        start = time.perf_counter()
        nll = score(ids)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    except RuntimeError as err:  # torch.OutOfMemoryError is one; the CPU allocator raises a plain one
        if not isinstance(err, torch.OutOfMemoryError) and not OOM_TEXT.search(str(err)):
            raise
        return {"status": "oom", "detail": str(err).splitlines()[0][:200]}  # freed by the next free()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux; process-wide
    return {"status": "ok", "seconds": seconds, "tokens_per_s": len(ids) / seconds, "peak_gb": peak, "mean_nll": nll}


def predicted_memory(model: Any, length: int, device: torch.device) -> float:
    """GiB the dry run's memory model predicts for a pass of ``length`` tokens of a ropekit ``model`` on ``device``
    (``ropekit.sweep.cost.pass_memory``: weights, activations, a chunk of logits, attention workspace), its
    chunk of rows sized from the free memory now, as the forward sizes it."""
    from ropekit.sweep.cost import pass_memory

    return pass_memory(model.config, length, model.dtype, device=device).total / 2**30


def summarise(runs: list[dict], flops: float, length: int, peak_tflops: float | None) -> dict[str, Any]:
    """Median/min/max tokens/s over the ok runs, peak memory, achieved TFLOP/s and MFU."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {"status": runs[0]["status"] if runs else "missing", "detail": runs[0].get("detail") if runs else None}
    tps = [r["tokens_per_s"] for r in ok]
    median = statistics.median(tps)
    summary = {
        "status": "ok",
        "runs": len(ok),
        "tokens_per_s_median": median,
        "tokens_per_s_min": min(tps),
        "tokens_per_s_max": max(tps),
        "seconds_median": length / median,
        "peak_memory_gb": max(r["peak_gb"] for r in ok),
        "tflops": flops * median / 1e12,
        "mean_nll": ok[0]["mean_nll"],
    }
    if peak_tflops:  # omitted without a known peak (a CPU with no --peak-tflops)
        summary["mfu"] = summary["tflops"] / peak_tflops
    if predicted := [r["predicted_gb"] for r in ok if "predicted_gb" in r]:  # ropekit's: the memory model's
        summary["predicted_memory_gb"] = max(predicted)
        summary["predicted_over_measured"] = max(predicted) / summary["peak_memory_gb"]
    return summary


def checkpoint(args: argparse.Namespace, folder: Path, dtype: torch.dtype) -> Any:
    """The shape's random checkpoint in ``folder``, written unless a run before this one wrote it there."""
    if (folder / "config.json").exists():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder)
    partial = folder.with_name(folder.name + ".partial")  # a run killed while writing leaves no checkpoint behind
    config = write_checkpoint(args.shape, partial, dtype)
    partial.rename(folder)
    return config


def run(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, report: Any) -> None:
    """Every (implementation, length, repeat), one implementation on the device at a time; ``report(config,
    runs)`` after every measurement. Warm-up (``--warmup``): unmeasured passes at the first length, before
    every length, or at the lengths given: torch.compile specialises a kernel to the first shape it meets and
    makes it shape-generic at the second, so two short lengths leave the compiling out of every measurement."""
    lengths, labels = sorted(args.lengths), labels_of(args)
    runs: dict[tuple[str, int], list[dict]] = {(i, n): [] for i in labels for n in lengths}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoint or Path(tmp) / "checkpoint"
        config = checkpoint(args, folder, dtype)
        ids = torch.randint(0, config.vocab_size, (lengths[-1],), generator=torch.Generator().manual_seed(0))
        ids = ids.to(device)
        for repeat in range(args.repeats):
            for label in labels if repeat % 2 == 0 else labels[::-1]:
                model, score = load(label, folder, dtype, device)
                oom_at = None
                if args.warmup != "each":
                    warm = [lengths[0]] if args.warmup == "first" else [int(n) for n in args.warmup.split(",")]
                    if any(measure(score, ids[:n], device)["status"] == "oom" for n in warm):
                        oom_at = max(warm)
                for n in lengths:
                    if oom_at is not None:  # a longer sequence would run out too
                        runs[label, n].append({"status": "oom", "detail": f"skipped: out of memory at {oom_at}"})
                        continue
                    if args.warmup == "each":
                        measure(score, ids[:n], device)
                    result = measure(score, ids[:n], device)
                    if result["status"] == "ok" and label.startswith("ropekit"):
                        result["predicted_gb"] = predicted_memory(model, n, device)
                    runs[label, n].append(result)
                    oom_at = n if result["status"] == "oom" else None
                    print(f"repeat {repeat} {label:12} {n:7} {json.dumps(result)}", file=sys.stderr, flush=True)
                    report(config, runs)
                del model, score
                free(device)


def labels_of(args: argparse.Namespace) -> list[str]:
    """What is measured: ``ropekit ROPE`` for each of ``--ropes``, else the implementations of ``--impls``."""
    return [f"ropekit {rope}" for rope in args.ropes] if args.ropes else list(args.impls)


def rows_of(config: Any, runs: dict, labels: list[str], peak: float | None) -> list[dict]:
    """One row per length measured so far: each label's summary; ropekit against transformers (tokens/s and
    memory ratios, NLL difference), or each rope against the first (``vs_first``: its tokens/s over the first's)."""
    rows = []
    for n in sorted({n for (_, n), found in runs.items() if found}):
        flops = flops_per_token(config, n)
        row = {"length": n, "flops_per_token": flops, **{i: summarise(runs[i, n], flops, n, peak) for i in labels}}
        first = row[labels[0]]
        for label in labels[1:]:
            other = row[label]
            if first["status"] != "ok" or other["status"] != "ok":
                continue
            if label == "transformers":
                row["tokens_per_s_ratio"] = first["tokens_per_s_median"] / other["tokens_per_s_median"]
                row["memory_ratio"] = first["peak_memory_gb"] / other["peak_memory_gb"]
                row["nll_abs_diff"] = abs(first["mean_nll"] - other["mean_nll"])
            else:
                other["vs_first"] = other["tokens_per_s_median"] / first["tokens_per_s_median"]
        rows.append(row)
    return rows


def peak_for(device: torch.device, given: float | None) -> float | None:
    """Dense bf16 peak TFLOP/s: --peak-tflops, else the table by CUDA device name, else None."""
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def metadata(shape: str, device: torch.device, dtype: torch.dtype, peak: float | None) -> dict[str, Any]:
    """Machine, device, versions and command line of this run."""
    import transformers

    import ropekit

    if device.type == "cuda":
        device_name, memory = torch.cuda.get_device_name(device), "torch.cuda.max_memory_allocated per call"
    else:
        device_name = f"cpu ({torch.get_num_threads()} threads)"
        memory = "peak RSS of the whole process so far (ru_maxrss): cumulative over both implementations"
    return {
        "shape": shape,
        "machine": f"{platform.node()} ({platform.machine()}, {platform.processor() or '?'})",
        "device": device_name,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ropekit": ropekit.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "peak_tflops": peak,
        "peak_memory": memory + ", weights included",
    }


def warmup(text: str) -> str:
    if text in ("first", "each") or all(n.isdigit() for n in text.split(",")):
        return text
    raise argparse.ArgumentTypeError(f"expected 'first', 'each' or token counts (8192,16384), not {text!r}")


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.2-1b")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of the device, for MFU")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations to measure")
    parser.add_argument(
        "--ropes",
        nargs="+",
        help="ropekit alone, under each of these ropes (as `ropekit sweep` spells them; first: "
        "the baseline the others are compared with)",
    )
    parser.add_argument("--checkpoint", type=Path, help="the random checkpoint's folder: read if there, else written")
    parser.add_argument(
        "--warmup",
        type=warmup,
        default="first",
        help="'first': a pass at the first length; 'each': "
        "one before every length; N,M,...: one of N tokens, one of M, ... (two lengths compile the "
        "kernels torch.compile makes shape-generic)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    peak = peak_for(device, args.peak_tflops)
    meta = metadata(args.shape, device, dtype, peak)
    labels = labels_of(args)
    meta["labels"] = labels
    results: dict[str, Any] = {"meta": meta, "results": []}

    def report(config: Any, runs: dict) -> None:
        results["results"] = rows_of(config, runs, labels, peak)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))

    run(args, device, dtype, report)
    print(gpu_table(results))


if __name__ == "__main__":
    main()
