"""The record of one benchmarks/gpu_suite.sh run: OUT/suite.json (device, versions, command, how each step
ended) and OUT/suite.md (the steps and the Markdown rows of BENCHMARKS.md, by benchmarks/to_markdown.py).

    python benchmarks/suite_report.py benchmarks/results/gpu_suite --command "benchmarks/gpu_suite.sh"
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata
from pathlib import Path

from to_markdown import gpu_table

TIMED_OUT = {124, 137}  # timeout(1)'s status when the limit was reached, and when it had to kill


def steps(out: Path) -> list[dict]:
    """Each step of OUT/steps.tsv: name, status, seconds, command, the log's last line, its JSON if it wrote one."""
    found = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds, command = line.split("\t", 3)
        rc = int(rc)
        log = out / f"{name}.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        status = "ok" if rc == 0 else "timed out" if rc in TIMED_OUT else f"failed (exit {rc})"
        step = {"name": name, "status": status, "seconds": int(seconds), "command": command}
        step["last_line"] = lines[-1] if lines else ""
        if (out / f"{name}.json").exists():
            step["results"] = f"{name}.json"
        found.append(step)
    return found


def device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the suite's output folder")
    parser.add_argument("--command", default="benchmarks/gpu_suite.sh", help="the suite's command line")
    args = parser.parse_args(argv)
    if not (args.out / "steps.tsv").exists():
        parser.error(f"{args.out} holds no steps.tsv: not the output of benchmarks/gpu_suite.sh")
    record = {
        "command": args.command,
        "machine": platform.node(),
        "device": device(),
        "versions": {name: metadata.version(name) for name in ("torch", "transformers")},
        "steps": steps(args.out),
    }
    (args.out / "suite.json").write_text(json.dumps(record, indent=1))
    lines = [
        f"`{record['command']}` on {record['device']}, torch {record['versions']['torch']}, "
        f"transformers {record['versions']['transformers']}",
        "",
        "| step | status | seconds | last line of its log |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['last_line'][:120]} |" for s in record["steps"]]
    for s in record["steps"]:
        if "results" in s:
            lines += ["", f"### {s['name']}", "", gpu_table(json.loads((args.out / s["results"]).read_text()))]
    (args.out / "suite.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
