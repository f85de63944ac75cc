"""Frequencies: parity with transformers' ROPE_INIT_FUNCTIONS over random valid configs, and
the properties each scaling is defined by."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ropekit import RopeConfigError, rope_frequencies
from ropekit.rope import parse_rope, spec_frequencies, yarn_ramp_bounds
from tests.oracle import hf_frequencies

# float32 rounding: the two implementations run the same operations, so they agree far tighter
# than this; the bound leaves room for a different libm in pow/log.
RTOL = 1e-6
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def geometry(draw):
    """head_dim, partial_rotary_factor with an even rotary dim >= 4, theta, max length, seq_len."""
    head_dim = draw(st.sampled_from([16, 32, 64, 80, 96, 128, 256]))
    prf = draw(st.sampled_from([1.0, 1.0, 0.75, 0.5, 0.4, 0.25]))
    rotary_dim = int(head_dim * prf)
    if rotary_dim % 2 or rotary_dim < 4:
        prf = 1.0
    theta = draw(st.one_of(st.sampled_from([1e4, 1e5, 5e5, 1e6]), st.floats(500.0, 5e7)))
    max_pos = draw(st.one_of(st.sampled_from([2048, 4096, 8192, 32768, 131072]), st.integers(256, 300_000)))
    return {"head_dim": head_dim, "partial_rotary_factor": prf, "rope_theta": theta, "max_position_embeddings": max_pos}


def seq_lens(original: int):
    """None, or a length below, at, just past, or far past the original length."""
    return st.one_of(
        st.none(),
        st.integers(1, original - 1) if original > 1 else st.just(1),
        st.just(original),
        st.just(original + 1),
        st.integers(original + 2, 16 * original),
    )


factors = st.one_of(st.sampled_from([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 40.0]), st.floats(0.25, 64.0))


def check_parity(rope: dict, geo: dict, seq_len: int | None) -> None:
    ours, our_scale = rope_frequencies(rope, seq_len=seq_len, **geo)
    theirs, their_scale = hf_frequencies(rope, seq_len=seq_len, **geo)
    assert ours.dtype == torch.float32
    assert ours.shape == (int(geo["head_dim"] * geo["partial_rotary_factor"]) // 2,)
    torch.testing.assert_close(ours, theirs.float(), rtol=RTOL, atol=0)
    assert our_scale == pytest.approx(float(their_scale), rel=RTOL)


@EXAMPLES
@given(geo=geometry(), data=st.data())
def test_default_matches_transformers(geo, data):
    check_parity({"rope_type": "default"}, geo, data.draw(seq_lens(geo["max_position_embeddings"])))


@EXAMPLES
@given(geo=geometry(), factor=factors, kind=st.sampled_from(["linear", "dynamic"]), data=st.data())
def test_linear_and_dynamic_match_transformers(geo, factor, kind, data):
    seq_len = data.draw(seq_lens(geo["max_position_embeddings"]))
    check_parity({"rope_type": kind, "factor": factor}, geo, seq_len)


@st.composite
def yarn_configs(draw, max_pos: int):
    rope = {"rope_type": "yarn", "factor": draw(factors)}
    if draw(st.booleans()):
        rope["original_max_position_embeddings"] = draw(st.integers(128, max_pos))
    if draw(st.booleans()):
        rope["beta_fast"] = draw(st.floats(1.0, 128.0))
    if draw(st.booleans()):
        rope["beta_slow"] = draw(st.floats(0.05, rope.get("beta_fast", 32.0)))
    extra = draw(st.sampled_from(["none", "mscale", "attention_factor"]))
    if extra == "mscale":  # DeepSeek form; 0 switches it off upstream
        rope["mscale"] = draw(st.one_of(st.just(0.0), st.floats(0.1, 2.0)))
        rope["mscale_all_dim"] = draw(st.one_of(st.just(0.0), st.floats(0.1, 2.0)))
    elif extra == "attention_factor":
        rope["attention_factor"] = draw(st.floats(0.1, 4.0))
    if draw(st.booleans()):
        rope["truncate"] = draw(st.booleans())
    return rope


@EXAMPLES
@given(geo=geometry(), data=st.data())
def test_yarn_matches_transformers(geo, data):
    rope = data.draw(yarn_configs(geo["max_position_embeddings"]))
    check_parity(rope, geo, data.draw(seq_lens(geo["max_position_embeddings"])))


@EXAMPLES
@given(geo=geometry(), data=st.data())
def test_longrope_matches_transformers(geo, data):
    n = int(geo["head_dim"] * geo["partial_rotary_factor"]) // 2
    lists = st.lists(st.floats(1.0, 64.0), min_size=n, max_size=n)
    original = data.draw(st.integers(128, geo["max_position_embeddings"]))
    rope = {
        "rope_type": "longrope",
        "short_factor": data.draw(lists),
        "long_factor": data.draw(lists),
        "original_max_position_embeddings": original,
    }
    if data.draw(st.booleans()):
        rope["factor"] = data.draw(factors)
    if data.draw(st.booleans()):
        rope["attention_factor"] = data.draw(st.floats(0.1, 4.0))
    check_parity(rope, geo, data.draw(seq_lens(original)))


@EXAMPLES
@given(geo=geometry(), factor=factors, data=st.data())
def test_llama3_matches_transformers(geo, factor, data):
    low = data.draw(st.floats(0.25, 8.0))
    # equal factors: no band to blend (Llama 4 Scout's 1 and 1)
    high = data.draw(st.just(low) | st.floats(low * 1.01 + 1e-3, 32.0))
    original = data.draw(st.integers(128, geo["max_position_embeddings"]))
    rope = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original,
    }
    check_parity(rope, geo, data.draw(seq_lens(original)))


@EXAMPLES
@given(geo=geometry(), data=st.data())
def test_proportional_matches_transformers(geo, data):
    # p-RoPE reads partial_rotary_factor inside its dict and always returns head_dim // 2 frequencies.
    prf = data.draw(st.sampled_from([1.0, 0.5, 0.25, 0.125]) | st.floats(4 / geo["head_dim"], 1.0))
    rope = {"rope_type": "proportional", "partial_rotary_factor": prf}
    if data.draw(st.booleans()):
        rope["factor"] = data.draw(factors)
    geo = {**geo, "partial_rotary_factor": 1.0}
    seq_len = data.draw(seq_lens(geo["max_position_embeddings"]))
    ours, our_scale = rope_frequencies(rope, seq_len=seq_len, **geo)
    theirs, their_scale = hf_frequencies(rope, seq_len=seq_len, **geo)
    assert ours.shape == (geo["head_dim"] // 2,)
    torch.testing.assert_close(ours, theirs.float(), rtol=RTOL, atol=0)
    assert our_scale == float(their_scale) == 1.0


def test_proportional_turns_the_first_pairs_at_the_whole_heads_frequencies():
    full = freqs(None)[0]
    quarter = freqs({"rope_type": "proportional", "partial_rotary_factor": 0.25})[0]
    torch.testing.assert_close(quarter[:8], full[:8], rtol=0, atol=0)
    assert torch.all(quarter[8:] == 0)
    torch.testing.assert_close(freqs({"rope_type": "proportional"})[0], full, rtol=0, atol=0)
    halved = freqs({"rope_type": "proportional", "partial_rotary_factor": 0.25, "factor": 2.0})[0]
    torch.testing.assert_close(halved, quarter / 2, rtol=0, atol=0)


def test_proportional_that_turns_nothing_is_refused():
    with pytest.raises(RopeConfigError, match="turns no rotary pair"):
        freqs({"rope_type": "proportional", "partial_rotary_factor": 0.01})


# --- properties -------------------------------------------------------------------------------

GEO = {"head_dim": 64, "rope_theta": 1e5, "max_position_embeddings": 8192}


def freqs(rope, seq_len=None, **geo):
    return rope_frequencies(rope, seq_len=seq_len, **{**GEO, **geo})


@EXAMPLES
@given(geo=geometry())
def test_linear_with_factor_one_is_default(geo):
    torch.testing.assert_close(
        rope_frequencies({"rope_type": "linear", "factor": 1.0}, **geo)[0],
        rope_frequencies(None, **geo)[0],
        rtol=0,
        atol=0,
    )


def test_default_spelled_four_ways_is_the_same():
    empty = freqs(None)[0]
    for rope in ({}, {"rope_type": "default"}, {"type": "default"}, {"rope_type": "default", "rope_theta": 1e5}):
        torch.testing.assert_close(freqs(rope)[0], empty, rtol=0, atol=0)


def test_linear_divides_every_frequency_by_factor():
    torch.testing.assert_close(freqs({"rope_type": "linear", "factor": 4.0})[0], freqs(None)[0] / 4)


def test_llama3_keeps_high_and_divides_low_frequencies():
    base = freqs(None)[0]
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    scaled = freqs(rope)[0]
    wavelength = 2 * math.pi / base
    high = wavelength < 8192 / 4.0
    low = wavelength > 8192 / 1.0
    assert high.sum() > 0 and low.sum() > 0
    torch.testing.assert_close(scaled[high], base[high], rtol=0, atol=0)
    torch.testing.assert_close(scaled[low], base[low] / 8.0)
    middle = ~high & ~low
    assert torch.all(scaled[middle] <= base[middle]) and torch.all(scaled[middle] >= base[middle] / 8.0)


@pytest.mark.parametrize("seq_len", [None, 1, 100, 4096, 8191, 8192])
def test_dynamic_at_or_below_original_length_is_default(seq_len):
    torch.testing.assert_close(
        freqs({"rope_type": "dynamic", "factor": 4.0}, seq_len)[0], freqs(None)[0], rtol=0, atol=0
    )


def test_dynamic_is_stateless_and_grows_theta_past_original_length():
    rope = {"rope_type": "dynamic", "factor": 4.0}
    short = freqs(rope, 2048)[0]
    long = freqs(rope, 32768)[0]
    assert torch.all(long[1:] < short[1:])  # every non-constant band slowed down
    assert long[0] == short[0] == 1.0
    # Order of evaluation does not matter (transformers' cached update does depend on it).
    torch.testing.assert_close(freqs(rope, 2048)[0], short, rtol=0, atol=0)


def test_yarn_ramp_bounds():
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}
    spec = parse_rope(rope, **GEO)
    low, high = yarn_ramp_bounds(spec)
    # Dimension d turns 8192 / (2 pi theta^(2d/64)) times over the trained context: beta_fast = 32
    # turns falls at d = 64 ln(8192 / (2 pi 32)) / (2 ln 1e5), beta_slow = 1 at 64 ln(8192 / 2 pi) / (2 ln 1e5).
    assert low == math.floor(64 * math.log(8192 / (2 * math.pi * 32)) / (2 * math.log(1e5)))
    assert high == math.ceil(64 * math.log(8192 / (2 * math.pi)) / (2 * math.log(1e5)))
    base = freqs(None)[0]
    scaled, scale = freqs(rope)
    torch.testing.assert_close(scaled[: low + 1], base[: low + 1], rtol=0, atol=0)  # extrapolated
    torch.testing.assert_close(scaled[high:], base[high:] / 4.0)  # interpolated
    ratio = base / scaled
    assert torch.all(ratio[1:] >= ratio[:-1] - 1e-6)  # blend is monotone in between
    assert scale == pytest.approx(0.1 * math.log(4.0) + 1.0)


def test_yarn_untruncated_ramp_uses_fractional_bounds():
    spec = parse_rope({"rope_type": "yarn", "factor": 4.0, "truncate": False}, **GEO)
    low, high = yarn_ramp_bounds(spec)
    assert low != int(low) and high != int(high)


def test_yarn_deepseek_mscale_gives_attention_scale_ratio():
    rope = {
        "rope_type": "yarn",
        "factor": 40.0,
        "mscale": 1.0,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096,
    }
    _, scale = freqs(rope)
    assert scale == pytest.approx((0.1 * math.log(40) + 1) / (0.1 * 0.707 * math.log(40) + 1))


def test_longrope_switches_exactly_past_original_length():
    n = 32
    rope = {
        "rope_type": "longrope",
        "short_factor": [1.0] * n,
        "long_factor": [float(i + 1) for i in range(n)],
        "original_max_position_embeddings": 4096,
    }
    base = freqs(None)[0]
    for seq_len in (None, 1, 4095, 4096):
        torch.testing.assert_close(freqs(rope, seq_len)[0], base, rtol=0, atol=0)
    torch.testing.assert_close(freqs(rope, 4097)[0], base / torch.arange(1, n + 1, dtype=torch.float32))
    # Phi-3's attention scale: factor = max_position_embeddings / original, sqrt(1 + ln f / ln L).
    assert freqs(rope, 4097)[1] == pytest.approx(math.sqrt(1 + math.log(8192 / 4096) / math.log(4096)))
    assert freqs(rope, 4096)[1] == freqs(rope, 4097)[1]  # the scale does not switch, only the factors


def test_partial_rotary_gives_fewer_frequencies_of_the_rotary_dim():
    inv_freq, _ = freqs(None, partial_rotary_factor=0.25)
    torch.testing.assert_close(inv_freq, 1.0 / 1e5 ** (torch.arange(0, 16, 2).float() / 16))


def test_spec_frequencies_rejects_bad_seq_len():
    spec = parse_rope(None, **GEO)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="seq_len"):
            spec_frequencies(spec, bad)


def test_inspect_table_of_proportional_shows_its_still_pairs():
    """``ropekit inspect``'s table: p-RoPE's turning pairs at scale 1 against the plain rope of the whole
    head, the others at frequency 0 with an infinite wavelength and no rotations."""
    from ropekit.rope.table import frequency_table

    spec = parse_rope({"rope_type": "proportional", "partial_rotary_factor": 0.25}, **GEO)
    table = frequency_table({"p": spec})
    assert len(table) == GEO["head_dim"] // 2
    assert (table["scale"][:8] == 1.0).all() and (table["wavelength"][8:] == math.inf).all()
    assert (table["rotations"][8:] == 0).all()
