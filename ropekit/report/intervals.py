"""Intervals a report shows: the sweep's own (``ppl_lo``, ``ppl_hi`` of results.csv), the paired
difference two ropes (or layer mixes) make on the same documents, and bits per byte, all from the
files of a sweep directory through :mod:`ropekit.stats`.

A paired difference is the mean NLL per token of a cell minus that of its baseline cell (the same
model, length and documents), ``stats.difference_interval`` over the documents when the cells have
at least ``stats.MIN_UNITS``, else over each document's 64-prediction blocks, seeded by
``stats.seed_of("<cell key> <baseline cell key>")``. Its exp is the perplexity ratio the relative
figure draws. Directories written before documents.csv held blocks, or before results.csv held
intervals, give NaN bounds and the verdict ``no interval``: shown as unavailable, never guessed.
Two cells with the same numbers on every document and block (``dynamic`` below its trained length runs
the ``default`` rope's frequencies, so the sweep reads one pass for both) are ``identical``: their
ratio is 1 by construction, not a measurement whose interval happens to be [1, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import stats
from ..modes import BLOCK, WEIGHTING  # BLOCK: when neither meta.json nor an interval's name says it

if TYPE_CHECKING:
    import pandas as pd

    from .results import Sweep

METHOD = re.compile(r"bootstrap-(?:docs|blocks(\d+))-(\d+)$")
BETTER, WORSE, SAME, NONE = "better", "worse", "not distinguishable", "no interval"
IDENTICAL = "identical"
MEASURED = (BETTER, WORSE, SAME)  # the verdicts of a difference with an interval
RESOLUTION = "resolution"


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals of a sweep were drawn: resamples, level, and the block of one document."""

    n: int = stats.N
    level: float = stats.LEVEL
    block: int = BLOCK

    @property
    def percent(self) -> str:
        return f"{self.level * 100:g} %"


def bootstrap_settings(sweep: Sweep) -> Bootstrap:
    """meta.json's ``intervals`` (or ``bootstrap``) settings, else what the intervals' names say
    (``bootstrap-blocks64-2000``), else ropekit's defaults."""
    settings: dict[str, Any] = sweep.meta.get("intervals") or sweep.meta.get("bootstrap") or {}
    n, block = None, None
    for name in dict.fromkeys(sweep.results["interval"]):
        if match := METHOD.match(str(name)):
            block = block or (match.group(1) and int(match.group(1)))
            n = n or int(match.group(2))
    return Bootstrap(
        n=int(settings.get("n") or settings.get("resamples") or n or stats.N),
        level=float(settings.get("level") or stats.LEVEL),
        block=int(settings.get("block") or settings.get("block_tokens") or block or BLOCK),
    )


@dataclass(frozen=True)
class _Scores:
    """One cell's documents, in a fixed order: names, NLL sums, predictions, blocks."""

    names: tuple[str, ...]
    nll: tuple[float, ...]
    tokens: tuple[int, ...]
    blocks: tuple[tuple[float, ...], ...]


def _scores_by_cell(documents: pd.DataFrame | None) -> dict[str, _Scores]:
    if documents is None:
        return {}
    out = {}
    for cell, rows in documents.groupby("cell", sort=False):
        rows = rows.sort_values("doc", kind="stable")
        if rows["nll_sum"].isna().any() or rows["n_tokens"].isna().any():
            continue
        out[str(cell)] = _Scores(
            tuple(rows["doc"].astype(str)),
            tuple(rows["nll_sum"].astype(float)),
            tuple(rows["n_tokens"].astype(int)),
            tuple(rows["blocks"]),
        )
    return out


def _paired(
    a: _Scores | None, b: _Scores | None, seed_key: str, settings: Bootstrap, weighting: str
) -> stats.Difference | None:
    """The paired difference of two cells' scores, or None when they are not the same documents or,
    where blocks are resampled, a document lacks (matching) blocks."""
    if a is None or b is None or a.names != b.names or a.tokens != b.tokens:
        return None
    if len(a.names) < stats.MIN_UNITS:
        expected = [len(stats.block_tokens(t, settings.block)) for t in a.tokens]
        if not ([len(x) for x in a.blocks] == [len(x) for x in b.blocks] == expected):
            return None
    return stats.difference_interval(
        (a.nll, a.blocks),
        (b.nll, b.blocks),
        a.tokens,
        block=settings.block,
        seed=stats.seed_of(seed_key),
        n=settings.n,
        level=settings.level,
        weighting=weighting,
    )


