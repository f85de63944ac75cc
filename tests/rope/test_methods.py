"""The frequency-only methods beyond transformers' six (ropekit/rope/methods.py): each equal to its
reference code, rewritten below from the source as closely as its operations allow, over random
head geometries, factors and evaluated lengths; the properties each is defined by; strict
validation; presets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ropekit.rope import (
    RopeConfigError,
    RopeSpec,
    model_ropes,
    parse_rope,
    preset,
    rope_name,
    rope_table,
    spec_frequencies,
)
from ropekit.rope.presets import parse_preset
from tests.rope.test_config import SMOLLM2
from tests.rope.test_frequencies import EXAMPLES, RTOL, geometry, seq_lens

# --- the reference code, rewritten from its source ------------------------------------------
# jquesnelle/yarn at a18e549 (scaled_rope/), bojone/rerope at 916102d, sheryc/resonance_rope at
# 9e903dc. Only the frequency computation is kept: the cos/sin caches around it are dropped, and a
# module's state (its cache length) is kept where it decides the frequencies.


def ref_ntk(dim, base=10000, alpha=1):
    # jquesnelle/yarn scaled_rope/LlamaNTKScaledRotaryEmbedding.py, LlamaNTKScaledRotaryEmbedding.__init__
    base = base * alpha ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    return inv_freq


# jquesnelle/yarn scaled_rope/LlamaDynamicYaRNScaledRotaryEmbedding.py (the same helpers sit in
# LlamaPartNTKScaledRotaryEmbedding.py, find_correction_dim named find_correction_factor there, and in
# sheryc/resonance_rope src/models/components/positional_embedding/rotary_utils.py).
def find_correction_dim(num_rotations, dim, base=10000, max_position_embeddings=2048):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def find_correction_range(low_rot, high_rot, dim, base=10000, max_position_embeddings=2048):
    low = math.floor(find_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(find_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)  # Clamp values just in case


def linear_ramp_mask(min, max, dim):  # noqa: A002 (the source's names)
    if min == max:
        max += 0.001  # Prevent singularity
    linear_func = (torch.arange(dim, dtype=torch.float32) - min) / (max - min)
    ramp_func = torch.clamp(linear_func, 0, 1)
    return ramp_func


def get_mscale(scale=1):
    if scale <= 1:
        return 1.0
    return 0.1 * math.log(scale) + 1.0


class RefDynamicYaRN:
    """jquesnelle/yarn scaled_rope/LlamaDynamicYaRNScaledRotaryEmbedding.py, LlamaDynamicYaRNScaledRotaryEmbedding
    (__init__, forward's cache rebuild, yarn) without the cos/sin cache; ``resonance`` adds
    sheryc/resonance_rope's LlamaDynamicYaRNScaledResonanceRotaryEmbedding.resonance_register after
    each inv_freq update."""

    def __init__(
        self,
        dim,
        max_position_embeddings=2048,
        base=10000,
        original_max_position_embeddings=2048,
        extrapolation_factor=1,
        attn_factor=1,
        beta_fast=32,
        beta_slow=1,
        finetuned=False,
        resonance=False,
    ):
        self.dim = dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        self.original_max_position_embeddings = original_max_position_embeddings
        self.extrapolation_factor = extrapolation_factor
        self.attn_factor = attn_factor
        self.beta_fast = beta_fast
        self.beta_slow = beta_slow
        self.resonance = resonance
        if finetuned:
            self.yarn(self.max_position_embeddings / self.original_max_position_embeddings)
        else:
            self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
            if resonance:
                self.inv_freq = ref_resonance_register(self.inv_freq)
            self.mscale = 1
        self.max_seq_len_cached = max_position_embeddings

    def forward(self, seq_len):
        if seq_len > self.max_seq_len_cached:
            self.max_seq_len_cached = seq_len
            self.yarn(seq_len / self.original_max_position_embeddings)
        return self.inv_freq, self.mscale

    def yarn(self, scale):
        pos_freqs = self.base ** (torch.arange(0, self.dim, 2).float() / self.dim)
        inv_freq_extrapolation = 1.0 / pos_freqs
        inv_freq_interpolation = 1.0 / (scale * pos_freqs)
        low, high = find_correction_range(
            self.beta_fast, self.beta_slow, self.dim, self.base, self.original_max_position_embeddings
        )
        inv_freq_mask = (1 - linear_ramp_mask(low, high, self.dim // 2).float()) * self.extrapolation_factor
        inv_freq = inv_freq_interpolation * (1 - inv_freq_mask) + inv_freq_extrapolation * inv_freq_mask
        self.inv_freq = ref_resonance_register(inv_freq) if self.resonance else inv_freq
        self.mscale = float(get_mscale(scale) * self.attn_factor)


def ref_part_ntk(dim, base=10000, scale=1, ntk_factor=1, extrapolation_factor=1, original_max_position_embeddings=2048):
    # jquesnelle/yarn scaled_rope/LlamaPartNTKScaledRotaryEmbedding.py, LlamaPartNTKScaledRotaryEmbedding.__init__
    beta_0 = 1.25
    beta_1 = 0.75
    gamma_0 = 16
    gamma_1 = 2
    inv_freq_base = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    inv_freq_linear = 1.0 / (scale * (base ** (torch.arange(0, dim, 2).float() / dim)))
    inv_freq_ntk = 1.0 / ((base * scale ** (dim / (dim - 2))) ** (torch.arange(0, dim, 2).float() / dim))
    current_dtype = inv_freq_ntk.dtype
    low, high = find_correction_range(beta_0, beta_1, dim, base, original_max_position_embeddings)
    inv_freq_mask = (1 - linear_ramp_mask(low, high, dim // 2).type(current_dtype)) * ntk_factor
    inv_freq = inv_freq_linear * (1 - inv_freq_mask) + inv_freq_ntk * inv_freq_mask
    low, high = find_correction_range(gamma_0, gamma_1, dim, base, original_max_position_embeddings)
    inv_freq_mask = (1 - linear_ramp_mask(low, high, dim // 2).type(current_dtype)) * extrapolation_factor
    inv_freq = inv_freq * (1 - inv_freq_mask) + inv_freq_base * inv_freq_mask
    return inv_freq


def ref_ntk_rope_mixed(dim, base=10000, k=12, b=0.75):
    # bojone/rerope ntk_patch.py, ntk_rope_mixed_init (k, b are constants there: 12, 0.75)
    a = np.log(k) / (dim / 2) ** b
    inv_freq = base ** (-torch.arange(0, dim, 2).float() / dim)
    inv_freq *= (-a * torch.arange(1, dim // 2 + 1).float() ** b).exp()
    return inv_freq


def ref_resonance_register(inv_freq):
    # sheryc/resonance_rope llama_finetuning/scaled_rope/LlamaYaRNScaledResonanceRotaryEmbedding.py,
    # resonance_register (the same two lines in src/.../rotary_resonance.py, _register_buffers)
    r_wavelengths = torch.round(2 * math.pi / inv_freq)
    r_inv_freq = 2 * math.pi / r_wavelengths
    return r_inv_freq


def ref_resonance_yarn(dim, max_position_embeddings=2048, base=10000, scaling_factor=1.0, beta_fast=2, beta_slow=1):
    # sheryc/resonance_rope src/models/components/positional_embedding/rotary_resonance.py,
    # ResonanceYaRNScaledRotaryEmbedding._register_buffers (attn_factor 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (scaling_factor * pos_freqs)
    low, high = find_correction_range(beta_fast, beta_slow, dim, base, max_position_embeddings)
    inv_freq_mask = 1 - linear_ramp_mask(low, high, dim // 2).float()
    inv_freq = inv_freq_interpolation * (1 - inv_freq_mask) + inv_freq_extrapolation * inv_freq_mask
    return ref_resonance_register(inv_freq), float(get_mscale(scaling_factor) * 1)


def ref_resonance_yarn_llama(
    dim, base=10000, scale=1, original_max_position_embeddings=2048, extrapolation_factor=1, attn_factor=1
):
    # sheryc/resonance_rope llama_finetuning/scaled_rope/LlamaYaRNScaledResonanceRotaryEmbedding.py,
    # LlamaYaRNScaledResonanceRotaryEmbedding.yarn (beta_fast 32, beta_slow 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (scale * pos_freqs)
    low, high = find_correction_range(32, 1, dim, base, original_max_position_embeddings)
    inv_freq_mask = (1 - linear_ramp_mask(low, high, dim // 2).float()) * extrapolation_factor
    inv_freq = inv_freq_interpolation * (1 - inv_freq_mask) + inv_freq_extrapolation * inv_freq_mask
    return ref_resonance_register(inv_freq), float(get_mscale(scale) * attn_factor)


# --- parity ---------------------------------------------------------------------------------

factors = st.one_of(st.sampled_from([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]), st.floats(0.25, 64.0))
stretches = st.one_of(st.sampled_from([1.0, 2.0, 4.0, 8.0, 16.0]), st.floats(1.0, 64.0))


def ours(rope: dict, geo: dict, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    inv_freq, scale = spec_frequencies(parse_rope(rope, **geo), seq_len)
    assert inv_freq.dtype == torch.float32
    assert inv_freq.shape == (int(geo["head_dim"] * geo["partial_rotary_factor"]) // 2,)
    return inv_freq, scale


def assert_same(got: tuple[torch.Tensor, float], expected: tuple[torch.Tensor, float]) -> None:
    torch.testing.assert_close(got[0], expected[0].float(), rtol=RTOL, atol=0)
    assert got[1] == pytest.approx(float(expected[1]), rel=RTOL)


def rotary_dim(geo: dict) -> int:
    return int(geo["head_dim"] * geo["partial_rotary_factor"])


@EXAMPLES
@given(geo=geometry(), alpha=factors)
def test_ntk_matches_the_yarn_repository(geo, alpha):
    expected = ref_ntk(rotary_dim(geo), geo["rope_theta"], alpha), 1.0
    assert_same(ours({"rope_type": "ntk", "alpha": alpha}, geo), expected)


@st.composite
def betas(draw):
    fast = draw(st.one_of(st.just(32.0), st.floats(1.0, 128.0)))
    return fast, draw(st.one_of(st.just(1.0), st.floats(0.05, fast)))


@EXAMPLES
@given(geo=geometry(), finetuned=st.booleans(), data=st.data())
def test_dynamic_yarn_matches_the_yarn_repository_at_every_length(geo, finetuned, data):
    """A fresh source module per length (ropekit is stateless): not fine-tuned, its cache starts at the
    original length; fine-tuned at M > L, at M, and ropekit's factor is M / L."""
    original = data.draw(st.integers(128, 65536))
    trained = data.draw(st.integers(original, 16 * original)) if finetuned else original
    beta_fast, beta_slow = data.draw(betas())
    seq_len = data.draw(seq_lens(trained))
    source = RefDynamicYaRN(
        rotary_dim(geo),
        max_position_embeddings=trained,
        base=geo["rope_theta"],
        original_max_position_embeddings=original,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        finetuned=finetuned,
    )
    rope = {
        "rope_type": "dynamic_yarn",
        "original_max_position_embeddings": original,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
    }
    if finetuned:
        rope["factor"] = trained / original
    # ropekit's seq_len None is the trained length, where the source's start state holds.
    assert_same(ours(rope, geo, seq_len), source.forward(trained if seq_len is None else seq_len))


@EXAMPLES
@given(geo=geometry(), factor=factors, data=st.data())
def test_ntk_by_parts_matches_the_yarn_repository(geo, factor, data):
    original = data.draw(st.integers(128, 300_000))
    weights = st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 1.0))
    ntk_factor, extrapolation_factor = data.draw(weights), data.draw(weights)
    expected = ref_part_ntk(
        rotary_dim(geo),
        base=geo["rope_theta"],
        scale=factor,
        ntk_factor=ntk_factor,
        extrapolation_factor=extrapolation_factor,
        original_max_position_embeddings=original,
    )
    rope = {
        "rope_type": "ntk_by_parts",
        "factor": factor,
        "original_max_position_embeddings": original,
        "ntk_factor": ntk_factor,
        "extrapolation_factor": extrapolation_factor,
    }
    assert_same(ours(rope, geo, data.draw(seq_lens(original))), (expected, 1.0))


