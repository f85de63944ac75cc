"""The default sweep's grid run naively: one transformers forward(labels=...) per rope, per length,
per document, on the same documents, next to ropekit's sweep of the same spec, in one run.

    .venv/bin/python benchmarks/sweep_naive.py --out benchmarks/results/sweep_naive.json

ropekit's side runs ``ropekit sweep`` (the embedded default spec) into a fresh directory; the
naive side loads the same GGUF into transformers once and, for each rope, builds the model with
that rope_parameters (a fresh rotary module per forward, so transformers' cached dynamic update
cannot carry state from one length to the next). Both sides' perplexities are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def naive(spec, tokens: dict, hf) -> tuple[float, dict]:
    from transformers import LlamaForCausalLM

    from ropekit.rope import model_ropes

    results, started = {}, time.perf_counter()
    for rope_name, rope in spec.ropes.items():
        # The rope ropekit resolves for this model (a Llama: one rope for every layer), as transformers' dict.
        scaling = model_ropes(hf.config.to_dict(), rope)["full_attention"].to_dict()
        config = hf.config.__class__.from_dict({**hf.config.to_dict(), "rope_parameters": scaling})
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        model.load_state_dict(hf.state_dict(), assign=True)
        model.eval()
        for length in spec.lengths:
            docs = [d for d, ids in tokens.items() if len(ids) >= length][: spec.n_docs]
            total, count = 0.0, 0
            for doc in docs:
                model.model.rotary_emb = type(hf.model.rotary_emb)(config)  # stateless, like ropekit
                ids = torch.as_tensor(tokens[doc][:length], dtype=torch.long)[None]
                with torch.inference_mode():
                    loss = float(model(ids, labels=ids).loss)
                total, count = total + loss * (length - 1), count + length - 1
            results[(rope_name, length)] = math.exp(total / count)
            print(f"naive {rope_name} {length}: ppl {results[rope_name, length]:.4f}", flush=True)
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd
    from transformers import AutoModelForCausalLM

    import ropekit
    from ropekit.data import load_corpus, tokenize
    from ropekit.models import embedded_path
    from ropekit.sweep import default_spec

    spec = default_spec()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ropekit.cli", "sweep", "--quiet", "--out", tmp], check=True, cwd=ROOT)
        ropekit_seconds = time.perf_counter() - started
        ours = pd.read_csv(Path(tmp) / "results.csv")
    path = embedded_path(spec.models[0])
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokens = tokenize(load_corpus(spec.corpus.source), ropekit.load_model(spec.models[0]).tokenizer)
    naive_seconds, theirs = naive(spec, tokens, hf)
    rows = [
        {
            "rope": r.rope,
            "length": int(r.length),
            "ropekit_ppl": float(r.ppl),
            "naive_ppl": theirs[r.rope, int(r.length)],
        }
        for r in ours.itertuples()
    ]
    worst = max(abs(r["ropekit_ppl"] / r["naive_ppl"] - 1) for r in rows)
    summary = {
        "ropekit_seconds": round(ropekit_seconds, 1),
        "naive_seconds": round(naive_seconds, 1),
        "speedup": round(naive_seconds / ropekit_seconds, 2),
        "max_relative_ppl_difference": worst,
        "cells": len(rows),
    }
    print(json.dumps(summary))
    meta = {
        "machine": platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "ropekit": ropekit.__version__,
        "command": " ".join(sys.argv),
        "spec": spec.canonical(),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "summary": summary, "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
