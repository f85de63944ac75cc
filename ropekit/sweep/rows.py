"""results.csv rows: the columns that name a cell (every task's), and a perplexity cell's numbers computed
from its documents as stored (so a resumed sweep writes the row an uninterrupted one would, to the bit;
a trial task's from its trials: ``trials.py``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import stats
from ..eval.perplexity import BLOCK, WEIGHTING, Score, aggregate, combine
from .cells import Cell
from .store import ResultStore, parse_blocks


def depth_text(depth: float | None) -> str:
    """A depth as the CSV files write it: ``f"{depth:g}"``, empty for a cell of a task that places no needle."""
    return "" if depth is None else f"{depth:g}"


def named(c: Cell) -> dict[str, Any]:
    """The columns that name a cell, first in its row: model, rope, layer mix, length, task."""
    return {"model": c.model, "rope": c.rope, "layer_mix": c.layer_mix, "length": c.length, "task": c.task}


def cell_row(c: Cell, store: ResultStore, mode: str, failure: tuple[str, str] | None) -> dict[str, Any]:
    """A cell's results.csv row, computed from its documents as stored in documents.csv (so a
    resumed sweep writes the row an uninterrupted one would, to the bit)."""
    row = {**named(c), "n_docs": len(c.docs)}
    if failure is not None:
        return {**row, "n_tokens": 0, "status": failure[0], "detail": failure[1], "cell": c.key}
    docs = [store.docs[c.key, d] for d in c.docs]
    scores = [Score(float(r["nll_sum"]), int(r["n_tokens"]), parse_blocks(r["blocks"])) for r in docs]
    total = combine(scores)
    if not math.isfinite(total.nll_sum):
        return {**row, "n_tokens": total.n_tokens, "status": "nan", "detail": "non-finite loss", "cell": c.key}
    ppl = aggregate(mode, scores)
    lo, hi, method = stats.ppl_interval(
        [s.nll_sum for s in scores],
        [s.n_tokens for s in scores],
        [s.blocks for s in scores],
        block=BLOCK,
        seed=stats.seed_of(c.key),
        weighting=WEIGHTING[mode],
    )
    n_bytes, n_words = sum(int(r["n_bytes"]) for r in docs), sum(int(r["n_words"]) for r in docs)
    return {
        **row,
        "n_tokens": total.n_tokens,
        "nll": f"{math.log(ppl):.6f}",
        "ppl": f"{ppl:.4f}",
        "ppl_lo": "" if math.isnan(lo) else f"{lo:.4f}",
        "ppl_hi": "" if math.isnan(hi) else f"{hi:.4f}",
        "interval": method,  # or "none: ..." saying why there is none
        "bits_per_byte": f"{total.nll_sum / n_bytes / math.log(2):.6f}" if n_bytes else "",
        "word_ppl": f"{_exp(total.nll_sum / n_words):.4f}" if n_words else "",
        "status": "ok",
        "detail": "",
        "cell": c.key,
    }


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:  # a text with almost no whitespace has few, very long "words"
        return math.inf
