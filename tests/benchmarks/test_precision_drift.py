"""benchmarks/precision_drift.py on short lengths: it scores the default sweep's documents in both
dtypes, and bf16 stays within its stated tolerance of fp32."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_precision_drift_scores_the_default_documents_in_both_dtypes(tmp_path):
    from ropekit.models import CheckpointError, embedded_path

    try:
        embedded_path("smollm2-135m")
    except CheckpointError as err:
        pytest.skip(str(err))
    out = tmp_path / "drift.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "precision_drift.py"), "--lengths", "256", "--out", str(out)]
    subprocess.run([*argv, "--n-docs", "2", "--ropes", "yarn:2", "default"], check=True, cwd=ROOT)
    data = json.loads(out.read_text())
    assert [r["rope"] for r in data["rows"]] == ["yarn:2"] * 2 + ["default"] * 2
    assert len({r["doc"] for r in data["rows"]}) == 2 and {r["length"] for r in data["rows"]} == {256}
    # bf16 weights and matmuls move a mean NLL of ~3.5 nats by a few thousandths at most (test_parity: 0.1 %)
    assert all(2 < r["float32"] < 6 and abs(r["bf16_minus_fp32"]) < 0.01 for r in data["rows"])
    assert data["largest"] == max(abs(r["bf16_minus_fp32"]) for r in data["rows"])
    assert data["meta"]["command"].endswith("--ropes yarn:2 default")
