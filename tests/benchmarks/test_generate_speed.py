"""benchmarks/generate_speed.py: a short run measures each tree in its own process and writes a row with
the decoding speed of both, their prefill and whether they generated the same tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_run_compares_two_trees(tmp_path):
    out = tmp_path / "generate.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "generate_speed.py"), "--trees", f"a={ROOT}", f"b={ROOT}"]
    argv += ["--models", "smollm2-135m", "--lengths", "64", "--new", "4", "--repeats", "1", "--threads", "1"]
    run = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    [row] = json.loads(out.read_text())["results"]
    assert row["a"]["status"] == row["b"]["status"] == "ok" and row["same_tokens"]
    assert row["a"]["forwards"] == 4  # the prefill and 3 steps: the last token is not read
    assert row["a"]["decode_tokens_per_s"] > 0 and row["b"]["prefill_s"] > 0 and row["ratio"] > 0
    assert "| smollm2-135m | 64 |" in run.stdout
