"""What many workers on one results directory cost beyond the sweep itself (issue 14): claims per
second with W workers competing for U units, and the merge of shards holding 10^5 cells.

- claims: W processes claim the U units of one DIR (``Claims.claim``: the directory lock, the
  filesystem's clock, a scan past finished units, an exclusive create), mark each finished and
  release it, until none is left; claims per second = U over the wall time of the slowest worker.
  Each unit is claimed exactly once (checked).
- merge: N result rows and N document rows (the columns and widths of a real sweep's: a document of
  16384 tokens has 256 block sums) spread over S shards of live workers, merged into empty DIR files
  by the holder, merged again after every shard grew by 1 %, merged by a fresh process (every line
  read, nothing new), read whole as a worker opening DIR reads it, and refreshed after the 1 %.

    .venv/bin/python benchmarks/scheduling.py --units 2000 --workers 1 2 4 --cells 100000 --shards 32 \\
        --out benchmarks/results/scheduling.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

from ropekit.cache import atomic_write, csv_text
from ropekit.sweep.claims import Claims, Unit
from ropekit.sweep.spec import default_spec
from ropekit.sweep.store import DOC_COLUMNS, RESULT_COLUMNS, StoredResults


def units(n: int) -> list[Unit]:
    return [Unit("model", [("native", f"rope{i}")], [f"cell{i:06d}"]) for i in range(n)]


def claimer(out: str, name: str, n: int, start, queue) -> None:
    claims, todo, mine = Claims(Path(out), name, lease=600), units(n), []
    finished = Path(out) / "finished"  # each unit's cells stored: what a worker's refresh reads from DIR
    start.wait()
    began = time.perf_counter()
    done: set[str] = set()
    while (unit := claims.claim(todo, lambda u: u.id in done)) is not None:
        done.update(os.listdir(finished))  # as a worker refreshes its view once it holds the claim
        if unit.id not in done:  # (another may have finished it between the two)
            mine.append(unit.id)
            (finished / unit.id).touch()
        claims.release(unit)
    queue.put((name, mine, time.perf_counter() - began))


def bench_claims(n_units: int, workers: int) -> dict:
    """Every worker claims, "runs" (marks the unit finished) and releases units until none is free;
    each unit must be claimed exactly once."""
    with tempfile.TemporaryDirectory() as out:
        (Path(out) / "finished").mkdir()
        context = multiprocessing.get_context("fork")
        start, queue = context.Event(), context.Queue()
        procs = [context.Process(target=claimer, args=(out, f"w{i}", n_units, start, queue)) for i in range(workers)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        start.set()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
    claimed = [u for _, mine, _ in results for u in mine]
    assert len(claimed) == len(set(claimed)) == n_units, "a unit claimed twice, or not at all"
    slowest = max(seconds for *_, seconds in results)
    return {
        "units": n_units,
        "workers": workers,
        "seconds": slowest,
        "claims_per_s": len(claimed) / slowest,
    }


def rows(n: int, shard: int) -> tuple[list[dict], list[dict]]:
    results, docs = [], []
    for i in range(n):
        cell = f"{shard:03d}{i:013d}"
        common = {"cell": cell, "model": "smollm2-135m", "rope": "yarn", "layer_mix": "native", "length": 16384}
        results.append(
            {
                **common,
                "task": "perplexity",
                "n_docs": 1,
                "n_tokens": 16383,
                "nll": "3.123456",
                "ppl": "22.7184",
                "ppl_lo": "21.9001",
                "ppl_hi": "23.5993",
                "interval": "bootstrap-blocks64-2000",
                "bits_per_byte": "1.234567",
                "word_ppl": "98.7654",
                "status": "ok",
                "detail": "",
            }
        )
        blocks = " ".join(repr(200.0 + k / 7) for k in range(256))
        docs.append(
            {
                **common,
                "doc": "hamlet",
                "n_tokens": 16383,
                "nll_sum": repr(51234.5678901),
                "n_bytes": 70000,
                "n_words": 12000,
                "blocks": blocks,
            }
        )
    return results, docs


def lines(appended: dict[str, list]) -> int:
    return sum(len(rows) for rows in appended.values())


def bench_merge(cells: int, n_shards: int) -> dict:
    """Shards of live workers (their locks held here, so none is removed): the holder's first merge
    (everything), its next after each shard grew by 1 % (``Merger`` reads only what is new), a fresh
    process's merge of the same (every shard line read, nothing new to append), a worker's full read of
    DIR (``StoredResults.read``) and its refresh after the 1 % (``Tails``)."""
    import fcntl

    from ropekit.cache import append_lines
    from ropekit.sweep.store import FILES, Merger, Tails

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        locks = []
        for s in range(n_shards):
            shard = out / "shards" / f"worker{s}"
            shard.mkdir(parents=True)
            results, docs = rows(cells // n_shards, s)
            atomic_write(shard / "results.csv", csv_text(RESULT_COLUMNS, results))
            atomic_write(shard / "documents.csv", csv_text(DOC_COLUMNS, docs))
            locks.append(os.open(shard / ".lock", os.O_RDWR | os.O_CREAT))
            fcntl.flock(locks[-1], fcntl.LOCK_EX)
        size = sum(p.stat().st_size for p in out.rglob("*.csv"))
        holder, tails = Merger(out), Tails(out)
        timings = {}
        began = time.perf_counter()
        appended = lines(holder.merge())
        timings["merge_first_s"] = time.perf_counter() - began
        for name in FILES:  # a worker that has read everything so far
            tails.new_rows(name)
        more = max(1, cells // n_shards // 100)
        for s in range(n_shards):
            results, docs = rows(more, 500 + s)
            append_lines(out / "shards" / f"worker{s}" / "results.csv", RESULT_COLUMNS, *results)
            append_lines(out / "shards" / f"worker{s}" / "documents.csv", DOC_COLUMNS, *docs)
        began = time.perf_counter()
        added = lines(holder.merge())
        timings["merge_next_1pct_s"] = time.perf_counter() - began
        began = time.perf_counter()
        again = lines(Merger(out).merge())
        timings["merge_fresh_process_s"] = time.perf_counter() - began
        began = time.perf_counter()
        stored = StoredResults.read(out, default_spec(), force=True)
        timings["read_all_s"] = time.perf_counter() - began
        began = time.perf_counter()
        fresh = sum(len(tails.new_rows(name)) for name in FILES)
        timings["refresh_1pct_s"] = time.perf_counter() - began
        for fd in locks:
            os.close(fd)
    per_shard = cells // n_shards
    assert appended == 2 * per_shard * n_shards and added == 2 * more * n_shards and again == 0
    assert len(stored.rows) == (per_shard + more) * n_shards and fresh == 2 * added  # the shards' and DIR's
    return {"cells": per_shard * n_shards, "shards": n_shards, "megabytes": size / 1e6, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    claims = []
    for workers in args.workers:
        claims.append(bench_claims(args.units, workers))
        print(json.dumps(claims[-1]), flush=True)
    merge = bench_merge(args.cells, args.shards)
    print(json.dumps(merge), flush=True)
    if args.out:
        meta = {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cores": multiprocessing.cpu_count(),
        }
        args.out.write_text(json.dumps({"meta": meta, "claims": claims, "merge": merge}, indent=1) + "\n")


if __name__ == "__main__":
    main()
