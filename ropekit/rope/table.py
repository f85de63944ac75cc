"""What a rope config does to each frequency band, as a table (``ropekit inspect``, reports)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .config import Default, RopeSpec

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("rope", "rope_type", "dim", "inv_freq", "wavelength", "scale", "rotations", "attention_scale")


def frequency_table(specs: Mapping[str, RopeSpec], seq_len: int | None = None) -> pd.DataFrame:
    """One row per (rope, rotary pair ``dim``) at the evaluated length ``seq_len``.

    ``wavelength`` is 2*pi / inv_freq in tokens; ``scale`` is how many times longer that
    wavelength is than under the default rope of the same theta (1 = untouched, ``factor`` =
    fully interpolated); ``rotations`` is how many full turns the pair makes over the rope's
    original (trained) length, which is what YaRN's beta_fast / beta_slow thresholds read. A pair that
    does not turn (p-RoPE's, frequency 0) has an infinite wavelength and scale and no rotations.
    """
    return stored_table({name: frequency_record(spec, seq_len) for name, spec in specs.items()})


def frequency_record(spec: RopeSpec, seq_len: int | None = None) -> dict:
    """What :func:`frequency_table` reads of one rope, as plain data (a sweep's plans.json keeps it, so a
    report draws the frequencies without the rope code): its type, trained length, float32 ``inv_freq``
    and attention scale at ``seq_len``, and the default rope's ``inv_freq`` of the same theta."""
    from .frequencies import spec_frequencies

    inv_freq, attention_scale = spec_frequencies(spec, seq_len)
    # The plain rope over the channels this one rotates (p-RoPE's: the whole head).
    prf = 1.0 if spec.rotary_dim == spec.head_dim else spec.partial_rotary_factor
    base, _ = spec_frequencies(dataclasses.replace(spec, scaling=Default(), partial_rotary_factor=prf), seq_len)
    return {
        "length": seq_len,
        "rope_type": spec.rope_type,
        "original_length": spec.original_length,
        "inv_freq": inv_freq.tolist(),
        "default_inv_freq": base.tolist(),
        "attention_scale": float(attention_scale),
    }


def stored_table(records: Mapping[str, dict]) -> pd.DataFrame:
    """:func:`frequency_table` from each rope's :func:`frequency_record` (no torch)."""
    import pandas as pd

    rows = []
    for name, r in records.items():
        for i, (f, f0) in enumerate(zip(r["inv_freq"], r["default_inv_freq"], strict=True)):
            wavelength = 2 * math.pi / f if f else math.inf  # p-RoPE's unturned pairs: no rotation at all
            scale = f0 / f if f else math.inf
            rows.append(
                (name, r["rope_type"], i, f, wavelength, scale, r["original_length"] / wavelength, r["attention_scale"])
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
