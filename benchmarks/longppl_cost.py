"""LongPPL's cost against two plain perplexity passes (issue 30): one document of L tokens scored by the
``longppl`` task (the evaluated model's pass, the evaluator's whole pass and its windows; the evaluator the
model itself) against ``token_nll`` run twice on the same L tokens, in one process, alternating, the best of
the repeats each; with the tokens each side reads and the cost model's predicted ratio (``passes``).

    .venv/bin/python benchmarks/longppl_cost.py --model smollm2-135m --lengths 4096 8192 --repeats 2 \
        --out benchmarks/results/longppl_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from model_nll import run_meta  # noqa: E402


def measure(model_name: str, lengths: list[int], repeats: int, dtype: str, threads: int) -> list[dict]:
    import torch

    import ropekit
    from ropekit.data import shakespeare
    from ropekit.eval import token_nll
    from ropekit.sweep.cost import NOMINAL_RATES, pass_seconds
    from ropekit.tasks import get_task, longppl

    torch.set_num_threads(threads)
    model = ropekit.load_model(model_name, dtype=dtype)
    tokenizer = model.tokenizer
    documents = [tokenizer.encode(d.text, add_special_tokens=False) for d in shakespeare().documents]
    settings = get_task("longppl").table({"trials": 1})
    rows = []
    for length in lengths:
        trial = longppl.build(tokenizer, settings, length, None, 0, documents)
        ids = torch.as_tensor(tokenizer.encode(tokenizer.decode(list(trial.prompt_ids))), dtype=torch.long)[:length]
        plain, scored, numbers = [], [], None
        for _ in range(repeats):
            start = time.perf_counter()
            token_nll(model, ids)
            token_nll(model, ids)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            numbers = longppl.score(model, tokenizer, settings, trial)
            scored.append(time.perf_counter() - start)
        passes = longppl.passes(model.config, settings, length)
        predicted = sum(pass_seconds(model.config, n, NOMINAL_RATES) for n in passes)
        predicted /= 2 * pass_seconds(model.config, length, NOMINAL_RATES)
        rows.append(
            {
                "length": length,
                "two_passes_s": min(plain),
                "longppl_s": min(scored),
                "ratio": min(scored) / min(plain),
                "predicted_ratio": predicted,
                "tokens_read": sum(passes),
                "windows": len(passes) - 2,
                "trunc_len": numbers["trunc_len"],
                "trunc_stride": numbers["trunc_stride"],
                "n_key": numbers["n_key"],
                "longppl": float(torch.tensor(numbers["key_nll_sum"] / max(numbers["n_key"], 1)).exp()),
                "ppl": float(torch.tensor(numbers["nll_sum"] / numbers["n_tokens"]).exp()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = measure(args.model, args.lengths, args.repeats, args.dtype, args.threads)
    result = {"meta": run_meta(args.threads, args=vars(args) | {"out": str(args.out)}), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
