"""Intervals for perplexity and for the difference two ropes make: percentile bootstraps, seeded, so
the same numbers and seed give the same interval, run after run.

What is resampled is a unit: a document when a cell has at least ``MIN_UNITS``, else the blocks of
its documents' predictions, each document's within it (``Score.blocks`` of ropekit.eval.perplexity:
consecutive runs of ``block`` predictions, long enough that neighbouring tokens' dependence stays
inside a unit); with fewer than ``MIN_UNITS`` units there is no interval, and the method says why.
Perplexity is weighed as the figure it brackets: by tokens, exp(total NLL / total tokens) of the
resample; by documents (mode yarn), exp(mean of the documents' mean NLLs). A paired difference
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
from statistics import NormalDist

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
    """Percentile interval of perplexity over units (documents, with their tokens or bytes) resampled
    with replacement, each resample's perplexity weighed by ``weighting``; no unit rule (callers apply
    it: ``ppl_interval``). NaN with fewer than 2 units."""
    found = Units("docs", (np.asarray(nll_sums, dtype=float),), (np.asarray(tokens, dtype=float),))
    if found.count < 2:
        return math.nan, math.nan
    nll, tok = found.resampled(found.nll, found.draws(seed, n))
    return _percentiles(np.exp(_mean_nll(nll, tok, weighting)), level)


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


# The unit rule. Documents are resampled when a cell has at least MIN_UNITS of them: with fewer a
# percentile bootstrap over documents is too narrow (its spread is that of n draws from n; 3 documents
# have 10 distinct resamples). Then the cell is read as its documents' text, fixed, and what is
# resampled is each document's blocks, within that document (a stratified bootstrap: every resample
# keeps each document's share of the tokens), so the interval says how much the figure would move
# with other text like these documents, not with other documents. Below MIN_UNITS blocks in all there
# is no interval: the 2.5th and 97.5th percentiles of so few units are not an interval to trust.
MIN_UNITS = 16


@dataclass(frozen=True)
class Units:
    """What a cell's interval resamples: ``kind`` ``docs`` (one stratum, a unit per document) or
    ``blocks{block}`` (a stratum per document, a unit per block of it); ``nll`` and ``tokens`` per
    stratum, per unit."""

    kind: str
    nll: tuple[np.ndarray, ...]
    tokens: tuple[np.ndarray, ...]

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.nll)

    @property
    def too_few(self) -> str | None:
        """Why there is no interval (``none: ...``, the method column's entry), or None."""
        if self.count >= MIN_UNITS:
            return None
        what = "documents" if self.kind == "docs" else f"blocks of {self.kind.removeprefix('blocks')} predictions"
        return f"none: {self.count} {what}, fewer than {MIN_UNITS}"

    def method(self, n: int) -> str:
        return self.too_few or f"bootstrap-{self.kind}-{n}"

    def draws(self, seed: int, n: int) -> list[np.ndarray]:
        """``n`` resamples of each stratum's unit indices, with replacement, strata in order."""
        rng = np.random.RandomState(seed)
        return [rng.randint(0, len(x), size=(n, len(x))) for x in self.nll]

    def resampled(self, values: tuple[np.ndarray, ...], draws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per resample, each document's NLL sum (from ``values``, per stratum per unit, as ``nll``) and
        tokens: ``(n, documents)`` each, ready for ``_mean_nll``."""
        if self.kind == "docs":
            return values[0][draws[0]], self.tokens[0][draws[0]]
        nll = np.stack([v[d].sum(1) for v, d in zip(values, draws, strict=True)], axis=1)
        tokens = np.stack([t[d].sum(1) for t, d in zip(self.tokens, draws, strict=True)], axis=1)
        return nll, tokens


def units(
    doc_nll_sums: Sequence[float], doc_tokens: Sequence[int], doc_blocks: Sequence[Sequence[float]], *, block: int
) -> Units:
    """What to resample for a cell (the unit rule above): its documents when it has at least
    ``MIN_UNITS``, else the blocks of each of them."""
    if len(doc_nll_sums) >= MIN_UNITS:
        return Units("docs", (np.asarray(doc_nll_sums, float),), (np.asarray(doc_tokens, float),))
    if len(doc_blocks) != len(doc_tokens) or any(
        len(b) != len(block_tokens(t, block)) for b, t in zip(doc_blocks, doc_tokens, strict=False)
    ):
        raise ValueError(f"each document needs its blocks of {block} predictions when there are fewer than {MIN_UNITS}")
    return Units(
        f"blocks{block}",
        tuple(np.asarray(b, float) for b in doc_blocks),
        tuple(np.asarray(block_tokens(t, block), float) for t in doc_tokens),
    )


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
    """A cell's perplexity interval from its documents' scores, weighed as its figure is: (lo, hi,
    method), the method ``bootstrap-docs-{n}``, ``bootstrap-blocks{block}-{n}`` or, with NaN bounds,
    ``none: ...`` saying why (``Units.too_few``)."""
    found = units(doc_nll_sums, doc_tokens, doc_blocks, block=block)
    if found.too_few:
        return math.nan, math.nan, found.method(n)
    nll, tokens = found.resampled(found.nll, found.draws(seed, n))
    lo, hi = _percentiles(np.exp(_mean_nll(nll, tokens, weighting)), level)
    return lo, hi, found.method(n)


def subset_interval(
    doc_blocks: Sequence[Sequence[Sequence[float]]], *, block: int, seed: int, n: int = N, level: float = LEVEL
) -> tuple[float, float, str]:
    """The interval of a perplexity over a subset of a cell's predictions (LongPPL's key tokens), by the
    unit rule above, its units those that hold a prediction of the subset (a block or document without one
    weighs nothing, and twelve key tokens in one block of 64 resampled as 64 blocks would give that block's
    perplexity as the whole interval): ``doc_blocks`` holds, per document, per block of ``block``
    predictions, the subset's ``(NLL sum, count)`` there; documents are resampled when ``MIN_UNITS`` of them
    hold the subset, else each one's blocks that do. ``(lo, hi, method)``."""
    doc_blocks = [[b for b in blocks if b[1] > 0] for blocks in doc_blocks]
    doc_blocks = [blocks for blocks in doc_blocks if blocks]
    sums = tuple(np.asarray([b[0] for b in blocks], float) for blocks in doc_blocks)
    counts = tuple(np.asarray([b[1] for b in blocks], float) for blocks in doc_blocks)
    if len(doc_blocks) >= MIN_UNITS:
        found = Units("docs", (np.asarray([s.sum() for s in sums]),), (np.asarray([c.sum() for c in counts]),))
    else:
        found = Units(f"blocks{block}", sums, counts)
    if found.too_few:
        return math.nan, math.nan, found.method(n)
    nll, tokens = found.resampled(found.nll, found.draws(seed, n))
    lo, hi = _percentiles(np.exp(nll.sum(1) / tokens.sum(1)), level)
    return lo, hi, found.method(n)


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
    """The difference in mean NLL per token (weighed as the figures are) of two ropes scored on the
    same documents, each given as (NLL sum per document, blocks per document), with the interval of
    resampling the same units for both (the unit rule above); NaN bounds and ``none: ...`` with too
    few units."""
    a = units(rope[0], doc_tokens, rope[1], block=block)
    b = units(baseline[0], doc_tokens, baseline[1], block=block)
    estimate = float(
        _mean_nll(np.asarray(rope[0], float), np.asarray(doc_tokens, float), weighting)
        - _mean_nll(np.asarray(baseline[0], float), np.asarray(doc_tokens, float), weighting)
    )
    if a.too_few:
        return Difference(estimate, math.nan, math.nan, a.method(n))
    draws = a.draws(seed, n)
    (nll_a, tokens), (nll_b, _) = a.resampled(a.nll, draws), a.resampled(b.nll, draws)
    lo, hi = _percentiles(_mean_nll(nll_a, tokens, weighting) - _mean_nll(nll_b, tokens, weighting), level)
    return Difference(estimate, lo, hi, a.method(n))


def wilson(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (Wilson 1927; Brown, Cai and
    DasGupta 2001 recommend it for small n): inside [0, 1], and not of zero width at 0 or n of n, where
    the normal approximation's interval collapses to a point. ``successes`` may be fractional: the summed
    partial credit of ``score_interval``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"{successes} successes of {n} trials is not a proportion")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exactly 0 (1) at 0 (n) successes, where centre - half (+ half) is that up to rounding
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def score_interval(scores: Sequence[float], seed: int, level: float = LEVEL) -> tuple[float, float]:
    """An interval for the mean of per-trial ``scores`` in [0, 1]: the Wilson interval where every score is
    0 or 1 (a proportion); for partial credit (RULER's share of the values found), the percentile bootstrap
    of the mean over trials (``N`` resamples, seeded) from ``MIN_UNITS`` trials, and below that Wilson's
    interval of the mean score. A score in [0, 1] with mean p varies at most as much as a right-or-wrong
    one, p (1 - p), so that interval is conservative; a bootstrap of a few trials is not (two trials that
    both found one value of five give a bootstrap interval of width 0)."""
    values = np.asarray(scores, dtype=float)
    if values.size < 1:
        raise ValueError("an interval needs at least one score")
    if np.all((values == 0) | (values == 1)) or values.size < MIN_UNITS:
        return wilson(math.fsum(values), int(values.size), level)
    draws = np.random.RandomState(seed).randint(0, values.size, size=(N, values.size))
    return _percentiles(values[draws].mean(-1), level)
