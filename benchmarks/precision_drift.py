"""How far bf16 moves a sweep's numbers: the mean NLL per token of the default sweep's own documents
(its first n_docs with the longest length's ids, first-L tokens) in float32 and in bfloat16, per rope and
length, with the paired difference. The default sweep runs ``dtype = "auto"`` (bf16 where this
machine runs it clearly faster) only because this drift is far inside the intervals that sweep reports.

    .venv/bin/python benchmarks/precision_drift.py --ropes yarn:2 --lengths 4096 16384

Writes benchmarks/results/precision_drift.json (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from pathlib import Path

import torch

import ropekit
from ropekit.data import load_corpus
from ropekit.eval.perplexity import document_ids
from ropekit.sweep import default_spec
from ropekit.sweep.perplexity import choose_documents


def main() -> None:
    spec = default_spec()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ropes", nargs="+", default=["yarn:2"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384])
    parser.add_argument("--n-docs", type=int, default=spec.n_docs)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "precision_drift.json")
    args = parser.parse_args()
    corpus = load_corpus(spec.corpus.path)
    rows = []
    for rope in args.ropes:
        nll = {}
        for dtype in ("float32", "bfloat16"):
            model = ropekit.load_model(spec.models[0], rope_scaling=rope, dtype=dtype)
            tokens = {d.name: document_ids(model.tokenizer, d.text, spec.mode) for d in corpus.documents}
            chosen = choose_documents(tokens, args.lengths, spec.mode, args.n_docs)
            for length in args.lengths:
                for doc in chosen[length]:
                    ids = torch.as_tensor(tokens[doc][:length])
                    nll[dtype, length, doc] = ropekit.token_nll(model, ids).double().mean().item()
        for (dtype, length, doc), value in nll.items():
            if dtype == "float32":
                drift = nll["bfloat16", length, doc] - value
                rows.append({"rope": rope, "length": length, "doc": doc, "float32": value, "bf16_minus_fp32": drift})
                print(f"{rope:10s} {length:6d} {doc:32s} fp32 {value:.5f}  bf16-fp32 {drift:+.5f} nats/token")
    worst = max(abs(r["bf16_minus_fp32"]) for r in rows)
    print(f"largest |bf16 - fp32|: {worst:.5f} nats per token, a perplexity ratio of {math.exp(worst):.5f}")
    meta = {
        "command": shlex.join([".venv/bin/python", "benchmarks/precision_drift.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_bf16": ropekit.models.resolve_dtype("auto", "cpu").reason,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "largest": worst}, indent=1) + "\n")


if __name__ == "__main__":
    main()
