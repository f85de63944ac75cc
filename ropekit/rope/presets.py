"""Ready-made ``rope_scaling`` dicts that stretch a model's trained context by ``factor``.

Presets are plain data in the upstream form, so they can be printed, stored in a results file
and read back by :func:`ropekit.rope.parse_rope` like any checkpoint's config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .config import Default, RopeConfigError, RopeSpec, Yarn
from .frequencies import yarn_ramp_bounds
from .registry import get_rope, rope_types


def preset(
    rope_type: str,
    factor: float | None = None,
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    partial_rotary_factor: float = 1.0,
) -> dict[str, Any]:
    """The ``rope_scaling`` dict of ``rope_type`` for a context ``factor`` times the trained one
    (``max_position_embeddings``), for a head of the given geometry; ``factor`` None is the
    type's default (2 for the scalings). Each type's preset is part of its registry record."""
    record = get_rope(rope_type)
    if record is None or record.preset is None:
        with_preset = [name for name, r in rope_types().items() if r.preset is not None]
        raise RopeConfigError(f"preset {rope_type!r} is not known; expected one of {', '.join(with_preset)}")
    base = RopeSpec(Default(), rope_theta, head_dim, max_position_embeddings, partial_rotary_factor)
    return record.preset(base, factor)


def _factor(rope_type: str, factor: float | None) -> float:
    """A preset's factor, 2 when not given (parse_rope checks the value like any config's)."""
    return 2.0 if factor is None else factor


# One preset per type, ``(spec, factor) -> rope dict``: ``spec`` is the rope being stretched (its
# theta, head and trained length ``spec.original_length``).


def default_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """The default rope stretches nothing: a factor other than 1 is refused, not dropped."""
    if factor not in (None, 1, 1.0):
        raise RopeConfigError(f"the default rope takes no factor (got {factor!r}); use linear, yarn, ... to stretch")
    return {"rope_type": "default"}


def linear_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    return {"rope_type": "linear", "factor": _factor("linear", factor)}


def dynamic_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    return {"rope_type": "dynamic", "factor": _factor("dynamic", factor)}


def yarn_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """The paper's defaults: beta_fast 32, beta_slow 1, temperature from the factor."""
    return {
        "rope_type": "yarn",
        "factor": _factor("yarn", factor),
        "original_max_position_embeddings": spec.original_length,
    }


def proportional_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """p-RoPE over the rope's pairs (its partial_rotary_factor, 1 for a full rope), every frequency divided
    by the factor (1 when not given: p-RoPE itself stretches nothing)."""
    rope: dict[str, Any] = {"rope_type": "proportional", "factor": 1.0 if factor is None else factor}
    if spec.partial_rotary_factor != 1.0:
        rope["partial_rotary_factor"] = spec.partial_rotary_factor
    return rope


def llama3_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """Llama 3.1's bands (low_freq_factor 1, high_freq_factor 4)."""
    return {
        "rope_type": "llama3",
        "factor": _factor("llama3", factor),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": spec.original_length,
    }


def longrope_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """short_factor all 1 (unchanged inside the trained context) and long_factor the NTK-by-parts
    ramp YaRN uses (1 for fast dimensions, ``factor`` for slow ones). LongRoPE searches its factors
    per model; this is the search's usual starting point, not a result."""
    factor = _factor("longrope", factor)
    original = spec.original_length
    ramp_spec = dataclasses.replace(spec, scaling=Yarn(factor=factor, original_max_position_embeddings=original))
    low, high = yarn_ramp_bounds(ramp_spec)
    n = ramp_spec.rotary_dim // 2
    interpolate = torch.clamp((torch.arange(n, dtype=torch.float64) - low) / max(high - low, 1e-3), 0, 1)
    return {
        "rope_type": "longrope",
        "short_factor": [1.0] * n,
        "long_factor": [round(1 + (factor - 1) * float(w), 6) for w in interpolate],
        "factor": factor,
        "original_max_position_embeddings": original,
    }


def preset_from_text(text: str, **geometry: Any) -> dict[str, Any]:
    """``TYPE`` or ``TYPE:FACTOR`` (``yarn:4``) as its :func:`preset` for the given geometry."""
    rope_type, factor = parse_preset(text)
    return preset(rope_type, factor, **geometry)


def parse_preset(text: str) -> tuple[str, Any]:
    """``TYPE[:ARGS]`` into the type and its preset's argument: the number after the colon (a
    factor), or what the type's ``arguments`` makes of the text; None when omitted (the type's
    default)."""
    rope_type, _, args = text.partition(":")
    record = get_rope(rope_type)
    if record is None or record.preset is None:
        names = [name for name, r in rope_types().items() if r.preset is not None]
        raise RopeConfigError(
            f"rope {text!r} is not understood; expected TYPE[:FACTOR] with TYPE one of {', '.join(names)}, "
            "'native', a JSON object, or the path of a config.json"
        )
    if not args:
        return rope_type, None
    try:
        return rope_type, float(args) if record.arguments is None else record.arguments(args)
    except ValueError as err:
        expected = "a number" if record.arguments is None else str(err)
        raise RopeConfigError(f"rope {text!r}: {args!r} is not understood; expected {expected}") from None
