"""What ``dtype = "auto"`` and the dry run measure on this machine, repeated: the bf16 probe
(``ropekit.models.precision.measure_bf16``) and the cost model's rates in rounds
(``ropekit.sweep.cost.stable_rates``) in each dtype, each with the cores other processes kept busy
meanwhile (above ``BUSY_CORES`` ropekit would not cache it). Nothing is read from or written to the
rates cache.

    .venv/bin/python benchmarks/dtype_probe.py --probes 5 --rates 2 --out benchmarks/results/dtype_probe.json
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from ropekit.models import precision
from ropekit.sweep import cost


def busy_while(run):
    """``run()`` and the cores other processes kept busy meanwhile."""
    before = precision.cpu_sample()
    result = run()
    return result, round(precision.others_busy(before, precision.cpu_sample()), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--rates", type=int, default=2, help="rate measurements per dtype")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "cpu": precision.cpu_model(),
        "machine": platform.machine(),
        "cores": precision.cores(),
        "threads": args.threads,
        "torch": torch.__version__,
        "probes": [],
        "rates": [],
    }
    for _ in range(args.probes):
        probe, busy = busy_while(precision.measure_bf16)
        row = {**asdict(probe), "speedup": round(probe.speedup, 3), "busy": busy}
        result["probes"].append(row)
        print(json.dumps(row), flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        for _ in range(args.rates):
            measured, busy = busy_while(lambda d=dtype: cost.stable_rates(cost.measure_rates, d, "cpu", args.threads))
            row = {
                "dtype": str(dtype).removeprefix("torch."),
                "stable": measured.stable,
                "busy": busy,
                "rounds": [asdict(r) for r in measured.rounds],
            }
            result["rates"].append(row)
            matmuls = [round(r.matmul / 1e9) for r in measured.rounds]
            print(json.dumps({**row, "rounds": f"matmul GFLOP/s {matmuls}"}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