@EXAMPLES
@given(geo=geometry(), factor=factors, exponent=st.one_of(st.just(0.75), st.floats(0.05, 4.0)))
def test_ntk_mixed_matches_bojones_patch(geo, factor, exponent):
    expected = ref_ntk_rope_mixed(rotary_dim(geo), geo["rope_theta"], k=factor, b=exponent), 1.0
    assert_same(ours({"rope_type": "ntk_mixed", "factor": factor, "exponent": exponent}, geo), expected)


@EXAMPLES
@given(
    geo=geometry(),
    variant=st.sampled_from(["default", "ntk", "yarn", "yarn_llama", "dynamic_yarn"]),
    factor=stretches,
    data=st.data(),
)
def test_resonance_matches_sheryc_resonance_rope(geo, variant, factor, data):
    """Each Resonance class of the source against ``resonance`` over the matching ropekit rope."""
    dim, base, trained = rotary_dim(geo), geo["rope_theta"], geo["max_position_embeddings"]
    seq_len = data.draw(seq_lens(trained))
    if variant == "default":  # src/.../rotary_resonance.py, ResonanceRotaryEmbedding._register_buffers
        inner = {"rope_type": "default"}
        expected = ref_resonance_register(1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))), 1.0
    elif variant == "ntk":  # ResonanceNTKScaledRotaryEmbedding.__init__: NTK's base, then the above
        inner = {"rope_type": "ntk", "alpha": factor}
        expected = ref_resonance_register(ref_ntk(dim, base, factor)), 1.0
    elif variant == "yarn":  # ResonanceYaRNScaledRotaryEmbedding: betas 2 and 1 over max_position_embeddings
        inner = {"rope_type": "yarn", "factor": factor, "beta_fast": 2.0, "beta_slow": 1.0}
        expected = ref_resonance_yarn(dim, trained, base, factor)
    elif variant == "yarn_llama":  # llama_finetuning's LlamaYaRNScaledResonanceRotaryEmbedding
        original = data.draw(st.integers(128, trained))
        inner = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
        expected = ref_resonance_yarn_llama(dim, base, factor, original)
    else:  # llama_finetuning's LlamaDynamicYaRNScaledResonanceRotaryEmbedding, not fine-tuned
        inner = {"rope_type": "dynamic_yarn"}
        source = RefDynamicYaRN(dim, trained, base, original_max_position_embeddings=trained, resonance=True)
        expected = source.forward(trained if seq_len is None else seq_len)
    assert_same(ours({"rope_type": "resonance", "rope": inner}, geo, seq_len), expected)


