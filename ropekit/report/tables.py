"""The numbers behind the figures, as wide pandas tables, with their intervals when asked."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from .intervals import IDENTICAL

DISTINGUISHABLE = "†"  # after a ratio whose paired interval excludes 1


def perplexity_table(
    frame: pd.DataFrame,
    *,
    baseline: str | None = None,
    text: bool = False,
    intervals: bool = False,
    differences: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows (model, layer_mix, length), one column per rope: perplexity, or divided by the
    ``baseline`` rope's at the same row. Failed and pending cells are NaN, or with ``text=True``
    their status in capitals (``OOM``, ``PENDING``) next to numbers formatted to 2 (ratios 3)
    decimals. With ``text=True``, ``intervals=True`` adds each perplexity's interval
    (``30.31 [29.80, 30.85]``) from ``ppl_lo``/``ppl_hi``, and ``differences``
    (:func:`ropekit.report.paired_differences` against ``baseline``) each ratio's paired interval
    (``1.031 [1.012, 1.050] †``, † where it excludes 1), or ``= default`` where the two cells have the
    same numbers on every document (a ratio of 1 by construction, ``ropekit.report.intervals``); a
    number without an interval is shown alone."""
    import numpy as np

    values = frame.assign(value=frame["ppl"].where(frame["status"] == "ok"))
    table = _wide(values, "value")
    table = table.reindex(columns=list(dict.fromkeys(frame["rope"])))
    if baseline is not None:
        if baseline not in table.columns:
            raise ValueError(f"rope {baseline!r} is not in the results; expected one of {', '.join(table.columns)}")
        table = table.div(table[baseline], axis=0)
    table.columns.name = None
    if not text:
        return table
    digits = 3 if baseline else 2
    lo = hi = mark = None
    same: list[tuple] = []
    if baseline is None and intervals and {"ppl_lo", "ppl_hi"} <= set(frame.columns):
        lo, hi = (_wide(frame, c).reindex(index=table.index, columns=table.columns) for c in ("ppl_lo", "ppl_hi"))
    elif baseline is not None and differences is not None and len(differences):
        part = differences[differences["baseline"] == baseline]
        lo, hi = (_wide(part, c).reindex(index=table.index, columns=table.columns) for c in ("ratio_lo", "ratio_hi"))
        excludes = part.assign(mark=np.where(part["verdict"].isin(["better", "worse"]), DISTINGUISHABLE, ""))
        mark = _wide(excludes, "mark", aggfunc="first").reindex(index=table.index, columns=table.columns)
        same = list(part.loc[part["verdict"] == IDENTICAL, ["model", "layer_mix", "length", "rope"]].itertuples(False))
    shown = _format(table, lo, hi, mark, digits)
    for model, mix, length, rope in same:
        if (model, mix, length) in shown.index and rope in shown.columns:
            shown.at[(model, mix, length), rope] = f"= {baseline}"
    status = _wide(frame, "status", aggfunc="first").reindex(index=table.index, columns=table.columns)
    return shown.where(table.notna(), status.fillna("–").apply(lambda col: col.map(_status_text)))


def bits_per_byte_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (layer_mix, rope, length), one column per model: bits per byte as text, with its interval
    where ``bits_per_byte_lo``/``_hi`` are given; a cell without a number shows its status."""
    index = ["layer_mix", "rope", "length"]
    values = frame.assign(value=frame["bits_per_byte"].where(frame["status"] == "ok"))
    table = _wide(values, "value", index, "model")
    table.columns.name = None
    bounds = [
        _wide(frame, c, index, "model").reindex(index=table.index, columns=table.columns) if c in frame else None
        for c in ("bits_per_byte_lo", "bits_per_byte_hi")
    ]
    shown = _format(table, *bounds, None, 3)
    status = _wide(frame, "status", index, "model", aggfunc="first").reindex(index=table.index, columns=table.columns)
    return shown.where(table.notna(), status.fillna("–").apply(lambda col: col.map(_status_text)))


def _wide(frame, value: str, index=("model", "layer_mix", "length"), columns: str = "rope", aggfunc="mean"):
    return frame.pivot_table(
        index=list(index), columns=columns, values=value, aggfunc=aggfunc, sort=False, dropna=False
    )


def _format(table, lo, hi, mark, digits: int):
    """Each number to ``digits`` decimals, with ``[lo, hi]`` where both are finite and ``mark`` after."""
    import math

    def cell(row, column):
        v = table.at[row, column]
        out = f"{v:.{digits}f}"
        if lo is not None and hi is not None:
            a, b = lo.at[row, column], hi.at[row, column]
            if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b):
                out += f" [{a:.{digits}f}, {b:.{digits}f}]"
        if mark is not None and isinstance(mark.at[row, column], str) and mark.at[row, column]:
            out += f" {mark.at[row, column]}"
        return out

    shown = table.astype(object).copy()
    for column in table.columns:
        shown[column] = [cell(row, column) for row in table.index]
    return shown


def _status_text(status: str) -> str:
    return "–" if status == "ok" else status.upper()  # ok but no baseline number: nothing to divide by
