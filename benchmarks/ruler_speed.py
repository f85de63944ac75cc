"""RULER samples per second: ropekit's lm-eval backend (``RopekitLM.generate_until``) against lm-eval's HF backend
(``HFLM``: transformers' ``generate``) on lm-eval's own RULER samples, and a sweep's trial on the same prompts
(``score_and_generate``: what greedy decoding writes and the reference's teacher-forced log-probability, from one
forward of the prompt).

Each implementation runs in a fresh process (peak RSS is that run's own) on the same samples: lm-eval's task built
from its YAML, its generators seeded as a sweep seeds them (the prompts equal ropekit's: tests/tasks/test_ruler.py).
HFLM reads transformers' model of the same GGUF file in the same dtype, batch size 1, as ropekit's backend decodes.
Each row says whether the backends wrote the same text for every sample.

    .venv/bin/python benchmarks/ruler_speed.py --model smollm2-135m --task niah_single_1 --lengths 4096 8192 --samples 3
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from model_nll import peak_rss_gb, run_capped, run_meta, transformers_model  # beside this script

IMPLS = ("ropekit", "hf", "sweep")  # ropekit's backend, lm-eval's HF backend, a sweep's trial
SEED = 0  # the spec seed a sweep would draw the samples with


def lm_eval_instances(task: str, tokenizer_dir: Path, length: int, n: int) -> list:
    """lm-eval's ``task`` at ``length`` with its first ``n`` samples, seeded as a sweep seeds RULER's generators."""
    import lm_eval.tasks.ruler as package
    import numpy as np
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(list(package.__path__)[0]) / f"{task}.yaml")
    scope = config["custom_dataset"].__globals__
    real = scope["generate_samples"]
    scope["generate_samples"] = lambda *a, **kw: real(*a, **{**kw, "num_samples": n})
    try:
        random.seed(SEED)
        np.random.seed(SEED)
        metadata = {**config.get("metadata", {}), "pretrained": str(tokenizer_dir), "max_seq_lengths": [length]}
        built = ConfigurableTask(config={**config, "metadata": metadata})
    finally:
        scope["generate_samples"] = real
    built.build_all_requests(limit=n, rank=0, world_size=1)
    return built.instances


def child(impl: str, model_name: str, task: str, length: int, n: int, threads: int, dtype: str) -> dict:
    import torch

    import ropekit

    torch.set_num_threads(threads)
    model = ropekit.load_model(model_name, dtype=dtype)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        model.tokenizer.save_pretrained(tokenizer_dir)
        instances = lm_eval_instances(task, Path(tokenizer_dir), length, n)
        if impl == "hf":
            from lm_eval.models.huggingface import HFLM
            from transformers import AutoTokenizer

            del model
            hf = transformers_model(model_name, dtype)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            backend = HFLM(pretrained=hf, tokenizer=tokenizer, batch_size=1, max_length=length + 256)
    if impl == "ropekit":
        from ropekit.lmeval import RopekitLM

        backend = RopekitLM(pretrained=model, max_length=length + 256)
    if impl == "sweep":
        from ropekit.eval.generate import score_and_generate
        from ropekit.tasks import build_trial

        trials = [build_trial(model.tokenizer, task, length, None, i, seed=SEED) for i in range(n)]
    rss_loaded = peak_rss_gb()
    seconds, outputs = [], []
    for i, instance in enumerate(instances):
        start = time.perf_counter()
        if impl == "sweep":
            trial = trials[i]
            _, text = score_and_generate(model, trial.prompt_ids, trial.answer_ids, trial.max_new_tokens)
        else:
            (text,) = backend.generate_until([instance], disable_tqdm=True)
        seconds.append(time.perf_counter() - start)
        outputs.append(text)
    return {
        "impl": impl,
        "length": length,
        "seconds": seconds,
        "outputs": outputs,
        "rss_after_load_gb": rss_loaded,
        "peak_rss_gb": peak_rss_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="niah_single_1", help="a RULER task lm-eval's port has")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--samples", type=int, default=3, help="samples per length (each timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (ropekit's choice here)")
    parser.add_argument("--memory-gb", type=float, default=22.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common = (args.model, args.task)
    if args.child:
        print(json.dumps(child(args.child, *common, args.lengths[0], args.samples, args.threads, args.dtype)))
        return
    from ropekit.models import resolve_dtype

    precision = resolve_dtype(args.dtype)
    results = []
    for length in args.lengths:
        runs = {}
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--child", impl, "--model", args.model, "--task", args.task]
            cmd += ["--lengths", str(length), "--samples", str(args.samples), "--threads", str(args.threads)]
            runs[impl] = run_capped(impl, cmd + ["--dtype", precision.name], args.memory_gb)
        row = {"model": args.model, "task": args.task, "length": length, "dtype": precision.name}
        for impl, r in runs.items():
            if r["status"] != "ok":
                row[impl] = {"status": r["status"], "detail": r["detail"]}
                continue
            row[impl] = {
                "status": "ok",
                "samples_per_s": len(r["seconds"]) / sum(r["seconds"]),
                "seconds_median": statistics.median(r["seconds"]),
                "peak_rss_gb": r["peak_rss_gb"],
                "outputs": r["outputs"],
            }
        if all(r["status"] == "ok" for r in runs.values()):
            row["hf_over_ropekit_s"] = sum(runs["hf"]["seconds"]) / sum(runs["ropekit"]["seconds"])
            row["same_text"] = runs["ropekit"]["outputs"] == runs["hf"]["outputs"]
            row["sweep_same_text"] = runs["sweep"]["outputs"] == runs["ropekit"]["outputs"]
        results.append(row)
        print(
            json.dumps(
                {k: v for k, v in row.items() if k not in IMPLS}
                | {impl: {k: v for k, v in row[impl].items() if k != "outputs"} for impl in IMPLS}
            ),
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = run_meta(args.threads, dtype=precision.name, dtype_reason=precision.reason)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
