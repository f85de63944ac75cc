"""One rope argument everywhere: the same naming and meaning for inspect, sweep and load_model."""

from __future__ import annotations

import json

import pytest

from ropekit.cli import build_parser, main, sweep_spec_from_args
from ropekit.rope import RopeConfigError, model_ropes, parse_rope, preset, rope_argument
from ropekit.sweep import SpecError
from tests.rope.test_config import GEMMA3_270M, SMOLLM2


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("yarn", "yarn"),
        ("yarn:4", "yarn:4"),
        ("native", "native"),
        ('{"rope_type": "yarn", "factor": 4}', "yarn:4"),
        ('{"full_attention": {"rope_type": "linear", "factor": 8}}', "linear:8"),
        ("pi=linear:4", "pi"),
    ],
)
def test_one_naming_rule(text, name):
    assert rope_argument(text)[0] == name


def test_a_config_json_path_means_that_models_rope_settings(tmp_path):
    folder = tmp_path / "yarn-model"
    folder.mkdir()
    source = {**SMOLLM2, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}}
    (folder / "config.json").write_text(json.dumps(source))
    assert rope_argument(str(folder / "config.json"))[0] == "yarn-model"
    ropes = model_ropes(GEMMA3_270M, str(folder / "config.json"))
    want = parse_rope(
        {**source["rope_scaling"], "rope_theta": SMOLLM2["rope_theta"]},
        head_dim=256,
        rope_theta=1,
        max_position_embeddings=32768,
    )
    assert ropes["full_attention"] == want  # its theta and lengths, this model's head
    assert ropes["sliding_attention"].rope_type == "default"  # flat on Gemma 3: global layers only


def test_presets_refuse_a_factor_they_would_drop():
    with pytest.raises(RopeConfigError, match="default rope takes no factor"):
        preset("default", 4.0, head_dim=64, rope_theta=1e4, max_position_embeddings=4096)
    with pytest.raises(RopeConfigError, match="default rope takes no factor"):
        model_ropes(SMOLLM2, "default:4")


@pytest.mark.parametrize("ropes", [["a=default", "a=linear:2"], ["yarn", '{"rope_type": "yarn"}']])
def test_two_sweep_ropes_of_one_name_are_refused(ropes, tmp_path, capsys):
    argv = ["sweep", "--model", "m", "--lengths", "64", *(x for r in ropes for x in ("--rope", r))]
    with pytest.raises(SpecError, match="two ropes are named"):
        sweep_spec_from_args(build_parser().parse_args(argv))
    assert main([*argv, "--out", str(tmp_path)]) == 2 and "two ropes are named" in capsys.readouterr().err
