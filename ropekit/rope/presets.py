"""Ready-made ``rope_scaling`` dicts that stretch a model's trained context by ``factor``.

Presets are plain data in the upstream form, so they can be printed, stored in a results file
and read back by :func:`ropekit.rope.parse_rope` like any checkpoint's config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .config import SCALINGS, RopeConfigError, RopeSpec, Yarn, parse_rope, rope_from_config
from .frequencies import yarn_ramp_bounds


def preset(
    rope_type: str,
    factor: float = 2.0,
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    partial_rotary_factor: float = 1.0,
) -> dict[str, Any]:
    """The ``rope_scaling`` dict of ``rope_type`` for a context ``factor`` times the trained one.

    * linear / dynamic: ``{"factor": factor}``;
    * yarn: the paper's defaults (beta_fast 32, beta_slow 1, temperature from factor);
    * llama3: Llama 3.1's bands (low_freq_factor 1, high_freq_factor 4);
    * longrope: short_factor all 1 (unchanged inside the trained context) and long_factor the
      NTK-by-parts ramp YaRN uses (1 for fast dimensions, ``factor`` for slow ones). LongRoPE
      searches its factors per model; this is the search's usual starting point, not a result.
    """
    original = max_position_embeddings
    if rope_type == "default":
        return {"rope_type": "default"}
    if rope_type in ("linear", "dynamic"):
        return {"rope_type": rope_type, "factor": factor}
    if rope_type == "yarn":
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    if rope_type == "llama3":
        return {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": original,
        }
    if rope_type == "longrope":
        ramp_spec = RopeSpec(
            Yarn(factor=factor, original_max_position_embeddings=original),
            rope_theta,
            head_dim,
            max_position_embeddings,
            partial_rotary_factor,
        )
        low, high = yarn_ramp_bounds(ramp_spec)
        n = ramp_spec.rotary_dim // 2
        interpolate = torch.clamp((torch.arange(n, dtype=torch.float64) - low) / max(high - low, 1e-3), 0, 1)
        long_factor = [round(1 + (factor - 1) * float(w), 6) for w in interpolate]
        return {
            "rope_type": "longrope",
            "short_factor": [1.0] * n,
            "long_factor": long_factor,
            "factor": factor,
            "original_max_position_embeddings": original,
        }
    raise RopeConfigError(f"preset {rope_type!r} is not known; expected one of {', '.join(SCALINGS)}")


_NAME = re.compile(r"^[\w.:+-]+$")


def named_ropes(
    text: str,
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    partial_rotary_factor: float = 1.0,
) -> dict[str, RopeSpec]:
    """Read one command-line rope argument into named specs. Forms, each optionally ``NAME=...``:

    * ``TYPE`` or ``TYPE:FACTOR`` (``yarn:4``): :func:`preset` for the given geometry, factor 2 by default;
    * a JSON object (``'{"rope_type": "yarn", "factor": 4}'``), read as data with the given geometry;
    * a path to a model's ``config.json`` (or its folder): that model's own rope, with its own
      geometry, one entry per layer type when they differ (``NAME/sliding_attention``).
    """
    name, value = rope_argument(text)
    geometry = {
        "head_dim": head_dim,
        "rope_theta": rope_theta,
        "max_position_embeddings": max_position_embeddings,
        "partial_rotary_factor": partial_rotary_factor,
    }
    if isinstance(value, dict):
        return {name or describe_rope(value): parse_rope(value, **geometry)}
    if Path(value).exists():
        specs = {lt: s for lt, s in rope_from_config(value).items() if s is not None}
        name = name or Path(value).resolve().with_suffix("").name
        if len(set(specs.values())) == 1:
            return {name: next(iter(specs.values()))}
        return {f"{name}/{lt}": s for lt, s in specs.items()}
    spec = parse_rope(preset_from_text(value, **geometry), **geometry)
    default_name = value if ":" in value or value == "default" else f"{value}:2"
    return {name or default_name: spec}


def preset_from_text(text: str, **geometry: Any) -> dict[str, Any]:
    """``TYPE`` or ``TYPE:FACTOR`` (``yarn:4``; factor 2 when omitted) as its :func:`preset`."""
    rope_type, _, factor = text.partition(":")
    if rope_type not in SCALINGS:
        raise RopeConfigError(
            f"rope {text!r} is not understood; expected TYPE[:FACTOR] with TYPE one of {', '.join(SCALINGS)}, "
            "a JSON object, or the path of a config.json"
        )
    try:
        value = float(factor) if factor else 2.0
    except ValueError:
        raise RopeConfigError(f"rope {text!r}: factor {factor!r} is not a number") from None
    return preset(rope_type, value, **geometry)


def rope_argument(text: str) -> tuple[str, str | dict]:
    """Split a command-line rope ``[NAME=]ROPE`` into its name ("" when unnamed) and the rope:
    the parsed object when it is JSON, else the stripped text (a preset or a path)."""
    name, sep, value = text.partition("=")
    if not sep or not _NAME.match(name):
        name, value = "", text
    value = value.strip()
    if not value.startswith("{"):
        return name, value
    try:
        return name, json.loads(value)
    except json.JSONDecodeError as err:
        raise RopeConfigError(f"rope {text!r} is not valid JSON: {err}") from None


def describe_rope(rope: Any) -> str:
    """A short name for an unnamed rope dict: its type, and ``:factor`` when it has one."""
    if not isinstance(rope, dict):
        return str(rope)
    factor = rope.get("factor")
    return str(rope.get("rope_type", rope.get("type", "default"))) + (f":{factor:g}" if factor else "")
