"""What a rope config does to each frequency band, as a table (``ropekit inspect``, reports)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .config import Default, RopeSpec
from .frequencies import spec_frequencies

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
    import pandas as pd

    rows = []
    for name, spec in specs.items():
        inv_freq, attention_scale = spec_frequencies(spec, seq_len)
        # The plain rope over the channels this one rotates (p-RoPE's: the whole head).
        prf = 1.0 if spec.rotary_dim == spec.head_dim else spec.partial_rotary_factor
        base, _ = spec_frequencies(dataclasses.replace(spec, scaling=Default(), partial_rotary_factor=prf), seq_len)
        for i, (f, f0) in enumerate(zip(inv_freq.tolist(), base.tolist(), strict=True)):
            wavelength = 2 * math.pi / f if f else math.inf
            scale = f0 / f if f else math.inf
            rows.append(
                (name, spec.rope_type, i, f, wavelength, scale, spec.original_length / wavelength, attention_scale)
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
