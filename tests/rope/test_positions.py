"""The attention-level types' records (ropekit/rope/positions.py): strict keys and values, presets,
their position arithmetic on small examples, log-n as a key of any rope dict, Llama 4's temperature,
and ``ropekit inspect`` on them. Their effect on a model is proven in tests/models/test_positions.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ropekit.cli import main
from ropekit.rope import NopeTemperature, RopeConfigError, RopeSpec, get_rope, parse_rope, position_key, preset
from ropekit.rope.positions import log_n_scale
from ropekit.rope.presets import parse_preset

GEO = {"head_dim": 16, "rope_theta": 10000.0, "max_position_embeddings": 512}


def far(rope: dict, length: int):
    spec = parse_rope(rope, **GEO)
    return get_rope(spec.rope_type).attention(spec, length)


def test_rerope_far_region_is_the_window():
    positions = far({"rope_type": "rerope", "window": 4}, 10)
    assert positions.window == 4
    relative = positions.query[:, None] - positions.key[None, :]
    assert torch.equal(relative, torch.full((10, 10), 4.0))  # min(i - j, W) for i - j >= W


def test_leaky_rerope_far_region_leaks_one_kth():
    positions = far({"rope_type": "leaky_rerope", "window": 4, "scaling_factor": 2}, 12)
    i, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
    relative = positions.query[:, None] - positions.key[None, :]
    far_apart = i - j >= 4
    torch.testing.assert_close(relative[far_apart], (4 + (i - j - 4) / 2).float()[far_apart])


def test_self_extend_far_region_is_longlms_grouping():
    """The paper's Figure 2 setting: group size 2, neighbor window 4; grouped positions continue
    from the window (the key at distance W sees relative position W when i is a multiple of G)."""
    positions = far({"rope_type": "self_extend", "group_size": 2, "neighbor_window": 4}, 10)
    assert positions.query.tolist() == [i // 2 + 4 - 2 for i in range(10)]
    assert positions.key.tolist() == [j // 2 for j in range(10)]
    assert (positions.query[:, None] - positions.key[None, :])[8, 4] == 4


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        ({"rope_type": "rerope"}, "required key 'window' is missing"),
        ({"rope_type": "rerope", "window": 0}, "window=0 is not allowed; expected a positive integer"),
        ({"rope_type": "rerope", "window": -8}, "window=-8 is not allowed"),
        ({"rope_type": "rerope", "window": 2.5}, "window=2.5 is not allowed"),
        ({"rope_type": "rerope", "window": True}, "window=True is not allowed"),
        ({"rope_type": "rerope", "window": 512}, "window=512 is not allowed; expected 1 <= window < 512"),
        ({"rope_type": "rerope", "window": 64, "factor": 2}, "unknown key 'factor'; the keys of rerope are: window"),
        ({"rope_type": "leaky_rerope", "window": 64}, "required key 'scaling_factor' is missing"),
        ({"rope_type": "leaky_rerope", "window": 64, "scaling_factor": 0.5}, "scaling_factor=0.5 is not allowed"),
        ({"rope_type": "leaky_rerope", "window": 600, "scaling_factor": 4}, "expected 1 <= window < 512"),
        ({"rope_type": "self_extend", "group_size": 0, "neighbor_window": 64}, "group_size=0 is not allowed"),
        ({"rope_type": "self_extend", "group_size": 1.5, "neighbor_window": 64}, "group_size=1.5 is not allowed"),
        ({"rope_type": "self_extend", "group_size": 4, "neighbor_window": 0}, "neighbor_window=0 is not allowed"),
        (
            {"rope_type": "self_extend", "group_size": 4, "neighbor_window": 1024},
            "neighbor_window=1024 is not allowed; expected 1 <= neighbor_window < 512",
        ),
        (
            {"rope_type": "self_extend", "group_size_1": 4, "group_size_2": 64},
            "unknown key 'group_size_1'; the keys of self_extend are: group_size, neighbor_window",
        ),
        ({"rope_type": "default", "log_n": 1}, "log_n=1 is not allowed; expected true"),
        ({"rope_type": "yarn", "factor": 2, "log_n": 0}, "log_n=0 is not allowed"),
        ({"rope_type": "rerope", "window": 8, "log_n": "yes"}, "log_n='yes' is not allowed"),
        ({"rope_type": "default", "log_n": 100.5}, "log_n=100.5 is not allowed"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(rope, expected):
    with pytest.raises(RopeConfigError, match=expected.replace("(", r"\(")):
        parse_rope(rope, **GEO)


def test_log_n_is_an_option_of_any_type():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}
    assert parse_rope({**yarn, "log_n": True}, **GEO).log_n == 128  # the rope's trained length
    assert parse_rope({"rope_type": "default", "log_n": True}, **GEO).log_n == 512
    assert parse_rope({"rope_type": "default", "log_n": 4096.0}, **GEO).log_n == 4096
    assert parse_rope({"rope_type": "default", "log_n": False}, **GEO) == parse_rope({}, **GEO)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "rerope", "window": 64, "log_n": True},
        {"rope_type": "leaky_rerope", "window": 64, "scaling_factor": 8},
        {"rope_type": "self_extend", "group_size": 4, "neighbor_window": 128, "log_n": 2048},
        {"rope_type": "yarn", "factor": 4.0, "log_n": 4096},
    ],
)
def test_specs_round_trip_and_stay_frozen_and_hashable(rope):
    spec = parse_rope(rope, **GEO)
    assert parse_rope(spec.to_dict(), **GEO) == spec
    assert RopeSpec.from_record(spec.to_record()) == spec
    assert hash(spec) == hash(parse_rope(spec.to_dict(), **GEO))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.log_n = 3
    assert position_key(spec) is not None  # never shares a pass with a rope of the same frequencies


def test_position_key_is_none_for_frequency_only_specs():
    assert position_key(parse_rope({"rope_type": "linear", "factor": 2}, **GEO)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rerope:64", {"rope_type": "rerope", "window": 64}),
        ("rerope", {"rope_type": "rerope", "window": 64}),  # an eighth of the trained 512
        ("leaky_rerope:64,4", {"rope_type": "leaky_rerope", "window": 64, "scaling_factor": 4.0}),
        ("leaky_rerope:32", {"rope_type": "leaky_rerope", "window": 32, "scaling_factor": 16.0}),
        ("self_extend:4,128", {"rope_type": "self_extend", "group_size": 4, "neighbor_window": 128}),
        ("self_extend", {"rope_type": "self_extend", "group_size": 8, "neighbor_window": 128}),
    ],
)
def test_presets(text, expected):
    rope_type, args = parse_preset(text)
    assert preset(rope_type, args, **GEO) == expected
    parse_rope(expected, **GEO)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rerope:x", "'x' is not understood; expected W, the window"),
        ("rerope:64,2", "expected W, the window"),
        ("self_extend:4", "'4' is not understood; expected G,W, the group size and the neighbor window"),
        ("self_extend:4,x", "expected G,W"),
        ("leaky_rerope:64,4,2", "expected W\\[,K\\]"),
    ],
)
def test_preset_arguments_are_checked(text, expected):
    with pytest.raises(RopeConfigError, match=expected):
        parse_preset(text)


def test_a_preset_value_is_checked_like_a_dict():
    rope_type, args = parse_preset("rerope:0")
    with pytest.raises(RopeConfigError, match="window=0 is not allowed"):
        parse_rope(preset(rope_type, args, **GEO), **GEO)


def test_log_n_and_llama4_temperature_factors():
    scale = log_n_scale(16, 64)
    assert scale[:16].tolist() == [1.0] * 16  # log(i + 1) <= log 16
    assert scale[63].item() == pytest.approx(math.log(64) / math.log(16))
    temperature = NopeTemperature()  # Llama 4's floor_scale 8192, attn_scale 0.1
    values = temperature.scale(3 * 8192)
    assert values[8190].item() == 1.0 and values[8191].item() == pytest.approx(1 + 0.1 * math.log(2))
    assert values[-1].item() == pytest.approx(1 + 0.1 * math.log(4))
    with pytest.raises(RopeConfigError, match="attn_scale=-0.1 is not allowed"):
        NopeTemperature(8192, -0.1)


def test_inspect_shows_the_base_frequencies_and_says_what_acts_in_attention(capsys):
    geometry = ["--head-dim", "16", "--rope-theta", "10000", "--max-position-embeddings", "512"]
    assert main(["inspect", "rerope:64", "self_extend:4,100", "default", *geometry]) == 0
    out = capsys.readouterr().out
    assert "in attention: relative position d read as min(d, 64)" in out
    assert "in attention: relative position i - j >= 100 read as (i // 4 + 75) - j // 4" in out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0] == "0"]
    assert len(rows) == 3 and rows[0] == rows[1] == rows[2]  # the same base frequencies
