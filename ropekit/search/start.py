"""Where LongRoPE's search starts (microsoft/LongRoPE ``evolution/search.py``, no ``--init-factors``): the
factors of YaRN's NTK-by-parts ramp (``rope/yarn.py``'s ``inv_freq_mask``): 1 for dimensions that rotate
more than ``beta_fast`` times over the trained context, the length scale for those under ``beta_slow``,
linear between; in float32, as LongRoPE takes them from a torch buffer. Its Llama betas (32, 1) are the
defaults; it uses (128, 2) for Mistral."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..rope import RopeSpec
from ..rope.config import Yarn
from ..rope.frequencies import linear_ramp, yarn_ramp_bounds


def yarn_start(spec: RopeSpec, scale: float, *, beta_fast: float = 32.0, beta_slow: float = 1.0) -> np.ndarray:
    """LongRoPE's initial factors for a rope of ``spec``'s geometry stretched ``scale`` times (float32 [n])."""
    original = spec.original_length
    yarn = Yarn(factor=scale, original_max_position_embeddings=original, beta_fast=beta_fast, beta_slow=beta_slow)
    low, high = yarn_ramp_bounds(dataclasses.replace(spec, scaling=yarn))
    mask = 1 - linear_ramp(low, high, spec.rotary_dim // 2)  # 1: extrapolate (keep), 0: interpolate
    return (scale * (1 - mask) + 1.0 * mask).numpy()
