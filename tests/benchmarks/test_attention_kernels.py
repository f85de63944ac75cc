"""benchmarks/attention_kernels.py: its blocked form is causal attention (equal to SDPA in fp32), and a
short run writes a row per kernel with its error against fp32 SDPA."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "attention_kernels.py"


def load_script():
    spec = importlib.util.spec_from_file_location("attention_kernels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blocked_equals_sdpa_in_float32():
    bench = load_script()
    torch.manual_seed(0)
    length = bench.BLOCK * 2 + 37  # a partial last block
    q = torch.randn(1, bench.HEADS, length, bench.HEAD_DIM)
    k, v = (torch.randn(1, bench.KV_HEADS, length, bench.HEAD_DIM) for _ in range(2))
    scale = bench.HEAD_DIM**-0.5
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(bench.blocked(q, k, v, scale), expected, atol=1e-5, rtol=1e-5)


def test_short_run_writes_every_kernel(tmp_path):
    out = tmp_path / "kernels.json"
    argv = [sys.executable, str(SCRIPT), "--lengths", "256", "--repeats", "1", "--threads", "1", "--out", str(out)]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    data = json.loads(out.read_text())
    assert {(r["kernel"], r["dtype"]) for r in data["results"]} == {
        ("sdpa", "float32"),
        ("sdpa", "bfloat16"),
        ("flex", "bfloat16"),
        ("blocked", "bfloat16"),
    }
    for row in data["results"]:
        assert row["max_abs_error"] < (1e-5 if row["dtype"] == "float32" else 0.05), row
    assert set(data["meta"]["matmul_gflops"]) == {"float32", "bfloat16"}