# --- properties -----------------------------------------------------------------------------

GEO = {"head_dim": 64, "rope_theta": 1e5, "max_position_embeddings": 8192}


def freqs(rope, seq_len=None, **geo):
    return spec_frequencies(parse_rope(rope, **{**GEO, **geo}), seq_len)


@EXAMPLES
@given(geo=geometry())
def test_ntk_with_alpha_one_is_default(geo):
    torch.testing.assert_close(
        spec_frequencies(parse_rope({"rope_type": "ntk", "alpha": 1.0}, **geo))[0],
        spec_frequencies(parse_rope(None, **geo))[0],
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("rope_type", ["ntk", "ntk_mixed"])
@pytest.mark.parametrize("stretch", [0.5, 2.0, 8.0, 64.0])
def test_ntk_and_mixed_slow_the_slowest_pair_by_the_stretch(rope_type, stretch):
    """Why ``ntk:S`` and ``ntk_mixed:S`` stretch the context by S: the longest wavelength grows S times."""
    rope = preset(rope_type, stretch, **GEO)
    base, scaled = freqs(None)[0], freqs(rope)[0]
    assert float(base[-1] / scaled[-1]) == pytest.approx(stretch, rel=1e-5)
    assert float(base[0] / scaled[0]) == pytest.approx(1.0 if rope_type == "ntk" else stretch ** ((1 / 32) ** 0.75))
    assert torch.all(scaled <= base * (1 + 1e-6)) == (stretch >= 1)


@EXAMPLES
@given(geo=geometry())
def test_ntk_by_parts_and_ntk_mixed_with_factor_one_are_default(geo):
    default = spec_frequencies(parse_rope(None, **geo))[0]
    for rope in ({"rope_type": "ntk_by_parts", "factor": 1.0}, {"rope_type": "ntk_mixed", "factor": 1.0}):
        inv_freq, scale = spec_frequencies(parse_rope(rope, **geo))
        torch.testing.assert_close(inv_freq, default, rtol=RTOL, atol=0)
        assert scale == 1.0


def test_ntk_by_parts_keeps_fast_pairs_and_interpolates_slow_ones():
    base = freqs(None)[0]
    rope = {"rope_type": "ntk_by_parts", "factor": 4.0}
    scaled, scale = freqs(rope)
    turns = 8192 * base / (2 * math.pi)
    assert scale == 1.0
    fast, slow = turns > 16 * 1.5, turns < 0.75 / 1.5  # clear of the rounded ramp bounds
    assert fast.sum() > 0 and slow.sum() > 0
    torch.testing.assert_close(scaled[fast], base[fast], rtol=0, atol=0)
    torch.testing.assert_close(scaled[slow], base[slow] / 4.0)
    # Without the NTK or the extrapolation weight it is linear interpolation everywhere.
    linear = freqs({**rope, "ntk_factor": 0.0, "extrapolation_factor": 0.0})[0]
    torch.testing.assert_close(linear, freqs({"rope_type": "linear", "factor": 4.0})[0], rtol=RTOL, atol=0)


@pytest.mark.parametrize("seq_len", [None, 1, 100, 4096, 8191, 8192])
def test_dynamic_yarn_at_or_below_original_length_is_default(seq_len):
    inv_freq, scale = freqs({"rope_type": "dynamic_yarn"}, seq_len)
    torch.testing.assert_close(inv_freq, freqs(None)[0], rtol=0, atol=0)
    assert scale == 1.0


@pytest.mark.parametrize("seq_len", [8193, 12000, 32768, 100_000])
def test_dynamic_yarn_past_original_length_is_yarn_at_that_scale_and_stateless(seq_len):
    yarn = freqs({"rope_type": "yarn", "factor": seq_len / 8192}, seq_len)
    first = freqs({"rope_type": "dynamic_yarn"}, seq_len)
    freqs({"rope_type": "dynamic_yarn"}, 4 * seq_len)  # a longer call changes nothing after it
    again = freqs({"rope_type": "dynamic_yarn"}, seq_len)
    for got in (first, again):
        torch.testing.assert_close(got[0], yarn[0], rtol=0, atol=0)
        assert got[1] == yarn[1] == pytest.approx(0.1 * math.log(seq_len / 8192) + 1)


def test_dynamic_yarn_with_factor_holds_yarn_up_to_factor_times_original():
    rope = {"rope_type": "dynamic_yarn", "factor": 4.0}
    for seq_len, scale in ((None, 4.0), (100, 4.0), (8192, 4.0), (32768, 4.0), (65536, 8.0)):
        got, yarn = freqs(rope, seq_len), freqs({"rope_type": "yarn", "factor": scale})
        torch.testing.assert_close(got[0], yarn[0], rtol=0, atol=0)
        assert got[1] == yarn[1] == pytest.approx(0.1 * math.log(scale) + 1)


@EXAMPLES
@given(geo=geometry(), data=st.data())
def test_resonance_of_default_has_whole_wavelengths_within_half_a_token(geo, data):
    seq_len = data.draw(seq_lens(geo["max_position_embeddings"]))
    base = spec_frequencies(parse_rope(None, **geo))[0].double()
    inv_freq, scale = spec_frequencies(parse_rope({"rope_type": "resonance"}, **geo), seq_len)
    wavelength, original = 2 * math.pi / inv_freq.double(), 2 * math.pi / base
    torch.testing.assert_close(wavelength, wavelength.round(), rtol=RTOL, atol=0)  # whole numbers
    assert torch.all((wavelength - original).abs() <= 0.5 + RTOL * original)
    assert scale == 1.0


@pytest.mark.parametrize(
    "inner",
    [
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [1.0 + i for i in range(32)]},
        {"rope_type": "ntk", "alpha": 4.0},
        {"rope_type": "dynamic_yarn"},
        {"rope_type": "ntk_by_parts", "factor": 4.0},
        {"rope_type": "ntk_mixed", "factor": 4.0},
    ],
)
@pytest.mark.parametrize("seq_len", [None, 4096, 32768])
def test_resonance_rounds_any_rope_at_the_same_length_and_keeps_its_scale(inner, seq_len):
    inner_freq, inner_scale = freqs(inner, seq_len)
    inv_freq, scale = freqs({"rope_type": "resonance", "rope": inner}, seq_len)
    assert scale == inner_scale
    torch.testing.assert_close(inv_freq, 2 * math.pi / torch.round(2 * math.pi / inner_freq), rtol=0, atol=0)


