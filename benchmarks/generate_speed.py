"""Greedy decoding tokens/s of ``greedy_generate`` for source trees side by side: the same code before
and after a change (issue 27: rope tables sliced by position, KV buffers allocated once).

A run is one prompt (the first L tokens of Hamlet) and N new tokens in a fresh process, whose
``PYTHONPATH`` starts with the tree measured (the process checks which ropekit it imported). A forward
hook times each forward: the prefill is the first forward, from the call; a decoding step runs from one
forward's end to the next's (the LM head and argmax of the token just produced, then the forward that
reads it), so the N - 1 steps after the prefill give the tokens/s. Trees alternate within a repeat;
each row keeps the best decoding of the repeats, the prefill of that run, and whether every run
produced the same tokens.

    git worktree add /tmp/before e36c123
    .venv/bin/python benchmarks/generate_speed.py --trees before=/tmp/before after=. --lengths 4096 16384 \
        --new 32 --repeats 3 --dtype float32 --out benchmarks/results/generate_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from model_nll import peak_rss_gb, run_capped, run_meta, tokens  # noqa: E402


def child(model_name: str, ids_file: str, new: int, threads: int, dtype: str) -> dict:
    import torch

    import ropekit
    from ropekit.eval.generate import greedy_generate

    torch.set_num_threads(threads)
    ids = torch.load(ids_file)
    model = ropekit.load_model(model_name, dtype=dtype)
    ends: list[float] = []
    model.register_forward_hook(lambda *_: ends.append(time.perf_counter()))
    start = time.perf_counter()
    out = greedy_generate(model, ids, max_new_tokens=new)
    decoding = ends[new - 1] - ends[0]  # steps 1 .. new - 1 (the code before this change read one more token)
    return {
        "ropekit": str(Path(ropekit.__file__).parent.parent.resolve()),
        "prefill_s": ends[0] - start,
        "decode_s": decoding,
        "decode_tokens_per_s": (new - 1) / decoding,
        "forwards": len(ends),
        "tokens": out,
        "peak_rss_gb": peak_rss_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[], help="NAME=PATH of each source tree, the baseline first")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--new", type=int, default=32, help="tokens generated after the prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--memory-gb", type=float, default=22.0, help="address-space cap per run")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="print the table of a results file written by --out, and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ids, args.new, args.threads, args.dtype)))
        return
    if args.markdown:
        data = json.loads(args.markdown.read_text())
        print(markdown(data["results"], list(data["meta"]["trees"])))
        return
    if not args.trees:
        parser.error("--trees NAME=PATH ... is required")
    import torch

    trees = {name: str(Path(path).resolve()) for name, path in (tree.split("=", 1) for tree in args.trees)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            all_ids = tokens(model, max(args.lengths))
            for length in args.lengths:
                ids_file = f"{tmp}/{model}-{length}.pt"
                torch.save(torch.tensor(all_ids[:length]), ids_file)
                runs: dict[str, list[dict]] = {name: [] for name in trees}
                for _ in range(args.repeats):
                    for name, path in trees.items():
                        cmd = ["env", f"PYTHONPATH={path}", sys.executable, __file__, "--child", model]
                        cmd += ["--ids", ids_file, "--new", str(args.new), "--threads", str(args.threads)]
                        run = run_capped(name, cmd + ["--dtype", args.dtype], args.memory_gb)
                        if run["status"] == "ok" and run["ropekit"] != path:
                            raise SystemExit(f"the {name} run imported ropekit from {run['ropekit']}, not {path}")
                        runs[name].append(run)
                results.append(summarise(model, length, args, runs))
                print(json.dumps(results[-1]), flush=True)
    meta = run_meta(args.threads, dtype=args.dtype, new_tokens=args.new, trees=trees)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown(results, list(trees)))


def summarise(model: str, length: int, args: argparse.Namespace, runs: dict[str, list[dict]]) -> dict:
    row = {"model": model, "length": length, "dtype": args.dtype, "new": args.new, "repeats": args.repeats}
    outputs = set()
    for name, tree_runs in runs.items():
        ok = [r for r in tree_runs if r["status"] == "ok"]
        if not ok:
            row[name] = {"status": tree_runs[0]["status"], "detail": tree_runs[0]["detail"]}
            continue
        best = max(ok, key=lambda r: r["decode_tokens_per_s"])
        row[name] = {
            "status": "ok",
            "decode_tokens_per_s": best["decode_tokens_per_s"],
            "prefill_s": best["prefill_s"],
            "decode_tokens_per_s_all": [r["decode_tokens_per_s"] for r in ok],
            "prefill_s_all": [r["prefill_s"] for r in ok],
            "forwards": best["forwards"],
            "peak_rss_gb": max(r["peak_rss_gb"] for r in ok),
        }
        outputs |= {tuple(r["tokens"]) for r in ok}
    first, last = list(runs)[0], list(runs)[-1]
    if row[first]["status"] == row[last]["status"] == "ok":
        row["ratio"] = row[last]["decode_tokens_per_s"] / row[first]["decode_tokens_per_s"]
    row["same_tokens"] = len(outputs) == 1
    return row


def markdown(results: list[dict], trees: list[str]) -> str:
    """Best decoding tokens/s of each tree (the range over the repeats), their ratio, every prefill's range."""
    first, last = trees[0], trees[-1]
    lines = [
        f"| model | context | {first} tok/s (range) | {last} tok/s (range) | ratio | prefill s {first} / {last} "
        f"| peak RSS {first} / {last} | same tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def spread(values: list[float], digits: int) -> str:
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

    for row in results:
        a, b = row[first], row[last]
        if a["status"] != "ok" or b["status"] != "ok":
            lines.append(f"| {row['model']} | {row['length']} | {a['status']} | {b['status']} | | | | |")
            continue
        speeds = [f"{r['decode_tokens_per_s']:.2f} ({spread(r['decode_tokens_per_s_all'], 2)})" for r in (a, b)]
        lines.append(
            f"| {row['model']} | {row['length']} | {speeds[0]} | {speeds[1]} | {row['ratio']:.2f}x "
            f"| {spread(a['prefill_s_all'], 1)} / {spread(b['prefill_s_all'], 1)} "
            f"| {a['peak_rss_gb']:.2f} / {b['peak_rss_gb']:.2f} GB | {'yes' if row['same_tokens'] else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
