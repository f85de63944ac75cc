"""An installed distribution for plugin tests: a module and its dist-info naming one entry point, in a
folder that a subprocess puts on its PYTHONPATH (as pip would install it into site-packages); and a sweep
run in such a process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_plugin(site: Path, module: str, source: str, group: str, name: str, record: str = "RECORD") -> None:
    """``site/module.py`` holding ``source``, and ``module``'s dist-info naming ``module:record`` as the
    entry point ``name`` of ``group``."""
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:{record}\n")


def with_plugins(site: Path) -> dict[str, str]:
    """The environment of a process that has the distributions in ``site`` installed, and ropekit."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def swept_ppl(site: Path, model: Path, corpus: Path, rope: str, out: Path) -> dict[int, float]:
    """``ropekit sweep`` of ``model`` on ``corpus`` at 64 and 256 tokens (2 documents) under ``rope``, in a process
    with ``site``'s plugins: its perplexity by length."""
    sweep = subprocess.run(
        [sys.executable, "-m", "ropekit.cli", "sweep", "--model", str(model), "--corpus", str(corpus)]
        + ["--lengths", "64,256", "--rope", rope, "--n-docs", "2", "--out", str(out), "--quiet", "--no-report"],
        env=with_plugins(site),
        capture_output=True,
        text=True,
    )
    assert sweep.returncode == 0, sweep.stderr
    with (out / "results.csv").open() as f:
        return {int(r["length"]): float(r["ppl"]) for r in csv.DictReader(f)}