def test_resonance_spec_is_frozen_hashable_and_round_trips():
    rope = {
        "rope_type": "resonance",
        "rope": {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 32},
    }
    spec = parse_rope(rope, **GEO)
    assert spec.scaling.rope.short_factor == (1.0,) * 32  # tuples inside: hashable
    assert spec.original_length == 8192  # the rounded rope's, filled from the model
    assert {spec: 1}[parse_rope(rope, **GEO)] == 1
    assert rope_table(spec, 16) is rope_table(parse_rope(rope, **GEO), 16)  # a cache key: equal specs hash alike
    with pytest.raises(AttributeError):
        spec.scaling.rope = None
    data = spec.to_dict()
    assert data["rope"] == {**rope["rope"], "original_max_position_embeddings": 8192}
    assert "rope_theta" not in data["rope"]
    assert parse_rope(data, **GEO) == spec
    assert RopeSpec.from_record(spec.to_record()) == spec
    plain = parse_rope({"rope_type": "resonance"}, **GEO)
    assert plain.to_dict() == {"rope_type": "resonance", "rope_theta": 1e5}
    assert parse_rope({"rope_type": "resonance", "rope": {"rope_type": "default"}}, **GEO) == plain
    inner = parse_rope({"rope_type": "resonance", "rope": {"rope_type": "yarn", "factor": 2.0}}, **GEO)
    assert inner.scaling.rope.original_max_position_embeddings == 8192 == inner.original_length


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "ntk", "alpha": 3.0},
        {"rope_type": "dynamic_yarn", "factor": 2.0, "original_max_position_embeddings": 4096, "beta_fast": 16.0},
        {"rope_type": "ntk_by_parts", "factor": 4.0, "ntk_factor": 0.5, "extrapolation_factor": 0.0},
        {"rope_type": "ntk_mixed", "factor": 12.0, "exponent": 0.5},
    ],
)
def test_each_method_round_trips_through_to_dict(rope):
    spec = parse_rope(rope, **GEO)
    assert parse_rope(spec.to_dict(), **GEO) == spec
    assert hash(spec) == hash(parse_rope(spec.to_dict(), **GEO))


