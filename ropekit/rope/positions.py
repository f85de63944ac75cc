"""Ropes that act in attention: which position each query and key is rotated at, and how much each
query is scaled, as pure functions of the spec and the evaluated length.

A frequency-only type changes ``(inv_freq, attention_scale)``. The three types here keep the base
rope's frequencies (``frequencies.default``) and change the relative positions instead: a query i and
a key j less than ``window`` apart (``0 <= i - j < window``, the *near* region) are rotated as usual,
at i and j; farther apart (the *far* region) the query is rotated at ``query[i]`` and the key at
``key[j]`` (:class:`FarPositions`), so their relative position is ``query[i] - key[j]``:

* ``rerope`` (bojone/rerope ``rerope_patch.py``, https://kexue.fm/archives/9708): relative position
  ``min(i - j, W)``; far: the query rotated at W, the key not rotated (position 0).
* ``leaky_rerope`` (bojone/rerope ``leaky_rerope_patch.py``): far relative position
  ``W + (i - j - W) / k``; far: the query at ``(i + W (k - 1)) / k``, the key at ``j / k`` (the
  source's linear-scaled rope at ``position_ids + offset``, ``offset = W (k - 1)``).
* ``self_extend`` (datamllab/LongLM, Jin et al. 2024, arXiv:2401.01325): far relative position
  ``(i // G + W - W // G) - j // G``; far: the query at ``i // G + W - W // G``, the key at ``j // G``.

Each is one registry record whose ``attention`` gives :class:`FarPositions`; the decoder
(ropekit/models/decoder.py) rotates q and k twice and its kernels (ropekit/models/attention.py) compute both
regions block by block with one softmax, never a ``T x T`` matrix. Two query scalings live here as well: log-n
(``RopeSpec.log_n``, any type) and Llama 4's temperature tuning on NoPE layers (:class:`NopeTemperature`, a
layer-mix option).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from . import frequencies
from .checks import check_fields, integer, number
from .config import RopeConfigError, RopeSpec
from .registry import RopeType, get_rope


@dataclass(frozen=True, eq=False)
class FarPositions:
    """The far region of an attention-level rope at one length T: keys j with ``i - j >= window`` of
    query i see the query rotated at ``query[i]`` and the key at ``key[j]`` (float32 ``[T]``)."""

    window: int
    query: torch.Tensor
    key: torch.Tensor


# --- parameters: one frozen dataclass per type, the sources' own names ------------------------


@dataclass(frozen=True)
class ReRope:
    """ReRoPE: relative positions clipped at ``window`` (bojone's ``window``, 512 in its patch)."""

    rope_type: ClassVar[str] = "rerope"
    window: int

    def __post_init__(self) -> None:
        check_fields(self, integer, "window")


@dataclass(frozen=True)
class LeakyReRope:
    """Leaky ReRoPE: past ``window``, relative positions grow 1/``scaling_factor`` as fast (bojone's
    ``window`` and ``scaling_factor``, 512 and 16 in its patch)."""

    rope_type: ClassVar[str] = "leaky_rerope"
    window: int
    scaling_factor: float

    def __post_init__(self) -> None:
        check_fields(self, integer, "window")
        # 1 is the plain rope; below 1 positions past the window would grow faster than the distance.
        check_fields(self, number, "scaling_factor", minimum=1.0, strict=False)


@dataclass(frozen=True)
class SelfExtend:
    """Self-Extend: ``group_size`` (G) and ``neighbor_window`` (W), the names of LongLM's README (its
    code calls them ``group_size_1`` and ``group_size_2``)."""

    rope_type: ClassVar[str] = "self_extend"
    group_size: int
    neighbor_window: int

    def __post_init__(self) -> None:
        check_fields(self, integer, "group_size", "neighbor_window")


def check_window(spec: RopeSpec) -> None:
    """Every relative position inside the window is used as it is: the window must be shorter than
    the trained context (positions 0 .. trained - 1), or the method is not the method any more."""
    key = "neighbor_window" if spec.rope_type == "self_extend" else "window"
    window = getattr(spec.scaling, key)
    if window >= spec.original_length:
        raise RopeConfigError(
            f"{key}={window} is not allowed; expected 1 <= {key} < {spec.original_length}, the rope's trained "
            f"length (inside the window {spec.rope_type} keeps relative positions as they are)"
        )


# --- far positions: (spec, length) -> FarPositions ---------------------------------------------


def rerope(spec: RopeSpec, length: int) -> FarPositions:
    """bojone: ``query_states2`` rotated at ``position_ids * 0 + window``, ``key_states2`` unrotated."""
    window = spec.scaling.window
    return FarPositions(window, torch.full((length,), float(window)), torch.zeros(length))


def leaky_rerope(spec: RopeSpec, length: int) -> FarPositions:
    """bojone: the linear-scaled table (``t = arange / scaling_factor``) at ``position_ids + offset``
    for queries and at ``position_ids`` for keys, ``offset = window * (scaling_factor - 1)``."""
    window, factor = spec.scaling.window, spec.scaling.scaling_factor
    offset = window * (factor - 1)
    query = (torch.arange(length, dtype=torch.float64) + offset).to(torch.float32) / factor
    return FarPositions(window, query, torch.arange(length, dtype=torch.float32) / factor)


def self_extend(spec: RopeSpec, length: int) -> FarPositions:
    """LongLM: ``group_query_position = query_position // G + W - W // G``, ``group_key_position =
    key_position // G``. Its transformers >= 4.38 patch writes ``W / G`` (true division) in the
    prefill and ``W // G`` when decoding, as its first patch and the paper's pseudocode do; the two
    agree when G divides W, and ropekit keeps integer positions (``W // G``) when it does not.
    LongLM's shift switches off when the sequence is no longer than W; then no key is far anyway."""
    group, window = spec.scaling.group_size, spec.scaling.neighbor_window
    positions = torch.arange(length)
    query = (positions // group + window - window // group).to(torch.float32)
    return FarPositions(window, query, (positions // group).to(torch.float32))


# --- query scales: (length) -> float32 [T] -----------------------------------------------------


def log_n_scale(trained: int, length: int) -> torch.Tensor:
    """bojone/rerope (and LongLM's ``scale_base``): ``((position_ids + 1).log() / np.log(L)).clip(1)``,
    the same operations in the same order, so the same float32 numbers."""
    return (torch.arange(length) + 1).log().div(math.log(trained)).clip(1)


@dataclass(frozen=True)
class NopeTemperature:
    """Llama 4's attention temperature tuning on NoPE layers (transformers ``modeling_llama4.py``,
    after arXiv:2501.19399): queries at position i times ``log1p(floor((i + 1) / floor_scale)) *
    attn_scale + 1``. Defaults are Llama 4's config (``floor_scale`` 8192, ``attn_scale`` 0.1)."""

    floor_scale: float = 8192.0
    attn_scale: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self, number, "floor_scale", "attn_scale")

    def scale(self, length: int) -> torch.Tensor:
        """float32 ``[length]``: Llama4TextAttention's ``attn_scales``, operation for operation."""
        positions = torch.arange(length)
        return torch.log1p(torch.floor((positions.float() + 1.0) / self.floor_scale)) * self.attn_scale + 1.0

    def describe(self) -> str:
        return f"tt({self.floor_scale:g},{self.attn_scale:g})"


def query_scale(spec: RopeSpec, length: int) -> torch.Tensor | None:
    """The factor each query of a layer with this rope is multiplied by (float32 ``[length]``), or
    None when the spec scales nothing."""
    scale = None if spec.log_n is None else log_n_scale(spec.log_n, length)
    if spec.llama_4_scaling_beta is not None:  # Ministral 3: transformers' get_llama_4_attn_scale
        positions = torch.arange(length)
        beta = 1 + spec.llama_4_scaling_beta * torch.log(1 + torch.floor(positions / spec.original_length))
        scale = beta if scale is None else scale * beta
    return scale


def position_key(spec: RopeSpec) -> tuple | None:
    """What, besides its frequencies, decides where a spec rotates and how it scales queries (its
    type's parameters for an attention-level type, its log-n length): passes of two ropes are shared
    only when this is equal too (ropekit/eval/perplexity.py). None for a frequency-only spec."""
    attention = get_rope(spec.rope_type).attention is not None
    if not attention and spec.log_n is None and spec.llama_4_scaling_beta is None:
        return None
    return (spec.rope_type, spec.scaling if attention else None, spec.log_n, spec.llama_4_scaling_beta)


def describe_positions(spec: RopeSpec) -> str | None:
    """One line on what a spec does in attention, beyond its frequencies (``ropekit inspect``); None
    for a frequency-only spec without log-n."""
    s = spec.scaling
    parts = []
    if spec.rope_type == "rerope":
        parts.append(f"relative position d read as min(d, {s.window})")
    elif spec.rope_type == "leaky_rerope":
        parts.append(f"relative position d >= {s.window} read as {s.window} + (d - {s.window}) / {s.scaling_factor:g}")
    elif spec.rope_type == "self_extend":
        g, w = s.group_size, s.neighbor_window
        parts.append(f"relative position i - j >= {w} read as (i // {g} + {w - w // g}) - j // {g}")
    if spec.log_n is not None:
        parts.append(f"query i scaled by max(1, log(i + 1) / log {spec.log_n})")
    if spec.llama_4_scaling_beta is not None:
        beta, length = spec.llama_4_scaling_beta, spec.original_length
        parts.append(f"query i scaled by 1 + {beta:g} log(1 + floor(i / {length}))")
    if not parts:
        return None
    return "in attention: " + "; ".join(parts) + " (the frequencies shown are the ones it rotates by)"


# --- presets and their arguments --------------------------------------------------------------


def _integers(text: str, count: tuple[int, ...], form: str) -> tuple[int, ...]:
    parts = text.split(",")
    try:
        if len(parts) not in count:
            raise ValueError
        return tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(form) from None


def rerope_arguments(text: str) -> int:
    return _integers(text, (1,), "W, the window (an integer)")[0]


def leaky_rerope_arguments(text: str) -> tuple[int, float]:
    parts = text.split(",")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        return int(parts[0]), float(parts[1]) if len(parts) == 2 else None
    except ValueError:
        raise ValueError("W[,K], the window (an integer) and the scaling factor (a number, 16 when omitted)") from None


def self_extend_arguments(text: str) -> tuple[int, int]:
    return _integers(text, (2,), "G,W, the group size and the neighbor window (two integers)")


def rerope_preset(spec: RopeSpec, window: Any) -> dict[str, Any]:
    """``rerope:W``; without W, an eighth of the trained length (bojone's 512 at Llama 2's 4096)."""
    return {"rope_type": "rerope", "window": spec.original_length // 8 if window is None else window}


def leaky_rerope_preset(spec: RopeSpec, args: Any) -> dict[str, Any]:
    """``leaky_rerope:W,K``; W an eighth of the trained length and K 16 when omitted (bojone's patch)."""
    window, factor = args or (None, None)
    return {
        "rope_type": "leaky_rerope",
        "window": spec.original_length // 8 if window is None else window,
        "scaling_factor": 16.0 if factor is None else factor,
    }


def self_extend_preset(spec: RopeSpec, args: Any) -> dict[str, Any]:
    """``self_extend:G,W``; without them LongLM's defaults scaled to the trained length: G 8, W a
    quarter of it (``group_size_1=8, group_size_2=1024`` for Llama 2's 4096)."""
    group, window = args or (8, spec.original_length // 4)
    return {"rope_type": "self_extend", "group_size": group, "neighbor_window": window}


RECORDS = (
    RopeType("rerope", ReRope, frequencies.default, rerope_preset, check_window, rerope_arguments, attention=rerope),
    RopeType(
        "leaky_rerope",
        LeakyReRope,
        frequencies.default,
        leaky_rerope_preset,
        check_window,
        leaky_rerope_arguments,
        attention=leaky_rerope,
    ),
    RopeType(
        "self_extend",
        SelfExtend,
        frequencies.default,
        self_extend_preset,
        check_window,
        self_extend_arguments,
        attention=self_extend,
    ),
)
