"""Render benchmark result files as the Markdown tables of BENCHMARKS.md: the CPU model files
(benchmarks/model_nll.py) and the GPU ones (benchmarks/gpu_models.py, benchmarks/gpu_suite.sh).

.venv/bin/python benchmarks/to_markdown.py benchmarks/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    if "shape" in data["meta"]:
        return gpu_table(data)
    meta, rows = data["meta"], data["results"]
    # Older files carry one dtype in meta and one ceiling; newer ones a ceiling per dtype and the dtype per row.
    peaks = meta.get("matmul_gflops", {})
    if not isinstance(peaks, dict):
        peaks = {meta.get("dtype", "float32"): peaks}
    by_case: dict[tuple, dict] = {}
    for row in rows:
        dtype = row.get("dtype", meta.get("dtype", "float32"))
        by_case.setdefault((row["model"], row["length"], dtype), {})[row["impl"]] = row
    ceilings = ", ".join(f"{name} matmul peak {gflops:.0f} GFLOP/s" for name, gflops in peaks.items())
    lines = [
        f"`{meta['command']}`  ",
        f"{meta['machine']}, {meta['cpus']} threads, torch {meta['torch']}, transformers {meta['transformers']}, "
        f"ropekit {meta['ropekit']}" + (f"; {ceilings}" if ceilings else ""),
        "",
        "| model | tokens | dtype | ropekit tok/s (min-max) | transformers tok/s (min-max) | speed ratio "
        "| ropekit peak RSS | transformers peak RSS | RSS ratio | GFLOP/token | ropekit GFLOP/s (of peak) "
        "| mean NLL ropekit / transformers |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (model, length, dtype), impls in by_case.items():
        ours, base = impls.get("ropekit", {}), impls.get("transformers", {})

        def speed(r):
            if r.get("status") != "ok":
                return r.get("status", "-")
            return f"{r['tokens_per_s_median']:.0f} ({r['tokens_per_s_min']:.0f}-{r['tokens_per_s_max']:.0f})"

        def rss(r):
            return f"{r['peak_rss_gb']:.2f} GB" if r.get("status") == "ok" else r.get("status", "-")

        both = ours.get("status") == "ok" and base.get("status") == "ok"
        ratio = f"{ours['tokens_per_s_median'] / base['tokens_per_s_median']:.2f}x" if both else "-"
        rss_ratio = f"{ours['peak_rss_gb'] / base['peak_rss_gb']:.2f}x" if both else "-"
        nll = " / ".join(f"{r['mean_nll']:.4f}" if r.get("status") == "ok" else "-" for r in (ours, base))
        flops = f"{ours['flops_per_token'] / 1e9:.2f}" if "flops_per_token" in ours else "-"
        use = f"{ours['gflops']:.0f} ({ours['fraction_of_matmul_peak']:.0%})" if "gflops" in ours else "-"
        lines.append(
            f"| {model} | {length} | {dtype} | {speed(ours)} | {speed(base)} | {ratio} | {rss(ours)} | {rss(base)} "
            f"| {rss_ratio} | {flops} | {use} | {nll} |"
        )
    return "\n".join(lines)


def gpu_table(data: dict) -> str:
    """A benchmarks/gpu_models.py result: ropekit against transformers (tokens/s, memory, MFU, NLL difference),
    or, measured with ``--ropes``, each rope against the first."""
    meta, rows = data["meta"], data["results"]
    labels = meta.get("labels", ["ropekit", "transformers"])
    lines = [
        f"`{meta['command']}`  ",
        f"{meta['device']}, {meta['dtype']}, torch {meta['torch']}, transformers {meta['transformers']}, "
        f"ropekit {meta['ropekit']}",
        "",
    ]

    def cell(summary: dict, key: str, spec: str) -> str:
        if summary.get("status", "ok") != "ok":
            return summary["status"]
        return "-" if summary.get(key) is None else format(summary[key], spec)

    if labels[0] != "ropekit":  # --ropes: one line per rope and length
        lines += [
            f"| shape | tokens | rope | tok/s | tok/s vs {labels[0].partition(' ')[2]} | peak GB | MFU | mean NLL |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            for label in labels:
                r = row[label]
                cells = [cell(r, "tokens_per_s_median", ",.0f"), cell(r, "vs_first", ".2f")]
                cells += [cell(r, "peak_memory_gb", ".2f"), cell(r, "mfu", ".1%"), cell(r, "mean_nll", ".4f")]
                rope = label.partition(" ")[2]
                lines.append(f"| {meta['shape']} | {row['length']} | {rope} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    lines += [
        "| shape | tokens | ropekit tok/s | transformers tok/s | tok/s ratio | ropekit GB | transformers GB "
        "| memory ratio | ropekit MFU | transformers MFU | abs NLL diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    missing = {"status": "-"}
    for row in rows:
        ours, base = row.get("ropekit", missing), row.get("transformers", missing)
        cells = [
            cell(ours, "tokens_per_s_median", ",.0f"),
            cell(base, "tokens_per_s_median", ",.0f"),
            cell(row, "tokens_per_s_ratio", ".2f"),
            cell(ours, "peak_memory_gb", ".2f"),
            cell(base, "peak_memory_gb", ".2f"),
            cell(row, "memory_ratio", ".2f"),
            cell(ours, "mfu", ".1%"),
            cell(base, "mfu", ".1%"),
            cell(row, "nll_abs_diff", ".2e"),
        ]
        lines.append(f"| {meta['shape']} | {row['length']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