# --- validation -----------------------------------------------------------------------------

BAD = {
    "ntk unknown key": ({"rope_type": "ntk", "alpha": 2.0, "factor": 2.0}, ["unknown key 'factor'", "alpha"]),
    "ntk missing alpha": ({"rope_type": "ntk"}, ["required key 'alpha' is missing"]),
    "ntk zero alpha": ({"rope_type": "ntk", "alpha": 0}, ["alpha=0", "> 0"]),
    "ntk negative alpha": ({"rope_type": "ntk", "alpha": -2.0}, ["alpha=-2.0"]),
    "ntk nan alpha": ({"rope_type": "ntk", "alpha": math.nan}, ["alpha=nan", "finite"]),
    "ntk string alpha": ({"rope_type": "ntk", "alpha": "4"}, ["alpha='4'"]),
    "dynamic_yarn factor below 1": ({"rope_type": "dynamic_yarn", "factor": 0.5}, ["factor=0.5", ">= 1"]),
    "dynamic_yarn zero factor": ({"rope_type": "dynamic_yarn", "factor": 0}, ["factor=0"]),
    "dynamic_yarn betas reversed": (
        {"rope_type": "dynamic_yarn", "beta_fast": 1, "beta_slow": 32},
        ["beta_fast", "beta_slow"],
    ),
    "dynamic_yarn source key": (
        {"rope_type": "dynamic_yarn", "finetuned": True},
        ["unknown key 'finetuned'", "factor, original_max_position_embeddings, beta_fast, beta_slow"],
    ),
    "dynamic_yarn fractional length": (
        {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 4096.5},
        ["original_max_position_embeddings=4096.5", "integer"],
    ),
    "ntk_by_parts missing factor": ({"rope_type": "ntk_by_parts"}, ["required key 'factor' is missing"]),
    "ntk_by_parts negative factor": ({"rope_type": "ntk_by_parts", "factor": -4.0}, ["factor=-4.0"]),
    "ntk_by_parts weight above 1": (
        {"rope_type": "ntk_by_parts", "factor": 4.0, "ntk_factor": 1.5},
        ["ntk_factor=1.5", "between 0 and 1"],
    ),
    "ntk_by_parts negative weight": (
        {"rope_type": "ntk_by_parts", "factor": 4.0, "extrapolation_factor": -0.1},
        ["extrapolation_factor=-0.1"],
    ),
    "ntk_by_parts yarn key": ({"rope_type": "ntk_by_parts", "factor": 4.0, "beta_fast": 32}, ["'beta_fast'"]),
    "ntk_mixed missing factor": ({"rope_type": "ntk_mixed"}, ["required key 'factor' is missing"]),
    "ntk_mixed zero factor": ({"rope_type": "ntk_mixed", "factor": 0.0}, ["factor=0.0"]),
    "ntk_mixed zero exponent": ({"rope_type": "ntk_mixed", "factor": 4.0, "exponent": 0}, ["exponent=0"]),
    "ntk_mixed source name": ({"rope_type": "ntk_mixed", "k": 12}, ["unknown key 'k'", "factor, exponent"]),
    "resonance unknown key": ({"rope_type": "resonance", "factor": 2.0}, ["unknown key 'factor'", "rope"]),
    "resonance inner unknown key": (
        {"rope_type": "resonance", "rope": {"rope_type": "yarn", "factor": 2.0, "factr": 2.0}},
        ["rope_type 'resonance'", "rope (rope_type 'yarn')", "unknown key 'factr'", "beta_fast"],
    ),
    "resonance inner missing key": (
        {"rope_type": "resonance", "rope": {"rope_type": "linear"}},
        ["rope (rope_type 'linear')", "required key 'factor' is missing"],
    ),
    "resonance inner bad value": (
        {"rope_type": "resonance", "rope": {"rope_type": "ntk", "alpha": 0}},
        ["rope (rope_type 'ntk')", "alpha=0"],
    ),
    "resonance inner unknown type": (
        {"rope_type": "resonance", "rope": {"rope_type": "xpos"}},
        ["rope: rope_type='xpos' is not supported"],
    ),
    "resonance inner theta": (
        {"rope_type": "resonance", "rope": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e6}},
        ["'rope_theta' belongs beside rope_type 'resonance'"],
    ),
    "resonance of resonance": (
        {"rope_type": "resonance", "rope": {"rope_type": "resonance"}},
        ["resonance of resonance is refused"],
    ),
    "resonance rope not a dict": ({"rope_type": "resonance", "rope": "yarn"}, ["rope='yarn' is not allowed", "dict"]),
    "resonance inner geometry": (
        {"rope_type": "resonance", "rope": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}},
        ["short_factor has 1 entries", "32"],
    ),
}


