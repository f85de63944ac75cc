"""One look for every figure: a colour-blind-safe palette, a stable colour per rope name."""

from __future__ import annotations

from collections.abc import Iterable

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":")


def series_styles(names: Iterable[str], first: str | None = None) -> dict[str, tuple[str, str]]:
    """(colour, linestyle) per name in first-seen order, ``first`` moved to the front (black)."""
    ordered = list(dict.fromkeys(names))
    if first in ordered:
        ordered.remove(first)
        ordered.insert(0, first)
    return {
        name: (OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)])
        for i, name in enumerate(ordered)
    }


def rope_colors(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(colour, linestyle) per rope name, in first-seen order; ``default`` is always black. Build it
    once from the sweep's rope list and pass it to every figure so a rope keeps its colour."""
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
