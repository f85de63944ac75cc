"""Intervals for perplexity and for the difference two ropes make: percentile bootstraps, seeded, so
the same numbers and seed give the same interval, run after run.

What is resampled is a unit: a document when a cell has several, else the blocks of its one
document's predictions (``Score.blocks`` of ropekit.eval.perplexity: consecutive runs of ``block``
predictions, long enough that neighbouring tokens' dependence stays inside a unit). Perplexity is
weighed as the figure it brackets: by tokens, exp(total NLL / total tokens) of the resampled units;
by documents (mode yarn), exp(mean of the resampled documents' mean NLLs). A paired difference
resamples the same units for both ropes, so what they share (the text's own difficulty) cancels.

Seeds come from something stable the caller names (``seed_of(cell_key)``), and the draws from
``numpy.random.RandomState``, whose stream numpy keeps frozen (NEP 19), so an interval does not
move with a numpy upgrade. numpy only: every layer may use this module.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Resamples: each end of a 95% interval then moves by about 1.5% of its width from one seed to
# another (Efron & Tibshirani, An Introduction to the Bootstrap, ask for >= 1000 for percentiles).
N = 2000
LEVEL = 0.95


def seed_of(text: str) -> int:
    """A seed from a stable key such as a cell's: the first 4 bytes of its SHA-256 (Python's ``hash``
    of a string changes from one process to the next)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def block_tokens(n_tokens: int, block: int) -> list[int]:
    """Tokens in each block of a document's ``n_tokens`` predictions, ``block`` at a time (the last
    block may be shorter)."""
    return [min(block, n_tokens - start) for start in range(0, n_tokens, block)]


def _draws(n_units: int, seed: int, n: int) -> np.ndarray:
    """``n`` resamples of ``n_units`` unit indices, with replacement: (n, n_units)."""
    return np.random.RandomState(seed).randint(0, n_units, size=(n, n_units))


def _mean_nll(nll: np.ndarray, tokens: np.ndarray, weighting: str) -> np.ndarray:
    """Mean NLL per token over the last axis: total over total (``tokens``), or the mean of each
    unit's own mean (``documents``)."""
    if weighting == "tokens":
        return nll.sum(-1) / tokens.sum(-1)
    if weighting == "documents":
        return (nll / tokens).mean(-1)
    raise ValueError(f"weighting={weighting!r} is not allowed; expected 'tokens' or 'documents'")


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ppl(
    nll_sums: Sequence[float],
    tokens: Sequence[int],
    *,
    seed: int,
    n: int = N,
    level: float = LEVEL,
    weighting: str = "tokens",
) -> tuple[float, float]:
    """Percentile interval of perplexity over units (documents, or one document's blocks) resampled
    with replacement, each resample's perplexity weighed by ``weighting``. NaN with fewer than 2 units."""
    nll, tok = np.asarray(nll_sums, dtype=float), np.asarray(tokens, dtype=float)
    if len(nll) < 2:
        return math.nan, math.nan
    draws = _draws(len(nll), seed, n)
    return _percentiles(np.exp(_mean_nll(nll[draws], tok[draws], weighting)), level)


def bootstrap_blocks_ppl(
    blocks: Sequence[float], n_tokens: int, *, block: int, seed: int, n: int = N, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of one document's perplexity over its blocks resampled with replacement
    (token-weighted, which for one document is also yarn's weighing)."""
    return bootstrap_ppl(blocks, block_tokens(n_tokens, block), seed=seed, n=n, level=level)


@dataclass(frozen=True)
class Difference:
    """Mean NLL per token of a rope minus its baseline on the same units, with a percentile interval."""

    estimate: float
    lo: float
    hi: float
    method: str

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval says the rope is better (hi < 0) or worse (lo > 0) than the baseline."""
        return self.lo > 0 or self.hi < 0


def paired_difference(
    rope: Sequence[float],
    baseline: Sequence[float],
    tokens: Sequence[int],
    *,
    seed: int,
    n: int = N,
    level: float = LEVEL,
    weighting: str = "tokens",
    unit: str = "docs",
) -> Difference:
    """Mean NLL per token of ``rope`` minus ``baseline``, their NLL sums over the same units (documents,
    or the same blocks of one document) of ``tokens`` each: the estimate and a percentile interval from
    resampling the same units for both. Named ``bootstrap-{unit}-{n}``."""
    a, b, tok = (np.asarray(x, dtype=float) for x in (rope, baseline, tokens))
    estimate = float(_mean_nll(a, tok, weighting) - _mean_nll(b, tok, weighting))
    lo = hi = math.nan
    if len(tok) >= 2:
        draws = _draws(len(tok), seed, n)
        lo, hi = _percentiles(
            _mean_nll(a[draws], tok[draws], weighting) - _mean_nll(b[draws], tok[draws], weighting), level
        )
    return Difference(estimate, lo, hi, f"bootstrap-{unit}-{n}")


def units(
    doc_nll_sums: Sequence[float], doc_tokens: Sequence[int], doc_blocks: Sequence[Sequence[float]], *, block: int
) -> tuple[list[float], list[int], str]:
    """What to resample for a cell: its documents when it has several, else its one document's blocks.
    Returns (NLL per unit, tokens per unit, ``"docs"`` or ``"blocks{block}"``)."""
    if len(doc_nll_sums) != 1:
        return list(doc_nll_sums), list(doc_tokens), "docs"
    return list(doc_blocks[0]), block_tokens(doc_tokens[0], block), f"blocks{block}"


def ppl_interval(
    doc_nll_sums: Sequence[float],
    doc_tokens: Sequence[int],
    doc_blocks: Sequence[Sequence[float]],
    *,
    block: int,
    seed: int,
    n: int = N,
    level: float = LEVEL,
    weighting: str = "tokens",
) -> tuple[float, float, str]:
    """A cell's perplexity interval from its documents' scores: (lo, hi, method), the method
    ``bootstrap-docs-{n}`` over several documents or ``bootstrap-blocks{block}-{n}`` over one's blocks."""
    nll, tokens, unit = units(doc_nll_sums, doc_tokens, doc_blocks, block=block)
    lo, hi = bootstrap_ppl(
        nll, tokens, seed=seed, n=n, level=level, weighting=weighting if unit == "docs" else "tokens"
    )
    return lo, hi, f"bootstrap-{unit}-{n}"


def difference_interval(
    rope: tuple[Sequence[float], Sequence[Sequence[float]]],
    baseline: tuple[Sequence[float], Sequence[Sequence[float]]],
    doc_tokens: Sequence[int],
    *,
    block: int,
    seed: int,
    n: int = N,
    level: float = LEVEL,
    weighting: str = "tokens",
) -> Difference:
    """``paired_difference`` of two ropes scored on the same documents, each given as (NLL sum per
    document, blocks per document): over the documents when there are several, else over the blocks
    of the one."""
    a, tokens, unit = units(rope[0], doc_tokens, rope[1], block=block)
    b, _, _ = units(baseline[0], doc_tokens, baseline[1], block=block)
    weighting = weighting if unit == "docs" else "tokens"
    return paired_difference(a, b, tokens, seed=seed, n=n, level=level, weighting=weighting, unit=unit)