@pytest.mark.parametrize(("rope", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_method_configs_name_the_key(rope, expected):
    with pytest.raises(RopeConfigError) as err:
        parse_rope(rope, **GEO)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


@pytest.mark.parametrize("rope_type", ["ntk", "ntk_by_parts"])
def test_theta_exponent_types_need_two_pairs(rope_type):
    rope = {"rope_type": rope_type, **({"alpha": 2.0} if rope_type == "ntk" else {"factor": 2.0})}
    with pytest.raises(RopeConfigError, match=f"rotary dim 2; {rope_type} needs an even number >= 4"):
        parse_rope(rope, head_dim=2, rope_theta=1e4, max_position_embeddings=128)


def test_resonance_refuses_a_wavelength_that_rounds_to_zero():
    rope = {"rope_type": "resonance", "rope": {"rope_type": "linear", "factor": 0.01}}
    with pytest.raises(RopeConfigError, match="rounds to 0"):
        freqs(rope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ntk:x", "'x' is not understood; expected a number"),
        ("ntk_mixed:", None),  # an empty argument is the default
        ("resonance:4", "'4' is not understood; expected the rope to round as TYPE[:ARGS], e.g. resonance:yarn:4"),
        ("resonance:yarn:x", "'yarn:x' is not understood; expected the rope to round"),
        ("resonance:xpos:2", "rope 'xpos:2' is not understood"),
    ],
)
def test_preset_arguments(text, expected):
    if expected is None:
        assert parse_preset(text) == (text.rstrip(":"), None)
        return
    with pytest.raises(RopeConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_preset(text)


# --- presets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ntk", {"rope_type": "ntk", "alpha": 2.0}),
        ("ntk:4", {"rope_type": "ntk", "alpha": 4.0}),
        ("dynamic_yarn", {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 8192}),
        ("dynamic_yarn:2", {"rope_type": "dynamic_yarn", "factor": 2.0, "original_max_position_embeddings": 8192}),
        ("ntk_by_parts:4", {"rope_type": "ntk_by_parts", "factor": 4.0, "original_max_position_embeddings": 8192}),
        ("ntk_mixed:8", {"rope_type": "ntk_mixed", "factor": 8.0}),
        ("resonance", {"rope_type": "resonance"}),
        ("resonance:default", {"rope_type": "resonance"}),
        (
            "resonance:yarn:4",
            {
                "rope_type": "resonance",
                "rope": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
            },
        ),
        ("resonance:ntk:4", {"rope_type": "resonance", "rope": {"rope_type": "ntk", "alpha": 4.0}}),
    ],
)
def test_presets_through_model_ropes(text, expected):
    ropes = model_ropes(SMOLLM2, text)
    spec = ropes["full_attention"]
    assert spec is ropes["sliding_attention"] or spec == ropes["sliding_attention"]
    assert spec.to_dict() == {**expected, "rope_theta": 1e5}
    inv_freq, _ = spec_frequencies(spec, 16384)
    assert inv_freq.shape == (32,) and torch.all(torch.isfinite(inv_freq))


