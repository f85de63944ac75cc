"""Position methods beyond transformers' six that change only the frequencies (issue 16).

Each is one record (``builtin.py`` registers them after the six): a parameter class whose fields
are the method's keys, a pure frequency function ``(spec, seq_len) -> (inv_freq, attention_scale)``
and a preset. The arithmetic follows each method's reference code operation by operation, and
tests/rope/test_methods.py rewrites that code from its source and compares to a relative 1e-6:

* ``ntk``: NTK-aware scaling, theta x alpha^(d/(d-2)) (jquesnelle/yarn
  ``scaled_rope/LlamaNTKScaledRotaryEmbedding.py``);
* ``dynamic_yarn``: YaRN at the scale of the evaluated length (jquesnelle/yarn
  ``scaled_rope/LlamaDynamicYaRNScaledRotaryEmbedding.py``), stateless;
* ``ntk_by_parts``: the YaRN repository's NTK-by-parts, a blend of linear, NTK and unscaled
  frequencies by rotations over the trained context (``scaled_rope/LlamaPartNTKScaledRotaryEmbedding.py``);
* ``ntk_mixed``: Su's mixed-base NTK (bojone/rerope ``ntk_patch.py``);
* ``resonance``: Resonance RoPE, every wavelength of another rope rounded to an integer
  (sheryc/resonance_rope).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .checks import check_fields, integer, number, set_field
from .config import Default, RopeConfigError, RopeSpec, Yarn, is_rope_params, parse_params
from .frequencies import _base_inv_freq, correction_range, linear_ramp, spec_frequencies, yarn
from .presets import parse_preset
from .registry import get_rope


def _weight(key: str, value: Any) -> float:
    """A blend weight in [0, 1] (0 switches the blend off, 1 is the source's default)."""
    weight = number(key, value, strict=False)
    if weight > 1:
        raise RopeConfigError(f"{key}={value!r} is not allowed; expected a blend weight between 0 and 1")
    return weight


def _preset_factor(factor: float | None, default: float = 2.0) -> float:
    return default if factor is None else factor


# --- ntk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ntk:
    """NTK-aware scaling (bloc97): one larger theta for every length."""

    rope_type: ClassVar[str] = "ntk"
    alpha: float

    def __post_init__(self) -> None:
        check_fields(self, number, "alpha")


def ntk(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """NTK-aware scaled RoPE (bloc97, 2023; jquesnelle/yarn ``scaled_rope/LlamaNTKScaledRotaryEmbedding.py``):
    ``base' = base * alpha ** (d / (d - 2))``, ``inv_freq_i = 1 / base' ** (2i / d)``, attention scale 1.

    The exponent d / (d - 2) leaves pair 0 unchanged and makes the slowest pair (i = d/2 - 1)
    exactly ``alpha`` times slower, so its wavelength, and the context it covers, grows by ``alpha``
    (YaRN paper, eq. 16, with s = alpha). The pairs between are interpolated by less, so in practice
    NTK-aware scaling needs an ``alpha`` somewhat above the target stretch (YaRN paper, section 3.1).
    """
    d = spec.rotary_dim
    return _base_inv_freq(spec.rope_theta * spec.scaling.alpha ** (d / (d - 2)), d), 1.0


def ntk_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """``ntk:ALPHA`` (default 2): alpha is the context stretch, the factor the slowest pair is slowed by."""
    return {"rope_type": "ntk", "alpha": _preset_factor(factor)}


# --- dynamic_yarn ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamicYarn:
    """Dynamic YaRN: YaRN whose scale follows the evaluated length."""

    rope_type: ClassVar[str] = "dynamic_yarn"
    # The scale held up to factor x original_max_position_embeddings: 1 (default) is the source's
    # training-free form (finetuned=False); a model fine-tuned with YaRN at scale s has factor s
    # (the source's finetuned=True, whose scale is max_position_embeddings / original there).
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, number, "factor")
        if self.factor < 1:
            raise RopeConfigError(
                f"factor={self.factor!r} is not allowed; expected a finite number >= 1 (the YaRN scale held up to "
                "factor x original_max_position_embeddings; 1 = the training-free form)"
            )
        check_fields(self, integer, "original_max_position_embeddings", optional=True)
        check_fields(self, number, "beta_fast", "beta_slow")
        if self.beta_fast < self.beta_slow:
            raise RopeConfigError(
                f"beta_fast={self.beta_fast:g} must be >= beta_slow={self.beta_slow:g} "
                "(the ramp runs from beta_fast rotations down to beta_slow)"
            )


def dynamic_yarn_scale(spec: RopeSpec, seq_len: int | None) -> float:
    """The YaRN scale at the evaluated length: ``max(factor, seq_len / original_max_position_embeddings)``
    (``seq_len`` None: the original length)."""
    s = spec.scaling
    length = s.original_max_position_embeddings if seq_len is None else seq_len
    return max(s.factor, length / s.original_max_position_embeddings)


def dynamic_yarn(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Dynamic YaRN (jquesnelle/yarn ``scaled_rope/LlamaDynamicYaRNScaledRotaryEmbedding.py``): YaRN's
    frequencies and temperature ``0.1 ln s + 1`` at the scale ``s = max(factor, seq_len / L)``,
    ``L = original_max_position_embeddings``; the plain rope (attention scale 1) where s = 1, i.e. at
    or below L with ``factor`` 1.

    The source rebuilds its cache with ``yarn(seq_len / original_max_position_embeddings)`` once a
    length passes ``max_position_embeddings`` and keeps the largest length seen; with
    ``finetuned`` it starts from ``yarn(max_position_embeddings / original_max_position_embeddings)``
    (here ``factor``). ropekit's is stateless: the frequencies of a fresh module at ``seq_len``, as
    for ``dynamic``. (The copy in the repository's ``modeling_llama_yarn.py`` divides by
    ``max_position_embeddings`` instead; both agree when the module is not fine-tuned and its
    ``max_position_embeddings`` is the original length, the only case where that copy is continuous.)
    """
    scale = dynamic_yarn_scale(spec, seq_len)
    if scale == 1.0:  # the source's training-free start: the plain rope, mscale 1
        return _base_inv_freq(spec.rope_theta, spec.rotary_dim), 1.0
    s = spec.scaling
    at_scale = Yarn(
        factor=scale,
        original_max_position_embeddings=s.original_max_position_embeddings,
        beta_fast=s.beta_fast,
        beta_slow=s.beta_slow,
    )
    return yarn(dataclasses.replace(spec, scaling=at_scale), seq_len)


def dynamic_yarn_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """``dynamic_yarn``: the training-free form (plain up to the trained length, YaRN at
    seq_len / trained past it); ``dynamic_yarn:F``: YaRN at scale F up to F x the trained length,
    growing with the length past it (the source's ``finetuned`` form)."""
    rope: dict[str, Any] = {"rope_type": "dynamic_yarn"}
    if factor is not None:
        rope["factor"] = factor
    return {**rope, "original_max_position_embeddings": spec.original_length}


# --- ntk_by_parts ---------------------------------------------------------------------------

# The source's constants ("found experimentally for LLaMA ... Do not change unless there is a good
# reason"): rotations over the trained context between which NTK gives way to linear (beta_0,
# beta_1), and the scaled frequencies give way to the unscaled ones (gamma_0, gamma_1).
PART_NTK_BETA = (1.25, 0.75)
PART_NTK_GAMMA = (16, 2)


@dataclass(frozen=True)
class NtkByParts:
    """The YaRN repository's NTK-by-parts: linear, NTK and unscaled frequencies blended by band."""

    rope_type: ClassVar[str] = "ntk_by_parts"
    factor: float
    original_max_position_embeddings: int | None = None
    ntk_factor: float = 1.0  # weight of NTK against linear on the fast side of the beta ramp
    extrapolation_factor: float = 1.0  # weight of the unscaled frequency on the fast side of the gamma ramp

    def __post_init__(self) -> None:
        check_fields(self, number, "factor")
        check_fields(self, integer, "original_max_position_embeddings", optional=True)
        check_fields(self, _weight, "ntk_factor", "extrapolation_factor")


def ntk_by_parts(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """NTK-by-parts (bloc97; jquesnelle/yarn ``scaled_rope/LlamaPartNTKScaledRotaryEmbedding.py``),
    attention scale 1. With s = ``factor``, L = ``original_max_position_embeddings``, d the rotary dim:

    * three candidates: unscaled ``1 / b^(2i/d)``, linear ``1 / (s b^(2i/d))``, NTK
      ``1 / (b s^(d/(d-2)))^(2i/d)``;
    * ``r_beta = ramp(floor(i(1.25)), ceil(i(0.75)))`` and ``r_gamma = ramp(floor(i(16)), ceil(i(2)))``,
      where ``i(r) = d ln(L / (2 pi r)) / (2 ln b)`` is the pair index that turns r times over L and
      ``ramp(lo, hi)`` rises linearly from 0 at pair lo to 1 at pair hi (bounds clamped to [0, d - 1]);
    * ``m = (1 - r_beta) ntk_factor``, ``f = linear (1 - m) + ntk m``; then
      ``m = (1 - r_gamma) extrapolation_factor``, ``inv_freq = f (1 - m) + unscaled m``.

    Pairs turning more than 16 times keep their frequency, those turning fewer than 0.75 times are
    interpolated linearly, NTK fills the bands between. This is not the single ramp the YaRN paper
    calls NTK-by-parts (section 3.2, beta 32 to 1): that one is ``yarn`` with ``attention_factor`` 1.
    """
    s, dim, base = spec.scaling, spec.rotary_dim, spec.rope_theta
    exponents = torch.arange(0, dim, 2).float() / dim
    inv_freq_base = 1.0 / (base**exponents)
    inv_freq_linear = 1.0 / (s.factor * (base**exponents))
    inv_freq_ntk = 1.0 / ((base * s.factor ** (dim / (dim - 2))) ** exponents)
    length = s.original_max_position_embeddings
    mask = (1 - linear_ramp(*correction_range(*PART_NTK_BETA, dim, base, length), dim // 2)) * s.ntk_factor
    inv_freq = inv_freq_linear * (1 - mask) + inv_freq_ntk * mask
    mask = (1 - linear_ramp(*correction_range(*PART_NTK_GAMMA, dim, base, length), dim // 2)) * s.extrapolation_factor
    return inv_freq * (1 - mask) + inv_freq_base * mask, 1.0


def ntk_by_parts_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """``ntk_by_parts:F`` (default 2), the source's blend weights."""
    return {
        "rope_type": "ntk_by_parts",
        "factor": _preset_factor(factor),
        "original_max_position_embeddings": spec.original_length,
    }


# --- ntk_mixed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NtkMixed:
    """Su's mixed-base NTK: each pair scaled by its own factor, from 1 for the fastest to ``factor``."""

    rope_type: ClassVar[str] = "ntk_mixed"
    factor: float  # the source's k (12 there): the slowest pair's, and the context's, stretch
    exponent: float = 0.75  # the source's b: the shape of the schedule across pairs

    def __post_init__(self) -> None:
        check_fields(self, number, "factor", "exponent")


def ntk_mixed(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """NTK-RoPE-mixed (Su, https://kexue.fm/archives/9706; bojone/rerope ``ntk_patch.py``,
    ``ntk_rope_mixed_init``): ``inv_freq_i = b^(-2i/d) exp(-a (i + 1)^e)``, ``a = ln k / (d/2)^e``,
    k = ``factor``, e = ``exponent``, i = 0 .. d/2 - 1; attention scale 1.

    Pair i is slowed by ``k^(((i + 1) / (d/2))^e)``: a little for the fastest pair, exactly k for the
    slowest, so the context stretches by k. The patch also scales queries by
    ``max(1, log(pos + 1) / log(L_train))`` (log-n); that is attention-level, not part of the
    frequencies, and not applied here.
    """
    s, dim = spec.scaling, spec.rotary_dim
    a = math.log(s.factor) / (dim / 2) ** s.exponent
    inv_freq = spec.rope_theta ** (-torch.arange(0, dim, 2).float() / dim)
    inv_freq = inv_freq * (-a * torch.arange(1, dim // 2 + 1).float() ** s.exponent).exp()
    return inv_freq, 1.0


def ntk_mixed_preset(spec: RopeSpec, factor: float | None) -> dict[str, Any]:
    """``ntk_mixed:K`` (default 2; the source uses 12), exponent 0.75 as the source."""
    return {"rope_type": "ntk_mixed", "factor": _preset_factor(factor)}


# --- resonance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resonance:
    """Resonance RoPE: another rope (``rope``, default the plain one) with each wavelength rounded
    to a whole number of tokens.

    ``rope`` is given as a rope dict without theta or partial rotary factor (those sit beside
    ``rope_type: resonance``), e.g. ``{"rope_type": "resonance", "rope": {"rope_type": "yarn",
    "factor": 4.0}}``, and parsed as strictly as any rope; it is held as that rope's parameter object,
    so the spec stays frozen and hashable, and :meth:`RopeSpec.to_dict` writes it back as a dict.
    """

    rope_type: ClassVar[str] = "resonance"
    rope: Any = Default()

    def __post_init__(self) -> None:
        inner = self.rope
        if isinstance(inner, Mapping):
            placed = [key for key in ("rope_theta", "partial_rotary_factor") if key in inner]
            if placed:
                raise RopeConfigError(
                    f"rope: {placed[0]!r} belongs beside rope_type 'resonance', not inside the rope it rounds"
                )
            inner = parse_params(inner, where="rope", beside=())
        elif not is_rope_params(inner):
            raise RopeConfigError(
                f"rope={inner!r} is not allowed; expected the rope to round as a dict, "
                "e.g. {'rope_type': 'yarn', 'factor': 4.0}"
            )
        if inner.rope_type == "resonance":
            raise RopeConfigError("rope: resonance of resonance is refused; its wavelengths are whole already")
        set_field(self, "rope", inner)

    @property
    def original_max_position_embeddings(self) -> int | None:
        """The rounded rope's trained length (``RopeSpec.original_length`` reads it)."""
        return getattr(self.rope, "original_max_position_embeddings", None)


def rounded_spec(spec: RopeSpec) -> RopeSpec:
    """The spec of the rope a resonance spec rounds: same head geometry, its own checks run."""
    return dataclasses.replace(spec, scaling=spec.scaling.rope)


def check_resonance(spec: RopeSpec) -> None:
    rounded_spec(spec)


def resonance(spec: RopeSpec, seq_len: int | None) -> tuple[torch.Tensor, float]:
    """Resonance RoPE (Wang et al. 2024, arXiv:2403.00071; sheryc/resonance_rope
    ``ResonanceRotaryEmbedding._register_buffers``, ``LlamaYaRNScaledResonanceRotaryEmbedding.resonance_register``):
    ``inv_freq_i = 2 pi / round(2 pi / f_i)`` for every pair i, where ``f`` and the attention scale are
    the rounded rope's at the same ``seq_len``.

    Every pair is rounded; the source's ``compute_freqs`` then builds the angles of pairs whose
    wavelength fits in the sequence by tiling one period, ``(t mod lambda_i) 2 pi / lambda_i``, which
    equals ``t 2 pi / lambda_i`` up to float rounding (ropekit computes the latter in rotary.py).
    """
    inv_freq, scale = spec_frequencies(rounded_spec(spec), seq_len)
    wavelengths = torch.round(2 * math.pi / inv_freq)
    if not bool(torch.all(wavelengths >= 1)):
        shortest = float(2 * math.pi / inv_freq.max())
        raise RopeConfigError(
            f"resonance: the rope it rounds has a wavelength of {shortest:.3g} tokens, which rounds to 0; "
            "expected every wavelength >= 0.5"
        )
    return 2 * math.pi / wavelengths, scale


def resonance_arguments(text: str) -> tuple[str, Any]:
    """``resonance:TYPE[:ARGS]``: the rope to round, as its own preset (``resonance:yarn:4``)."""
    try:
        return parse_preset(text)
    except RopeConfigError as err:
        raise ValueError(f"the rope to round as TYPE[:ARGS], e.g. resonance:yarn:4 ({err})") from None


def resonance_preset(spec: RopeSpec, inner: tuple[str, Any] | str | None) -> dict[str, Any]:
    """``resonance``: the plain rope rounded; ``resonance:TYPE[:ARGS]``: that preset rounded
    (``resonance:yarn:4`` rounds ``yarn:4``). ``inner`` is ``(TYPE, ARGS)`` or the text ``TYPE[:ARGS]``."""
    if inner is None:
        return {"rope_type": "resonance"}
    if isinstance(inner, str):
        inner = parse_preset(inner)
    if not (isinstance(inner, tuple) and len(inner) == 2 and isinstance(inner[0], str)):
        raise RopeConfigError(
            f"resonance takes the rope to round as TYPE[:ARGS] (e.g. resonance:yarn:4), not {inner!r}"
        )
    rope_type, args = inner
    record = get_rope(rope_type)
    if rope_type == "resonance" or record is None or record.preset is None:
        raise RopeConfigError(f"resonance cannot round the preset {rope_type!r}; give TYPE[:ARGS] of another type")
    return {"rope_type": "resonance", "rope": record.preset(spec, args)}