def paired_differences(sweep: Sweep, baseline: str, series: str = "rope") -> pd.DataFrame:
    """For each scored cell and the ``baseline`` value of ``series`` (``rope``: the baseline rope at the
    same model, layer mix and length; ``layer_mix``: the reference mix at the same model, rope and
    length), the difference in mean NLL per token (cell minus baseline) with its paired interval.

    Columns: model, layer_mix, rope, length, baseline, cell, baseline_cell, ratio (perplexity over the
    baseline's), estimate, lo, hi (NLL per token; NaN bounds when unavailable), ratio_lo, ratio_hi
    (their exp), method, verdict (``better``, ``worse``, ``not distinguishable``, ``no interval``, or
    ``identical``: the same numbers on every document, see the module's docstring)."""
    import numpy as np
    import pandas as pd

    other = {"rope": "layer_mix", "layer_mix": "rope"}[series]
    frame = sweep.results
    frame = frame[(frame["status"] == "ok") & np.isfinite(frame["ppl"].to_numpy(float))]
    settings = bootstrap_settings(sweep)
    weighting = WEIGHTING.get(sweep.spec.get("mode"), "tokens")  # as the cell's perplexity
    scores = _scores_by_cell(sweep.documents)
    base = {(r["model"], r[other], r["length"]): r for r in frame[frame[series] == baseline].to_dict("records")}
    rows = []
    for cell in frame[frame[series] != baseline].to_dict("records"):
        ref = base.get((cell["model"], cell[other], cell["length"]))
        if ref is None:
            continue
        key, ref_key = str(cell.get("cell", "")), str(ref.get("cell", ""))
        mine, theirs = scores.get(key), scores.get(ref_key)
        diff = _paired(mine, theirs, f"{key} {ref_key}", settings, weighting)
        ratio = cell["ppl"] / ref["ppl"]
        lo, hi = (diff.lo, diff.hi) if diff else (math.nan, math.nan)
        same = mine is not None and mine == theirs
        rows.append(
            {
                **{c: cell[c] for c in ("model", "layer_mix", "rope", "length")},
                "baseline": baseline,
                "cell": key,
                "baseline_cell": ref_key,
                "ratio": ratio,
                "estimate": diff.estimate if diff else math.log(ratio),
                "lo": lo,
                "hi": hi,
                "ratio_lo": math.exp(lo),
                "ratio_hi": math.exp(hi),
                "method": diff.method if diff else "",
                "verdict": IDENTICAL if same else _verdict(lo, hi),
            }
        )
    columns = ["model", "layer_mix", "rope", "length", "baseline", "cell", "baseline_cell", "ratio", "estimate"]
    columns += ["lo", "hi", "ratio_lo", "ratio_hi", "method", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _verdict(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NONE
    return BETTER if hi < 0 else WORSE if lo > 0 else SAME


def distinguishable(differences: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer mix, length): the ropes whose paired interval excludes 0 (better or worse
    than the baseline), those whose interval includes it, those without an interval, those identical
    to the baseline (a column only where there are some), and the resolution: the median half-width of
    the ratios' intervals (identical ropes' aside), in percent, the smallest difference in perplexity
    these documents tell apart there (``–`` without intervals)."""
    import numpy as np
    import pandas as pd

    verdicts = (BETTER, WORSE, SAME, NONE, IDENTICAL)
    rows = []
    for (model, mix, length), part in differences.groupby(["model", "layer_mix", "length"], sort=False):
        by = {v: ", ".join(part.loc[part["verdict"] == v, "rope"]) or "–" for v in verdicts}
        measured = part[part["verdict"] != IDENTICAL]
        half = ((measured["ratio_hi"] - measured["ratio_lo"]) / 2 * 100).dropna()
        resolution = f"±{np.median(half):.1f} %" if len(half) else "–"
        rows.append({"model": model, "layer_mix": mix, "length": length, **by, RESOLUTION: resolution})
    baseline = differences["baseline"].iloc[0] if len(differences) else "the baseline"
    columns = {
        BETTER: f"better than {baseline}",
        WORSE: f"worse than {baseline}",
        SAME: "not distinguishable",
        NONE: "no interval",
        IDENTICAL: f"identical to {baseline}",
    }
    table = pd.DataFrame(rows, columns=["model", "layer_mix", "length", *columns, RESOLUTION]).rename(columns=columns)
    for verdict in (NONE, IDENTICAL):
        if not (differences["verdict"] == verdict).any():
            table = table.drop(columns=columns[verdict])
    return table.set_index(["model", "layer_mix", "length"])


def with_bits_per_byte_intervals(sweep: Sweep) -> pd.DataFrame:
    """The results with ``bits_per_byte_lo`` and ``bits_per_byte_hi``: total NLL over total bytes / ln 2
    (lm-eval's bits per byte), seeded by the cell key. Over at least ``stats.MIN_UNITS`` documents,
    the documents resampled with their bytes; with fewer, the text (so its bytes per token) is fixed
    and only its NLL varies: the token-weighted perplexity interval of the documents' blocks, as
    nats per token, times tokens per byte / ln 2. NaN without byte counts or with too few units."""
    import numpy as np

    settings = bootstrap_settings(sweep)
    bounds: dict[str, tuple[float, float]] = {}
    by_cell = _scores_by_cell(sweep.documents)
    for cell, rows in sweep.documents.groupby("cell", sort=False) if sweep.documents is not None else ():
        rows = rows.sort_values("doc", kind="stable")  # the order of _scores_by_cell
        nll, n_bytes, seed = rows["nll_sum"].to_numpy(float), rows["n_bytes"].to_numpy(float), stats.seed_of(str(cell))
        if np.isnan(n_bytes).any() or str(cell) not in by_cell:
            continue
        if len(rows) >= stats.MIN_UNITS:
            lo, hi = stats.bootstrap_ppl(nll, n_bytes, seed=seed, n=settings.n, level=settings.level)
            bounds[str(cell)] = (math.log2(lo), math.log2(hi))
            continue
        scores = by_cell[str(cell)]
        try:
            lo, hi, _ = stats.ppl_interval(
                scores.nll,
                scores.tokens,
                scores.blocks,
                block=settings.block,
                seed=seed,
                n=settings.n,
                level=settings.level,
            )
        except ValueError:  # blocks missing (a directory written before they were stored)
            continue
        per_byte = sum(scores.tokens) / n_bytes.sum() / math.log(2)
        bounds[str(cell)] = (math.log(lo) * per_byte, math.log(hi) * per_byte)
    frame = sweep.results.copy()
    cells = frame["cell"] if "cell" in frame else [None] * len(frame)
    found = np.array([bounds.get(str(c), (math.nan, math.nan)) for c in cells], dtype=float).reshape(-1, 2)
    ok = (frame["status"] == "ok").to_numpy() & np.isfinite(frame["bits_per_byte"].to_numpy(float))
    frame["bits_per_byte_lo"] = np.where(ok, found[:, 0], np.nan)
    frame["bits_per_byte_hi"] = np.where(ok, found[:, 1], np.nan)
    return frame


def convention(sweep: Sweep, differences: pd.DataFrame | None = None) -> str:
    """The report's one statement of how its intervals were drawn, or that this directory has none
    (written before ropekit stored them), and of what it lacks."""
    import numpy as np

    s = bootstrap_settings(sweep)
    own = bool(np.isfinite(sweep.results["ppl_lo"].to_numpy(float)).any())
    paired = differences is not None and bool(differences["verdict"].isin(MEASURED).any())
    too_few = (
        f"No cell has an interval of its own: each has fewer than {stats.MIN_UNITS} units (documents, or "
        f"{s.block}-token blocks of its documents; the interval column says how many)"
    )
    if not (own or paired) and sweep.has_intervals:  # the columns are there, every cell too small
        return too_few + ", and no rope is called distinguishable from another."
    if not (own or paired):
        return (
            "This directory was written before ropekit stored intervals (results.csv has no ppl_lo/ppl_hi, "
            "documents.csv neither several documents per cell nor blocks of the one): intervals are unavailable "
            "throughout this report, and no rope is called distinguishable from another."
        )
    text = [
        f"Intervals are {s.percent} percentile bootstraps ({s.n} resamples): over documents when a cell has at "
        f"least {stats.MIN_UNITS}, else over the {s.block}-token blocks of each of its documents, resampled within "
        "it (the interval then says how far the figure would move with other text like these documents, not with "
        f"other documents), and none from fewer than {stats.MIN_UNITS} units; seeded by the cell key, so the "
        "same files give the same interval. A difference between two ropes (or layer mixes) is paired: the same "
        "documents or blocks are resampled for both, seeded by both cells' keys; it is distinguishable when its "
        "interval excludes 0 (a perplexity ratio's excludes 1)."
    ]
    if not own and sweep.has_intervals:
        text.append(too_few + ".")
    elif not own:
        text.append(
            "This directory was written before ropekit stored each cell's interval (results.csv has no "
            "ppl_lo/ppl_hi), so perplexities are shown without one; the paired differences come from documents.csv."
        )
    elif differences is not None and len(differences) and not paired:
        text.append(
            "No difference has an interval: documents.csv cannot pair the cells (no blocks), or they have too "
            "few units."
        )
    return " ".join(text)