def test_resonance_preset_rounds_the_preset_of_each_type():
    for text in ("linear:2", "dynamic:2", "yarn:2", "longrope:2", "llama3:8", "dynamic_yarn", "ntk_mixed:4"):
        spec = model_ropes(SMOLLM2, f"resonance:{text}")["full_attention"]
        inner = model_ropes(SMOLLM2, text)["full_attention"]
        assert spec.scaling.rope == inner.scaling
        wavelength = 2 * math.pi / spec_frequencies(spec, 16384)[0].double()
        torch.testing.assert_close(wavelength, wavelength.round(), rtol=RTOL, atol=0)


def test_bad_preset_values_are_refused_at_parse_time():
    with pytest.raises(RopeConfigError, match="alpha=0"):
        model_ropes(SMOLLM2, "ntk:0")
    with pytest.raises(RopeConfigError, match="factor=0.5"):
        model_ropes(SMOLLM2, "dynamic_yarn:0.5")
    with pytest.raises(RopeConfigError, match="the default rope takes no factor"):
        model_ropes(SMOLLM2, "resonance:default:2")
    with pytest.raises(RopeConfigError, match="resonance cannot round the preset 'resonance'"):
        model_ropes(SMOLLM2, "resonance:resonance")
    with pytest.raises(RopeConfigError, match="not 4.0"):
        preset("resonance", 4.0, **GEO)


def test_unnamed_method_dicts_are_named_like_their_presets():
    assert rope_name({"rope_type": "ntk", "alpha": 4.0}) == "ntk:4"
    assert rope_name({"rope_type": "dynamic_yarn"}) == "dynamic_yarn"
    assert rope_name({"rope_type": "resonance", "rope": {"rope_type": "yarn", "factor": 4}}) == "resonance:yarn:4"
    assert rope_name({"rope_type": "resonance"}) == "resonance"
