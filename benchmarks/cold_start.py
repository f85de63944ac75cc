"""Cold start: wall time of a `ropekit sweep` process whose only work is one 16-token forward, so
the time is start-up (imports, spec and corpus, model load, tokenizer, token cache) to the first
forward. The first run uses an empty cache directory (GGUF parsed and dequantised, tokenizer
converted, corpus tokenised, all cached); the next runs find the cache warm.

    .venv/bin/python benchmarks/cold_start.py --model smollm2-135m --repeats 3 --out benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep_seconds(model: str, cache: str, out: str) -> float:
    cmd = [sys.executable, "-m", "ropekit.cli", "sweep", "--model", model, "--lengths", "16", "--n-docs", "1",
           "--out", out, "--quiet", "--no-report"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "ROPEKIT_CACHE": cache}, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for model in args.model:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
            if model == "gemma3-270m":  # its GGUF is assembled into the cache from four packages: not timed
                sweep_seconds(model, cache, f"{runs}/assemble")
                for folder in Path(cache).iterdir():
                    if folder.name.startswith("gguf-") or folder.name == "tokens":
                        subprocess.run(["rm", "-rf", str(folder)], check=True)
            cold = sweep_seconds(model, cache, f"{runs}/cold")
            warm = [sweep_seconds(model, cache, f"{runs}/warm{i}") for i in range(args.repeats)]
        row = {"model": model, "cold_s": cold, "warm_median_s": statistics.median(warm), "warm_s": warm}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        meta = {"machine": platform.machine(), "python": platform.python_version(), "command": " ".join(sys.argv)}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
