"""One look for every figure: a colour-blind-safe palette, a stable colour per rope name."""

from __future__ import annotations

from collections.abc import Iterable

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":")


def rope_colors(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, linestyle) per rope name, in first-seen order; ``default`` is always black."""
    ordered = list(dict.fromkeys(names))
    if "default" in ordered:
        ordered.remove("default")
        ordered.insert(0, "default")
    styles = {}
    for i, name in enumerate(ordered):
        styles[name] = (OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)])
    return styles
