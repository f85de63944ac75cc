"""benchmarks/gpu_models.py on the CPU: tiny shapes, tiny lengths, fp32."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_models.py"


def load_script():
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))  # as when it runs as a script: its sibling flops.py
    spec = importlib.util.spec_from_file_location("gpu_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_flops():
    load_script()
    import flops

    return flops


def test_flops_llama_3_2_1b_at_8192():
    gpu_models = load_script()
    hidden, heads, kv_heads, head_dim, inter, layers, vocab = 2048, 32, 8, 64, 8192, 16, 128256
    per_layer = (
        hidden * heads * head_dim  # q_proj
        + 2 * hidden * kv_heads * head_dim  # k_proj, v_proj
        + heads * head_dim * hidden  # o_proj
        + 3 * hidden * inter  # gate, up, down
    )
    assert per_layer == 60_817_408
    matmul_params = layers * per_layer + hidden * vocab  # + LM head (tied, still a matmul)
    attention = layers * 2 * 2 * heads * head_dim * (8192 + 1) / 2  # QK^T and AV over (T+1)/2 keys on average
    expected = 2 * matmul_params + attention
    assert expected == 3_008_430_080
    assert load_flops().flops_per_token(gpu_models.make_config("llama-3.2-1b"), 8192) == expected


def brute_force_flops(shape: dict, length: int) -> float:
    """FLOPs/token from the shape numbers, averaging the keys each position sees one by one."""
    h, nh, nkv, hd = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]
    matmul = shape["num_hidden_layers"] * (2 * h * nh * hd + 2 * h * nkv * hd + 3 * h * shape["intermediate_size"])
    matmul += h * shape["vocab_size"]
    attention = 0.0
    for layer_type in shape.get("layer_types") or ["full_attention"] * shape["num_hidden_layers"]:
        window = shape["sliding_window"] if layer_type == "sliding_attention" else length
        keys = [min(position + 1, window) for position in range(length)]
        attention += 4 * nh * hd * sum(keys) / length
    return 2 * matmul + attention


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gemma"])
def test_tiny_shape_on_cpu(shape, tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--shape", shape, "--lengths", "64", "128", "--repeats", "1"]
    result = subprocess.run(
        [*cmd, "--device", "cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["dtype"] == "float32" and data["meta"]["device"].startswith("cpu")
    assert "process" in data["meta"]["peak_memory"]  # CPU memory is the process-wide peak RSS, and says so
    spec = load_script().SHAPES[shape]
    if shape == "tiny-gemma":
        assert spec["sliding_window"] < 64 and "sliding_attention" in spec["layer_types"]
    rows = {row["length"]: row for row in data["results"]}
    assert sorted(rows) == [64, 128]
    for length, row in rows.items():
        for impl in ("ropekit", "transformers"):
            cell = row[impl]
            assert cell["status"] == "ok" and cell["runs"] == 1
            assert cell["tokens_per_s_median"] > 0 and cell["peak_memory_gb"] > 0
            assert "mfu" not in cell  # no --peak-tflops on a CPU
        assert row["nll_abs_diff"] < 1e-4
        # ropekit's pass as the dry run's memory model predicts it (transformers has none)
        assert row["ropekit"]["predicted_memory_gb"] > 0 and "predicted_memory_gb" not in row["transformers"]
        assert row["flops_per_token"] == pytest.approx(brute_force_flops(spec, length), rel=1e-12)
        assert row["tokens_per_s_ratio"] > 0
    assert "| " + shape + " | 64 |" in result.stdout


def test_ropes_against_the_first_on_cpu(tmp_path):
    out, checkpoint = tmp_path / "ropes.json", tmp_path / "checkpoint"
    cmd = [sys.executable, str(SCRIPT), "--shape", "tiny-llama", "--lengths", "48", "--repeats", "1", "--device", "cpu"]
    cmd += ["--ropes", "default", "rerope:16", "--warmup", "24,32", "--checkpoint", str(checkpoint), "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (checkpoint / "config.json").exists()  # kept for the next run of the suite
    data = json.loads(out.read_text())
    assert data["meta"]["labels"] == ["ropekit default", "ropekit rerope:16"]
    (row,) = data["results"]
    default, rerope = row["ropekit default"], row["ropekit rerope:16"]
    assert rerope["vs_first"] == pytest.approx(rerope["tokens_per_s_median"] / default["tokens_per_s_median"])
    assert rerope["mean_nll"] != default["mean_nll"]  # the far region is rotated otherwise
    assert "| tiny-llama | 48 | rerope:16 |" in result.stdout


def test_bad_warmup_is_one_line(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--shape", "tiny-llama", "--warmup", "soon"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "expected 'first', 'each' or token counts" in result.stderr


def test_suite_report_records_each_step(tmp_path):
    """benchmarks/suite_report.py on a made-up suite folder: a step that passed, one cut off by its time limit,
    one that failed; the passed one's JSON rendered by to_markdown."""
    rows = [{"length": 64, "ropekit": {"status": "ok", "tokens_per_s_median": 10.0, "peak_memory_gb": 1.0}}]
    meta = {"shape": "tiny-llama", "command": "gpu_models.py", "device": "cpu", "dtype": "float32", "torch": "2",
            "transformers": "5", "ropekit": "0", "labels": ["ropekit"]}  # fmt: skip
    (tmp_path / "table.json").write_text(json.dumps({"meta": meta, "results": rows}))
    (tmp_path / "table.log").write_text("done\n")
    (tmp_path / "long.log").write_text("repeat 0\n")
    (tmp_path / "tests.log").write_text("E   RuntimeError: no kernel\n1 failed in 3s\n")
    steps = ["table\t0\t12\tpython gpu_models.py", "long\t124\t140\tpython gpu_models.py", "tests\t1\t5\tpytest"]
    (tmp_path / "steps.tsv").write_text("\n".join(steps) + "\n")
    report = ROOT / "benchmarks" / "suite_report.py"
    cmd = [sys.executable, str(report), str(tmp_path), "--command", "gpu_suite.sh --cpu-smoke"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "suite.json").read_text())
    assert record["command"] == "gpu_suite.sh --cpu-smoke" and set(record["versions"]) == {"torch", "transformers"}
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("table", "ok"),
        ("long", "timed out"),
        ("tests", "failed (exit 1)"),
    ]
    assert record["steps"][2]["last_line"] == "1 failed in 3s"
    assert "| tiny-llama | 64 | 10 |" in (tmp_path / "suite.md").read_text()
    missing = subprocess.run([sys.executable, str(report), str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
