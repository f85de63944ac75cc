"""Parsing: real checkpoint configs in both transformers forms give transformers' numbers; every
bad input is a RopeConfigError that names the key."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from ropekit import RopeConfigError, parse_rope, rope_frequencies, rope_from_config
from ropekit.rope import LAYER_TYPES, Linear, RopeSpec, Yarn, spec_frequencies
from tests.oracle import hf_model_rope

LLAMA31 = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}
LLAMA32 = {**LLAMA31, "hidden_size": 2048, "head_dim": 64, "rope_scaling": {**LLAMA31["rope_scaling"], "factor": 32.0}}
SMOLLM2 = {
    "model_type": "llama",
    "hidden_size": 576,
    "num_attention_heads": 9,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rope_scaling": None,
}
MISTRAL = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "head_dim": 128,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "sliding_window": None,
}
QWEN25_YARN = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
}
# Phi-3-mini-128k: pretraining length at top level, 48 = 96 / 2 factors per list.
PHI3_LONGROPE = {
    "model_type": "phi3",
    "hidden_size": 3072,
    "num_attention_heads": 32,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "longrope",
        "short_factor": [1.0 + 0.01 * i for i in range(48)],
        "long_factor": [1.0 + 1.5 * i for i in range(48)],
    },
}
PHI3_SU = {**PHI3_LONGROPE, "rope_scaling": {**PHI3_LONGROPE["rope_scaling"], "type": "su"}}
DEEPSEEK_YARN = {
    "model_type": "llama",
    "hidden_size": 8192,
    "num_attention_heads": 128,
    "head_dim": 64,
    "max_position_embeddings": 163840,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
}
GEMMA3_270M = {
    "model_type": "gemma3_text",
    "hidden_size": 640,
    "num_attention_heads": 4,
    "head_dim": 256,
    "num_hidden_layers": 18,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "sliding_window": 512,
}
GEMMA3_4B = {
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "num_attention_heads": 8,
        "head_dim": 256,
        "num_hidden_layers": 34,
        "max_position_embeddings": 131072,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
}
EXAONE4_32B = {
    "model_type": "exaone4",
    "hidden_size": 5120,
    "num_attention_heads": 40,
    "head_dim": 128,
    "num_hidden_layers": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rope_scaling": {
        "factor": 16.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "sliding_window": 4096,
    "sliding_window_pattern": "LLLG",
    "layer_types": (["sliding_attention"] * 3 + ["full_attention"]) * 16,
}
EXAONE4_12B = {
    **EXAONE4_32B,
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "head_dim": 64,
    "num_hidden_layers": 30,
    "max_position_embeddings": 65536,
    "sliding_window": None,
    "sliding_window_pattern": None,
    "layer_types": ["full_attention"] * 30,
}

REAL = {
    "llama3.1-8b": LLAMA31,
    "llama3.2-1b": LLAMA32,
    "smollm2": SMOLLM2,
    "mistral": MISTRAL,
    "qwen2.5-yarn": QWEN25_YARN,
    "phi3-longrope": PHI3_LONGROPE,
    "deepseek-yarn": DEEPSEEK_YARN,
    "gemma3-270m": GEMMA3_270M,
    "gemma3-4b": GEMMA3_4B,
    "exaone4-32b": EXAONE4_32B,
    "exaone4-1.2b": EXAONE4_12B,
}


def assert_same(spec: RopeSpec, reference: tuple[torch.Tensor, float]) -> None:
    ours, scale = spec_frequencies(spec)
    torch.testing.assert_close(ours, reference[0].float(), rtol=1e-6, atol=0)
    assert scale == pytest.approx(float(reference[1]), rel=1e-6)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_matches_the_models_own_rotary_embedding(name):
    config = REAL[name]
    specs = rope_from_config(config)
    reference = hf_model_rope(config)
    if "all" in reference:
        for spec in specs.values():
            if spec is not None:
                assert_same(spec, reference["all"])
    else:
        for layer_type, ref in reference.items():
            assert_same(specs[layer_type], ref)


def test_real_config_from_a_config_json_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_YARN))
    from_folder = rope_from_config(tmp_path)
    assert from_folder == rope_from_config(tmp_path / "config.json") == rope_from_config(QWEN25_YARN)
    assert from_folder["full_attention"].scaling == Yarn(factor=4.0, original_max_position_embeddings=32768)


def test_transformers_config_object_is_accepted():
    from transformers import AutoConfig

    cfg = AutoConfig.for_model("llama", **{k: v for k, v in LLAMA31.items() if k != "model_type"})
    assert rope_from_config(cfg) == rope_from_config(LLAMA31)


def v5_form(config: dict) -> dict:
    """The same config as transformers 5 writes it: theta inside rope_parameters."""
    out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_theta")}
    out["rope_parameters"] = {
        **(config.get("rope_scaling") or {"rope_type": "default"}),
        "rope_theta": config["rope_theta"],
    }
    return out


@pytest.mark.parametrize("name", ["llama3.1-8b", "qwen2.5-yarn", "phi3-longrope", "deepseek-yarn", "smollm2"])
def test_v4_and_v5_forms_give_the_same_specs(name):
    assert rope_from_config(v5_form(REAL[name])) == rope_from_config(REAL[name])


def test_v5_nested_per_layer_type_form():
    nested = {**GEMMA3_4B["text_config"], "rope_scaling": None}
    del nested["rope_theta"], nested["rope_local_base_freq"]
    nested["rope_parameters"] = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    }
    specs = rope_from_config(nested)
    assert specs == rope_from_config(GEMMA3_4B)
    assert specs["full_attention"].scaling == Linear(8.0) and specs["full_attention"].rope_theta == 1e6
    assert specs["sliding_attention"].rope_type == "default" and specs["sliding_attention"].rope_theta == 1e4


def test_gemma3_legacy_scaling_applies_to_global_layers_only():
    specs = rope_from_config(GEMMA3_4B)
    assert specs["full_attention"].rope_type == "linear"
    assert specs["sliding_attention"].rope_type == "default"


def test_exaone4_global_layers_have_no_rope_when_sliding():
    assert rope_from_config(EXAONE4_32B)["full_attention"] is None
    assert rope_from_config(EXAONE4_32B)["sliding_attention"].rope_type == "llama3"
    assert rope_from_config(EXAONE4_12B)["full_attention"].rope_type == "llama3"


def test_phi3_top_level_original_length_fills_the_rope():
    spec = rope_from_config(PHI3_LONGROPE)["full_attention"]
    assert spec.scaling.original_max_position_embeddings == 4096
    assert spec.original_length == 4096


def test_phi3_legacy_su_type_is_longrope():
    # Phi3Config maps the first published "su" to longrope (transformers 5.24 then trips over its
    # own missing original length, so it is no oracle here).
    assert rope_from_config(PHI3_SU) == rope_from_config(PHI3_LONGROPE)
    with pytest.raises(RopeConfigError, match="'su'"):
        rope_from_config({**PHI3_SU, "model_type": "llama"})


def test_original_length_defaults_to_max_position_embeddings():
    spec = parse_rope({"rope_type": "yarn", "factor": 2.0}, head_dim=64, rope_theta=1e4, max_position_embeddings=4096)
    assert spec.scaling.original_max_position_embeddings == 4096


@pytest.mark.parametrize("name", sorted(REAL))
def test_to_dict_round_trips(name):
    for spec in rope_from_config(REAL[name]).values():
        if spec is not None:
            geo = {
                "head_dim": spec.head_dim,
                "max_position_embeddings": spec.max_position_embeddings,
                "rope_theta": 1.0,
            }
            assert parse_rope(json.loads(json.dumps(spec.to_dict())), **geo) == spec


def test_integral_float_lengths_from_json_writers_are_accepted():
    spec = parse_rope(
        {"rope_type": "yarn", "factor": 2, "original_max_position_embeddings": 8192.0},
        head_dim=64,
        rope_theta=1e4,
        max_position_embeddings=8192,
    )
    assert spec.scaling.original_max_position_embeddings == 8192
    assert isinstance(spec.scaling.original_max_position_embeddings, int)


# --- bad input --------------------------------------------------------------------------------

GEO = {"head_dim": 64, "rope_theta": 1e4, "max_position_embeddings": 4096}
LONG32 = {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 32}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}

BAD = {
    "unknown type": ({"rope_type": "xpos"}, ["rope_type", "'xpos'", "yarn", "llama3"]),
    "unknown legacy type": ({"type": "su"}, ["rope_type", "'su'"]),
    "type disagrees": ({"rope_type": "yarn", "type": "linear", "factor": 2}, ["'yarn'", "'linear'"]),
    "missing factor": ({"rope_type": "yarn"}, ["'factor'", "missing"]),
    "missing long_factor": ({"rope_type": "longrope", "short_factor": [1.0] * 32}, ["'long_factor'"]),
    "missing llama3 key": ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}, ["'high_freq_factor'"]),
    "unknown key for type": ({"rope_type": "linear", "factor": 2.0, "beta_fast": 32}, ["'beta_fast'", "linear"]),
    "key of another type": ({"rope_type": "default", "factor": 2.0}, ["'factor'", "default"]),
    "typo": ({"rope_type": "yarn", "factr": 2.0}, ["'factr'"]),
    "nan factor": ({"rope_type": "linear", "factor": math.nan}, ["factor=nan"]),
    "inf factor": ({"rope_type": "dynamic", "factor": math.inf}, ["factor=inf"]),
    "zero factor": ({"rope_type": "linear", "factor": 0}, ["factor=0"]),
    "negative factor": ({"rope_type": "yarn", "factor": -2.0}, ["factor=-2.0"]),
    "string factor": ({"rope_type": "linear", "factor": "4"}, ["factor='4'", "number"]),
    "bool factor": ({"rope_type": "linear", "factor": True}, ["factor=True"]),
    "none factor": ({"rope_type": "linear", "factor": None}, ["factor=None"]),
    "zero theta in dict": ({"rope_type": "default", "rope_theta": 0.0}, ["rope_theta=0.0"]),
    "negative beta": ({"rope_type": "yarn", "factor": 2.0, "beta_slow": -1}, ["beta_slow=-1"]),
    "betas reversed": (
        {"rope_type": "yarn", "factor": 2.0, "beta_fast": 1, "beta_slow": 32},
        ["beta_fast", "beta_slow"],
    ),
    "truncate not bool": ({"rope_type": "yarn", "factor": 2.0, "truncate": "yes"}, ["truncate='yes'"]),
    "fractional length": (
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192.5},
        ["original_max_position_embeddings=8192.5", "integer"],
    ),
    "mscale alone": ({"rope_type": "yarn", "factor": 2.0, "mscale": 0.707}, ["mscale", "mscale_all_dim"]),
    "attention factor and mscale": (
        {"rope_type": "yarn", "factor": 2.0, "mscale": 1, "mscale_all_dim": 1, "attention_factor": 1.2},
        ["attention_factor", "mscale"],
    ),
    "short list": ({**LONG32, "short_factor": [1.0] * 31}, ["short_factor", "31", "32"]),
    "long list": ({**LONG32, "long_factor": [1.0] * 64}, ["long_factor", "64", "32"]),
    "list of strings": ({**LONG32, "long_factor": ["a"] * 32}, ["long_factor[0]='a'"]),
    "list not a list": ({**LONG32, "short_factor": 1.0}, ["short_factor=1.0", "list"]),
    "llama3 high < low": ({**LLAMA3, "high_freq_factor": 0.5}, ["high_freq_factor=0.5"]),
    "partial rotary > 1": ({"rope_type": "default", "partial_rotary_factor": 1.5}, ["partial_rotary_factor=1.5"]),
    "odd rotary dim": ({"rope_type": "default", "partial_rotary_factor": 0.5 + 1 / 64}, ["rotary dim 33"]),
    "not a dict": (["yarn", 4], ["rope_scaling=['yarn', 4]", "dict"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rope_is_a_rope_config_error_naming_the_key(case):
    rope, expected = BAD[case]
    with pytest.raises(RopeConfigError) as info:
        rope_frequencies(rope, **GEO)
    assert isinstance(info.value, ValueError)
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {str(info.value)!r}"


@pytest.mark.parametrize(
    ("geo", "expected"),
    [
        ({**GEO, "head_dim": 0}, "head_dim=0"),
        ({**GEO, "head_dim": None}, "head_dim=None"),
        ({**GEO, "rope_theta": -1.0}, "rope_theta=-1.0"),
        ({**GEO, "max_position_embeddings": "4k"}, "max_position_embeddings='4k'"),
        ({**GEO, "head_dim": 2}, "rotary dim 2"),
    ],
)
def test_bad_geometry_names_the_argument(geo, expected):
    rope = {"rope_type": "dynamic", "factor": 2.0}
    with pytest.raises(RopeConfigError, match=re.escape(expected)):
        rope_frequencies(rope, **geo)


def test_bad_model_configs(tmp_path):
    cases = {
        "max_position_embeddings": {"model_type": "llama", "head_dim": 64},
        "head_dim": {"model_type": "llama", "max_position_embeddings": 8192},
        "'extra'": {**GEMMA3_270M, "rope_parameters": {"full_attention": {"rope_type": "default"}, "extra": {}}},
        "both set and differ": {
            **SMOLLM2,
            "rope_parameters": {"rope_type": "linear", "factor": 2.0},
            "rope_scaling": {"rope_type": "linear", "factor": 4.0},
        },
        "rope_scaling (rope_type 'yarn')": {**SMOLLM2, "rope_scaling": {"rope_type": "yarn"}},
        "rope_parameters['full_attention']": {
            **GEMMA3_270M,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear"},
                "sliding_attention": {"rope_type": "default"},
            },
        },
    }
    for expected, config in cases.items():
        with pytest.raises(RopeConfigError, match=re.escape(expected)):
            rope_from_config(config)
    with pytest.raises(RopeConfigError, match="does not exist"):
        rope_from_config(tmp_path / "missing.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RopeConfigError, match="not readable JSON"):
        rope_from_config(tmp_path)
    with pytest.raises(RopeConfigError, match="expected a dict"):
        rope_from_config(42)


def test_specs_are_frozen_and_hashable():
    spec = parse_rope(LONG32, **GEO)
    assert hash(spec) == hash(parse_rope(LONG32, **GEO))
    with pytest.raises(AttributeError):
        spec.rope_theta = 2.0  # type: ignore[misc]
    assert set(rope_from_config(SMOLLM2)) == set(LAYER_TYPES)
