"""Zoom panels: the part of a figure where lines differ by a few per cent, beside the whole.

A figure whose ropes span a factor of three (linear without fine-tuning) next to ropes a few per
cent apart shows the small differences as one line. ``window`` picks the y range of a zoom panel:
the points within ``NEAR`` (10 %) of the best at their length (perplexity), or of 1 (a ratio to a
baseline), with their intervals where they fit; the panel is drawn only when some point falls
outside it. A point outside is not dropped but marked by ``mark_outside``: a triangle at the edge it
lies beyond, in its line's colour, with its value. ``identical`` finds lines with the same numbers
(``dynamic`` below its trained length is ``default``), which one line drawn over another hides.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .style import tokens_label

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

NEAR = 0.10


def window(points: pd.DataFrame, ratio: bool) -> tuple[float, float] | None:
    """The y range of a zoom panel over ``points`` (columns: series, length, y, lo, hi), or None when
    every point is near (the whole panel already is the zoom) or fewer than two lines are."""
    import numpy as np

    y = points["y"].to_numpy(float)
    ok = np.isfinite(y)
    if ratio:
        near = ok & (np.abs(np.log(np.where(ok, y, 1.0))) <= math.log1p(NEAR))
    else:
        best = points.assign(y=y).groupby("length")["y"].transform("min").to_numpy(float)
        near = ok & (y <= best * (1 + NEAR))
    if near.sum() == ok.sum() or points.loc[near, "series"].nunique() < 2:
        return None
    values = [y[near]]
    for bound in ("lo", "hi"):  # an interval that fits the zoom of its points sets it too
        b = points[bound].to_numpy(float)
        fits = near & np.isfinite(b) & (np.abs(np.log(np.where(np.isfinite(b), b, 1.0) / np.where(ok, y, 1.0))) < 0.1)
        values.append(b[fits])
    values = np.concatenate([*values, [1.0]] if ratio else values)
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * 0.08 or abs(high) * 0.01
    return low - pad, high + pad


def mark_outside(ax: Axes, x, y, color: str, offset: float, limits: tuple[float, float]) -> list[tuple]:
    """A triangle at the top or bottom edge above or below each point of ``x``, ``y`` outside
    ``limits``, nudged sideways by ``offset`` (a factor on the log2 length axis) so that lines at one
    length stay apart; returns (x, edge, y) of each, for the labels of ``label_outside``."""
    import numpy as np

    marked = []
    for edge, beyond, marker, at in (("top", y > limits[1], "^", 0.975), ("bottom", y < limits[0], "v", 0.025)):
        if not beyond.any():
            continue
        ax.plot(
            np.asarray(x)[beyond] * offset,
            [at] * int(beyond.sum()),
            transform=ax.get_xaxis_transform(),
            marker=marker,
            markersize=6,
            color=color,
            linestyle="none",
            clip_on=False,
            gid="outside",
        )
        marked += [(float(a), edge, float(b)) for a, b in zip(np.asarray(x)[beyond], y[beyond], strict=True)]
    return marked


def label_outside(ax: Axes, marked: list[tuple], form: str) -> None:
    """One label per length and edge: the value, or the range of values, beyond that edge, each as
    ``form`` writes it (``{:.2f}`` for a ratio)."""
    by: dict[tuple, list[float]] = {}
    for x, edge, y in marked:
        by.setdefault((x, edge), []).append(y)
    for (x, edge), values in by.items():
        low, high = min(values), max(values)
        low, high = form.format(low), form.format(high)
        text = low if low == high else f"{low}–{high}"
        top = edge == "top"
        ax.annotate(
            text,
            (x, 0.975 if top else 0.025),
            xycoords=ax.get_xaxis_transform(),
            xytext=(0, -9 if top else 9),
            textcoords="offset points",
            ha="center",
            va="top" if top else "bottom",
            fontsize=7,
            color="0.25",
            gid="outside",
        )


def identical(rows: pd.DataFrame, series: str, value: str) -> list[str]:
    """Per pair of lines with the same numbers at two or more lengths (``value`` and, where given, its
    ``nll`` and ``n_tokens``), a note such as ``dynamic = default at 512–8k``: the later line in the
    panel's order is drawn over the earlier, and a reader should not look for it."""
    ok = rows[rows["status"] == "ok"]
    columns = [c for c in (value, "nll", "n_tokens") if c in ok]
    lengths = sorted(set(rows["length"]))
    names = list(dict.fromkeys(ok[series]))
    cells = {name: part.set_index("length")[columns] for name, part in ok.groupby(series, sort=False)}
    notes, covered = [], set()
    for i, later in enumerate(names):
        for earlier in names[:i]:
            if later in covered:
                break
            a, b = cells[later], cells[earlier]
            common = a.index.intersection(b.index)
            same = [n for n in common if a.loc[n].equals(b.loc[n])]
            if len(same) >= 2 or (same and len(common) == 1):
                notes.append(f"{later} = {earlier} at {_lengths(same, lengths)}")
                covered.add(later)
    return notes


def _lengths(same: list[int], lengths: list[int]) -> str:
    same = sorted(same)
    run = lengths[lengths.index(same[0]) : lengths.index(same[-1]) + 1]
    if run == same and len(same) > 2:
        return f"{tokens_label(same[0])}–{tokens_label(same[-1])}"
    return ", ".join(tokens_label(n) for n in same)


def ratio_ticks(ax: Axes) -> None:
    """Ticks evenly spaced on a log ratio axis: powers of 2 around 1 (of 4, 16, ... when it spans
    many), each labelled, so that 0.5 and 2 stand as far from 1 as they are."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    low, high = ax.get_ylim()
    octaves = math.log2(high / low)
    step = 2 ** max(1, math.ceil(octaves / 6))
    first, last = math.floor(math.log(low, step)), math.ceil(math.log(high, step))
    ticks = [step**k for k in range(first, last + 1) if low <= step**k <= high]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
