"""Inverse frequencies and attention scale of each rope type: one pure function per type.

Every function has the signature ``(spec, seq_len) -> (inv_freq, attention_scale)``:
``inv_freq`` is float32 ``[rotary_dim // 2]`` on the CPU, and ``attention_scale`` multiplies
cos and sin. ``seq_len`` is the length being evaluated; of the six only ``dynamic`` and
``longrope`` read it, and only through their argument (no cache, no call-order effects). The
arithmetic follows transformers' ``ROPE_INIT_FUNCTIONS`` operation by operation so that the
numbers agree to float32 rounding (tests/rope/test_frequencies.py holds the proof). The methods
beyond transformers' six (ntk, dynamic_yarn, ...) are in ``methods.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .config import RopeSpec, is_count, parse_rope
from .registry import get_rope


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    """theta ** (-2i / dim) for i in [0, dim / 2), as upstream computes it (int64 arange, then float32)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))


def default(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """RoPE as published (Su et al. 2021, RoFormer)."""
    return _base_inv_freq(spec.rope_theta, spec.rotary_dim), 1.0


def linear(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Position interpolation: positions / factor, i.e. every frequency / factor."""
    return _base_inv_freq(spec.rope_theta, spec.rotary_dim) / spec.scaling.factor, 1.0


def dynamic(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Dynamic NTK: theta grows with the evaluated length once it exceeds max_position_embeddings.

    Stateless, unlike transformers' ``dynamic_rope_update``, which keeps the largest length seen
    and so gives a short text different frequencies depending on what ran before it.
    """
    dim, trained = spec.rotary_dim, spec.max_position_embeddings
    length = trained if seq_len is None else max(seq_len, trained)
    factor = spec.scaling.factor
    theta = spec.rope_theta * ((factor * length / trained) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(theta, dim), 1.0


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature sqrt(1/t) = 0.1 ln(s) + 1 (paper eq. 22; DeepSeek's mscale form)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def correction_range(
    fast: float, slow: float, dim: int, theta: float, length: int, *, truncate: bool = True
) -> tuple[float, float]:
    """The dimension indices (low, high) between which a ramp blends from the pairs turning more than
    ``fast`` times over ``length`` tokens to those turning fewer than ``slow`` times.

    Pair index d of a rotary dim ``dim`` turns length / (2 pi theta^(2d/dim)) times, so the index of
    r rotations is dim ln(length / (2 pi r)) / (2 ln theta); ``truncate`` floors low and ceils high.
    Clamped to [0, dim - 1] as upstream (jquesnelle/yarn ``find_correction_range``; transformers).
    """

    def dim_of(rotations: float) -> float:
        return (dim * math.log(length / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = dim_of(fast), dim_of(slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def linear_ramp(low: float, high: float, n: int) -> torch.Tensor:
    """0 up to index ``low``, 1 from ``high``, linear between, over indices 0..n-1 (float32);
    upstream's ``linear_ramp_mask``, with its guard against a zero-width ramp."""
    if low == high:
        high += 0.001
    return torch.clamp((torch.arange(n, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_ramp_bounds(spec: RopeSpec) -> tuple[float, float]:
    """The dimension indices (low, high) between which YaRN blends interpolation into extrapolation.

    Dimension d completes original_length / wavelength(d) rotations over the trained context; those
    with more than beta_fast rotations keep their frequency, those with fewer than beta_slow are
    interpolated by factor (the paper's "NTK-by-parts", section 3.2).
    """
    s = spec.scaling
    return correction_range(
        s.beta_fast,
        s.beta_slow,
        spec.rotary_dim,
        spec.rope_theta,
        s.original_max_position_embeddings,
        truncate=s.truncate,
    )


def yarn(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """YaRN (arXiv:2309.00071): NTK-by-parts frequencies plus an attention temperature."""
    s, dim = spec.scaling, spec.rotary_dim
    if s.attention_factor is not None:
        attention = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim)
    else:
        attention = yarn_mscale(s.factor)
    ramp = linear_ramp(*yarn_ramp_bounds(spec), dim // 2)
    extrapolation = 1 - ramp  # 1 keeps the original frequency, 0 interpolates fully
    pos_freqs = spec.rope_theta ** (torch.arange(0, dim, 2).to(torch.float32) / dim)
    inv_freq = (1.0 / (s.factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention)


def longrope_factor(spec: RopeSpec) -> float:
    """LongRoPE's context factor: given, or max_position_embeddings / original (Phi-3)."""
    s = spec.scaling
    return s.factor if s.factor is not None else spec.max_position_embeddings / s.original_max_position_embeddings


def longrope(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """LongRoPE: short_factor up to the original length, long_factor past it (inclusive boundary
    on the short side, as Phi-3 and transformers); attention scale sqrt(1 + ln f / ln L_orig)."""
    s, dim = spec.scaling, spec.rotary_dim
    factor = longrope_factor(spec)
    if s.attention_factor is not None:
        attention = s.attention_factor
    elif factor <= 1.0:
        attention = 1.0
    else:
        attention = math.sqrt(1 + math.log(factor) / math.log(s.original_max_position_embeddings))
    long = seq_len is not None and seq_len > s.original_max_position_embeddings
    ext_factors = torch.tensor(s.long_factor if long else s.short_factor, dtype=torch.float32)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext_factors * spec.rope_theta**exponents), float(attention)


def llama3(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Llama 3.1: wavelengths shorter than L/high_freq_factor kept, longer than L/low_freq_factor
    divided by factor, a smooth blend between (Meta's reference `apply_scaling`)."""
    s = spec.scaling
    inv_freq = _base_inv_freq(spec.rope_theta, spec.rotary_dim)
    context = s.original_max_position_embeddings
    low_freq_wavelen = context / s.low_freq_factor
    high_freq_wavelen = context / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    if s.high_freq_factor == s.low_freq_factor:  # Llama 4's: no band to blend (its 0 / 0 is never selected)
        return scaled, 1.0
    smooth = (context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def proportional(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """p-RoPE (Barbero et al. 2024, arXiv:2410.06205; Gemma 4): the first
    ``int(partial_rotary_factor * head_dim // 2)`` pairs turn at theta ** (-2i / head_dim), the other
    pairs of the head get frequency 0 (cos 1, sin 0: not rotated); every frequency is divided by factor."""
    head_dim = spec.head_dim
    turning = int(spec.partial_rotary_factor * head_dim // 2)
    exponents = torch.arange(0, 2 * turning, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = torch.cat((1.0 / (spec.rope_theta**exponents), torch.zeros(head_dim // 2 - turning)))
    return inv_freq / spec.scaling.factor, 1.0


def spec_frequencies(spec: RopeSpec, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq, attention_scale) of a parsed spec at the evaluated length ``seq_len``."""
    if seq_len is not None and not is_count(seq_len):
        raise ValueError(f"seq_len={seq_len!r} is not allowed; expected a positive integer or None")
    return get_rope(spec.rope_type).frequencies(spec, seq_len)


def rope_frequencies(
    rope_scaling: Mapping[str, Any] | None,
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    seq_len: int | None = None,
    partial_rotary_factor: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Public entry (the stable API in ARCHITECTURE.md): a ``rope_scaling`` dict and the head geometry to
    ``(inv_freq float32 [rotary_dim // 2], attention_scale applied to cos and sin)``.

    Raises :class:`ropekit.RopeConfigError` for a configuration that is not valid.
    """
    spec = parse_rope(
        rope_scaling,
        head_dim=head_dim,
        rope_theta=rope_theta,
        max_position_embeddings=max_position_embeddings,
        partial_rotary_factor=partial_rotary_factor,
    )
    return spec_frequencies(spec, seq_len)
