"""Fit the cost model's efficiency constants (ropekit/sweep/cost.py) to measured passes.

A pass of T tokens is predicted as (cost.py's module docstring)

    T * (matmul / (R_matmul * e_matmul) + causal / (R_causal * e_causal) + band / (R_band * e_band)
         + V / R_logits)  +  overhead

which is linear in 1/e_matmul, 1/e_causal, 1/e_band and the overhead. Given passes timed on this
machine (``benchmarks/model_nll.py`` result files: ropekit's ``token_nll`` over one text, the work of
one sweep pass) and this machine's cached rates in their dtype (``machine_rates``), this solves for
the four by least squares on relative error (each pass weighs alike, long or short), and prints the
fitted constants and every pass's prediction against its measurement, before and after.

    .venv/bin/python benchmarks/fit_cost.py benchmarks/results/smollm2_cpu.json benchmarks/results/gemma3_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ropekit.models import model_config, read_model_config
from ropekit.sweep import cost


def passes(paths: list[Path], dtype: str) -> list[dict]:
    """ropekit's timed passes in ``dtype`` from model_nll result files: model, tokens, seconds (median)."""
    out = []
    for path in paths:
        data = json.loads(path.read_text())
        for row in data["results"]:
            if row["impl"] == "ropekit" and row["status"] == "ok" and row.get("dtype", "float32") == dtype:
                seconds = row["length"] / row["tokens_per_s_median"]
                out.append({"model": row["model"], "tokens": row["length"], "seconds": seconds})
    return out


def features(config, tokens: int, rates: cost.Rates) -> tuple[np.ndarray, float]:
    """The pass's seconds at efficiency 1 per term (matmul, causal, band, overhead) and the fixed
    log-softmax seconds."""
    f = cost.token_flops(config, tokens)
    terms = [tokens * f.matmul / rates.matmul, tokens * f.causal / rates.causal, tokens * f.band / rates.band, 1.0]
    return np.array(terms), tokens * config.vocab_size / rates.logits


NAMES = ("MATMUL_EFFICIENCY", "CAUSAL_EFFICIENCY", "BAND_EFFICIENCY", "PASS_OVERHEAD_S")


def coefficient(name: str, value: float) -> float:
    """A constant as the coefficient of its term: 1/efficiency, or the overhead itself."""
    return value if name == "PASS_OVERHEAD_S" else 1 / value


def fit(rows: list[dict], rates: cost.Rates, names: tuple[str, ...]) -> dict[str, float]:
    """Every constant in ``names`` fitted, the others at cost.py's values. A term that is per token
    constant in T on every model (a sliding band past its window, like the matmuls) cannot be told
    from the matmuls by single passes: keep it fixed unless the passes separate it."""
    configs = {m: model_config(read_model_config(m)[1]) for m in {r["model"] for r in rows}}
    x, fixed = zip(*(features(configs[r["model"]], r["tokens"], rates) for r in rows), strict=True)
    x, fixed = np.array(x), np.array(fixed)
    y = np.array([r["seconds"] for r in rows])
    free = [i for i, name in enumerate(NAMES) if name in names]
    held = [i for i in range(4) if i not in free]
    known = np.array([coefficient(NAMES[i], getattr(cost, NAMES[i])) for i in held])
    target = y - fixed - (x[:, held] @ known if held else 0)
    weights = 1 / y  # relative error
    solution, *_ = np.linalg.lstsq(x[:, free] * weights[:, None], target * weights, rcond=None)
    return {NAMES[i]: coefficient(NAMES[i], c) for i, c in zip(free, solution, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="benchmarks/model_nll.py --out files")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fit", nargs="+", choices=NAMES, default=list(NAMES[:2]), help="the constants to fit (the rest: cost.py's)"
    )
    args = parser.parse_args()
    rates = cost.machine_rates(getattr(torch, args.dtype), "cpu", args.threads).rates
    rows = passes(args.results, args.dtype)
    fitted = fit(rows, rates, tuple(args.fit))
    print(json.dumps({k: round(v, 4) for k, v in fitted.items()}))
    print(f"{'model':14s} {'tokens':>7s} {'measured':>9s} {'prior':>9s} {'fitted':>9s}")
    for r in rows:
        config = model_config(read_model_config(r["model"])[1])
        prior = cost.pass_seconds(config, r["tokens"], rates)
        terms, fixed = features(config, r["tokens"], rates)
        coefficients = [coefficient(name, fitted.get(name, getattr(cost, name))) for name in NAMES]
        after = float(terms @ np.array(coefficients)) + fixed
        print(
            f"{r['model']:14s} {r['tokens']:7d} {r['seconds']:8.1f}s {prior:8.1f}s ({prior / r['seconds'] - 1:+.0%}) "
            f"{after:8.1f}s ({after / r['seconds'] - 1:+.0%})"
        )


if __name__ == "__main__":
    main()
