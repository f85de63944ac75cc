"""One look for every figure: a colour-blind-safe palette, and a stable style per rope name (colour,
dashes and marker, so that two lines stay apart in grey print and where they overlap)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Ordered so that the first six, the most a sweep usually has, are the six most unlike
# (black, orange, blue, green, purple, vermillion); the two light ones, sky blue and yellow, come last.
OKABE_ITO = ("#000000", "#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (1.5, 1.5)))
MARKERS = ("o", "s", "^", "D", "v", "P", "h", "*")  # not X: that marks a failed cell


class Style(NamedTuple):
    color: str
    linestyle: str | tuple
    marker: str


def series_styles(names: Iterable[str], first: str | None = None) -> dict[str, Style]:
    """A :class:`Style` per name in first-seen order, ``first`` moved to the front (black, solid,
    round markers): the k-th name takes the k-th colour, dashes and marker, so any two differ in all three."""
    ordered = list(dict.fromkeys(names))
    if first in ordered:
        ordered.remove(first)
        ordered.insert(0, first)
    return {
        name: Style(OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
        for i, name in enumerate(ordered)
    }


def rope_colors(names: Iterable[str]) -> dict[str, Style]:
    """(colour, linestyle, marker) per rope name, in first-seen order; ``default`` is always black.
    Build it once from the sweep's rope list (in the spec's order) and pass it to every figure so a
    rope keeps its look."""
    return series_styles(names, first="default")


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Readable numbers (not powers) on a log axis, denser the narrower its range; call after the
    data are drawn."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    decades = math.log10(hi / lo) if lo > 0 else 3
    subs = tuple(range(1, 10)) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


def tokens_label(n: float) -> str:
    """A length on a length axis: ``512``, ``1k``, ``16k`` (a whole number of k), else ``1,000``."""
    n = int(round(n))
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else f"{n:,}"
