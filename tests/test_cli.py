"""The ``ropekit`` command line: output, files written, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from ropekit.cli import main
from ropekit.rope import SCALINGS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_default_shows_all_six_scalings(capsys):
    code, out, err = run(capsys, "inspect")
    assert code == 0 and err == ""
    for rope_type in SCALINGS:
        assert f"'rope_type': '{rope_type}'" in out
    assert "attention_scale=1.06931" in out  # yarn at factor 2: 0.1 ln 2 + 1
    assert out.count(" dim ") == 6 and "wavelength" in out


def test_inspect_writes_csv_and_plot(capsys, tmp_path):
    csv, png = tmp_path / "t.csv", tmp_path / "t.png"
    code, out, _ = run(
        capsys,
        "inspect",
        "default",
        "yarn:4",
        'pi={"rope_type": "linear", "factor": 4}',
        "--csv",
        str(csv),
        "--plot",
        str(png),
    )
    assert code == 0 and png.stat().st_size > 10_000
    table = pd.read_csv(csv)
    assert list(table["rope"].unique()) == ["default", "yarn:4", "pi"]
    assert len(table) == 3 * 32
    assert table.loc[table["rope"] == "pi", "scale"].tolist() == pytest.approx([4.0] * 32)


def test_inspect_reads_a_model_config_with_its_own_geometry(capsys, tmp_path):
    config = {
        "model_type": "gemma3_text",
        "head_dim": 256,
        "hidden_size": 640,
        "num_attention_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out, _ = run(capsys, "inspect", f"g={tmp_path}")
    assert code == 0
    assert "g/full_attention: {'rope_type': 'default', 'rope_theta': 1000000.0}" in out
    assert "g/sliding_attention: {'rope_type': 'default', 'rope_theta': 10000.0}" in out
    assert "rotary_dim=256" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inspect", "yarn:x"], "factor 'x' is not a number"),
        (["inspect", "ntk"], "rope 'ntk' is not understood"),
        (["inspect", '{"rope_type": "yarn"}'], "required key 'factor' is missing"),
        (["inspect", '{"rope_type": "yarn", "factor": 0}'], "factor=0"),
        (["inspect", "{bad json"], "not valid JSON"),
        (["inspect", "yarn", "yarn"], "given twice"),
        (["inspect", "--seq-len", "0"], "--seq-len 0"),
        (["inspect", "longrope", "--head-dim", "63"], "rotary dim 63"),
    ],
)
def test_inspect_errors_are_one_line(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert err.startswith("ropekit inspect: error:") and err.count("\n") == 1


def test_help_and_console_script():
    result = subprocess.run([sys.executable, "-m", "ropekit.cli", "inspect", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--plot" in result.stdout
    result = subprocess.run([sys.executable, "-m", "ropekit.cli"], capture_output=True, text=True)
    assert result.returncode == 2 and "COMMAND" in result.stderr
