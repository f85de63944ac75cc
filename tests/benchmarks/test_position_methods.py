"""benchmarks/position_methods.py: a short run writes a row per method, each from its own process,
with its speed and memory against the default rope's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_run_writes_every_method_against_default(tmp_path):
    out = tmp_path / "methods.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "position_methods.py"), "--lengths", "1200"]
    argv += ["--methods", "default", "rerope", "--no-transformers", "--repeats", "1", "--threads", "1"]
    run = subprocess.run([*argv, "--dtype", "float32", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"default", "rerope"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["default"]["speed_vs_default"] == 1.0
    assert rows["rerope"]["tokens_per_s_median"] > 0 and rows["rerope"]["peak_rss_gb"] > 0
    # 1200 tokens reach past ReRoPE's 1024-token window: its far region ran, so its loss differs
    assert math.isfinite(rows["rerope"]["mean_nll"]) and rows["rerope"]["mean_nll"] != rows["default"]["mean_nll"]
