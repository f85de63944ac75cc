"""The numbers behind the figures, as wide pandas tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def perplexity_table(frame: pd.DataFrame, *, baseline: str | None = None, text: bool = False) -> pd.DataFrame:
    """Rows (model, layer_mix, length), one column per rope: perplexity, or divided by the
    ``baseline`` rope's at the same row. Failed and pending cells are NaN, or with ``text=True``
    their status in capitals (``OOM``, ``PENDING``) next to numbers formatted to 2 (ratios 3)
    decimals."""
    values = frame.assign(value=frame["ppl"].where(frame["status"] == "ok"))
    table = values.pivot_table(
        index=["model", "layer_mix", "length"], columns="rope", values="value", sort=False, dropna=False
    )
    table = table.reindex(columns=list(dict.fromkeys(frame["rope"])))
    if baseline is not None:
        if baseline not in table.columns:
            raise ValueError(f"rope {baseline!r} is not in the results; expected one of {', '.join(table.columns)}")
        table = table.div(table[baseline], axis=0)
    table.columns.name = None
    if not text:
        return table
    status = frame.pivot_table(
        index=["model", "layer_mix", "length"], columns="rope", values="status", aggfunc="first", sort=False
    ).reindex(index=table.index, columns=table.columns)
    digits = 3 if baseline else 2
    shown = table.apply(lambda col: col.map(lambda v: f"{v:.{digits}f}"))
    return shown.where(table.notna(), status.fillna("–").apply(lambda col: col.map(_status_text)))


def _status_text(status: str) -> str:
    return "–" if status == "ok" else status.upper()  # ok but no baseline number: nothing to divide by
