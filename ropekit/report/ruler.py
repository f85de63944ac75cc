"""RULER's summary of a sweep's RULER tasks, as NVIDIA/RULER's results table gives it: per (model, layer
mix, rope) and length, the average over the tasks of each task's mean score, in percent, and the
effective length, the longest length at which that average exceeds a threshold (RULER's 85.6, the score
of Llama-2-7B at 4k) there and at every shorter length swept.

The RULER tasks are the retrieval cells without a depth (``ropekit/tasks/ruler.py``). An average needs
every RULER task of the sweep scored at that length (else it shows what is missing, and no effective
length reaches past it). Its interval is the average of the tasks' own intervals, each at the
Bonferroni level ``1 - (1 - level) / tasks`` (``stats.score_interval`` of its trials' ``match`` in
trials.csv: Wilson's, or a bootstrap for partial credit of 16 trials or more): when every task's mean
lies in its interval, which happens with probability at least ``level``, the average lies in theirs.
Conservative, and honest with a few trials a task: a bootstrap of the average would resample 2 right
answers of 2 into an interval of width 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .. import stats
from .results import PENDING
from .retrieval import unplaced

if TYPE_CHECKING:
    import pandas as pd

THRESHOLD = 85.6  # RULER (Hsieh et al., 2024): Llama-2-7B's average at 4k, the bar an effective length clears


def ruler_summary(
    frame: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    *,
    threshold: float = THRESHOLD,
    level: float = stats.LEVEL,
) -> pd.DataFrame:
    """One row per (model, layer_mix, rope): a column per length with the RULER average [interval] (percent)
    or what is missing, and ``effective length (> threshold)``; an empty frame for a sweep without RULER tasks."""
    import pandas as pd

    ruler = frame[frame["task"].isin(unplaced(frame))]
    tasks = list(dict.fromkeys(ruler["task"]))
    lengths = sorted(set(ruler["length"]))
    rows = []
    for (model, mix, rope), part in ruler.groupby(["model", "layer_mix", "rope"], sort=False):
        row, effective, reached = {"model": model, "layer_mix": mix, "rope": rope}, None, True
        for length in lengths:
            cells = part[(part["length"] == length) & (part["status"] == "ok")]
            if len(cells) < len(tasks):
                missing = part[(part["length"] == length) & (part["status"] != "ok")]["status"]
                row[str(length)] = f"{len(cells)} of {len(tasks)} tasks ({', '.join(sorted(set(missing))) or PENDING})"
                reached = False
                continue
            average = 100 * float(cells["accuracy"].mean())
            lo, hi = _interval(cells, trials, level)
            row[str(length)] = f"{average:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if math.isfinite(lo) else "")
            reached = reached and average > threshold
            effective = length if reached else effective
        row[f"effective length (> {threshold:g})"] = f"{effective:,}" if effective else f"< {lengths[0]:,}"
        rows.append(row)
    return pd.DataFrame(rows)


def _interval(cells: pd.DataFrame, trials: pd.DataFrame | None, level: float) -> tuple[float, float]:
    """The average (percent) of the tasks' intervals at the Bonferroni level (the module's docstring); NaN
    where trials.csv lacks a cell's scores."""
    if trials is None or "match" not in trials:
        return math.nan, math.nan
    each = 1 - (1 - level) / len(cells)
    bounds = []
    for cell, expected in zip(cells["cell"], cells["n_trials"], strict=True):
        scores = trials.loc[trials["cell"] == cell].sort_values("trial")["match"].to_numpy(float)
        if len(scores) != expected or not np.isfinite(scores).all():
            return math.nan, math.nan
        bounds.append(stats.score_interval(scores, stats.seed_of(f"ruler {cell}"), each))
    lo, hi = np.mean(bounds, axis=0)
    return 100 * float(lo), 100 * float(hi)
