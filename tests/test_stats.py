"""Bootstrap intervals: reproducible to the bit, containing the point estimate, narrower with more
data, exactly [0, 0] for a rope against itself, and covering the truth about 95% of the time on
synthetic data whose truth is known (fixed seeds: the coverage is a fixed number, it cannot flake)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ropekit import stats
from ropekit.stats import (
    MIN_UNITS,
    block_tokens,
    bootstrap_ppl,
    difference_interval,
    ppl_interval,
    seed_of,
)

MEAN = 3.0  # every simulated document's expected NLL per token


def documents(n_docs: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """NLL sums and token counts of documents whose mean NLL varies around MEAN + shift."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(200, 2000, n_docs)
    return rng.normal(MEAN + shift, 0.25, n_docs) * tokens, tokens


def one_document(n_tokens: int, seed: int) -> np.ndarray:
    """Per-token NLL with short-range dependence (AR(1), phi 0.6) around MEAN."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, n_tokens)
    for t in range(1, n_tokens):
        noise[t] += 0.6 * noise[t - 1]
    return MEAN + noise


def blocks_of(nll: np.ndarray, block: int = 64) -> list[float]:
    return [chunk.sum() for chunk in np.split(nll, range(block, len(nll), block))]


def paired_difference(rope, baseline, tokens, *, seed: int):
    """The paired difference of two ropes on the same documents (at least MIN_UNITS: documents resampled)."""
    assert len(tokens) >= MIN_UNITS
    none = [[]] * len(tokens)
    return difference_interval((rope, none), (baseline, none), tokens, block=64, seed=seed)


def one_interval(nll: np.ndarray, seed: int) -> tuple[float, float]:
    """A one-document cell's interval, over its blocks."""
    return ppl_interval([nll.sum()], [len(nll)], [blocks_of(nll)], block=64, seed=seed)[:2]


def test_seed_of_is_stable_across_processes():
    assert seed_of("a") == 310482890 and seed_of("ropekit") == 3111523675  # sha256, not the salted hash()
    assert 0 <= seed_of("any cell key") < 2**32


def test_same_seed_same_bits():
    nll, tokens = documents(20, 0)
    assert bootstrap_ppl(nll, tokens, seed=5) == bootstrap_ppl(nll, tokens, seed=5)
    assert bootstrap_ppl(nll, tokens, seed=5) != bootstrap_ppl(nll, tokens, seed=6)
    assert paired_difference(nll, nll * 1.01, tokens, seed=5) == paired_difference(nll, nll * 1.01, tokens, seed=5)


@pytest.mark.parametrize("weighting", ["tokens", "documents"])
def test_an_interval_contains_its_estimate_and_narrows_with_more_documents(weighting):
    widths = []
    for n_docs in (10, 1000):
        nll, tokens = documents(n_docs, 1)
        lo, hi = bootstrap_ppl(nll, tokens, seed=2, weighting=weighting)
        estimate = math.exp(nll.sum() / tokens.sum() if weighting == "tokens" else (nll / tokens).mean())
        assert lo < estimate < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 4  # ~ sqrt(100) narrower


def test_a_document_interval_over_its_blocks():
    nll = one_document(4096, 0)
    lo, hi = one_interval(nll, 3)
    assert lo < math.exp(nll.mean()) < hi
    lo_short, hi_short = one_interval(one_document(1024, 0), 3)
    assert hi - lo < hi_short - lo_short
    assert block_tokens(130, 64) == [64, 64, 2]


def test_a_rope_against_itself_is_exactly_zero():
    nll, tokens = documents(30, 4)
    same = paired_difference(nll, nll, tokens, seed=1)
    assert (same.estimate, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero


def test_pairing_sees_a_small_shift_that_unpaired_intervals_miss():
    nll, tokens = documents(30, 5)
    better = nll - 0.02 * tokens  # 0.02 nats per token better on every document
    diff = paired_difference(better, nll, tokens, seed=1)
    assert diff.estimate == pytest.approx(-0.02) and diff.excludes_zero and diff.hi < 0
    lo, hi = bootstrap_ppl(nll, tokens, seed=1)
    assert lo < math.exp(better.sum() / tokens.sum()) < hi  # alone, the two intervals overlap


def test_coverage_over_documents():
    truth = math.exp(MEAN)
    for weighting in ("tokens", "documents"):
        hits = [
            lo <= truth <= hi
            for lo, hi in (bootstrap_ppl(*documents(30, s), seed=s, weighting=weighting) for s in range(200))
        ]
        assert 0.90 <= np.mean(hits) <= 0.99, (weighting, np.mean(hits))


def test_coverage_over_blocks_of_one_document():
    truth, hits = math.exp(MEAN), []
    for s in range(200):
        nll = one_document(4096, 1000 + s)
        lo, hi = one_interval(nll, s)
        hits.append(lo <= truth <= hi)
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_coverage_of_a_paired_difference():
    hits = []
    for s in range(200):
        base, tokens = documents(30, s)
        rope = base + np.random.default_rng(s).normal(0.05, 0.05, 30) * tokens  # 0.05 nats per token worse
        diff = paired_difference(rope, base, tokens, seed=s)
        hits.append(diff.lo <= 0.05 <= diff.hi)
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_documents_from_sixteen_on_else_the_blocks_of_each():
    nll, tokens = documents(MIN_UNITS, 6)
    assert ppl_interval(nll, tokens, [[]] * MIN_UNITS, block=64, seed=1)[2] == "bootstrap-docs-2000"
    docs = [one_document(300 + 100 * i, 6 + i) for i in range(MIN_UNITS - 1)]
    args = ([d.sum() for d in docs], [len(d) for d in docs], [blocks_of(d) for d in docs])
    lo, hi, method = ppl_interval(*args, block=64, seed=1, weighting="documents")
    assert method == "bootstrap-blocks64-2000" and lo < math.exp(np.mean([d.mean() for d in docs])) < hi
    with pytest.raises(ValueError, match="needs its blocks of 64 predictions"):
        ppl_interval(args[0], args[1], [[]] * len(docs), block=64, seed=1)
    one = one_document(300, 6)
    other = one - 0.5
    diff = difference_interval(
        ([other.sum()], [blocks_of(other)]), ([one.sum()], [blocks_of(one)]), [300], block=64, seed=1
    )
    assert diff.method == "none: 5 blocks of 64 predictions, fewer than 16" and diff.estimate == pytest.approx(-0.5)
    long = one_document(4000, 6)
    shifted = long - 0.5
    diff = difference_interval(
        ([shifted.sum()], [blocks_of(shifted)]), ([long.sum()], [blocks_of(long)]), [4000], block=64, seed=1
    )
    assert diff.method == "bootstrap-blocks64-2000" and diff.excludes_zero
    assert diff.lo == pytest.approx(-0.5) and diff.hi == pytest.approx(-0.5)


def test_no_interval_from_fewer_than_sixteen_units():
    short = one_document(MIN_UNITS * 64 - 64, 1)  # 15 blocks
    lo, hi, method = ppl_interval([short.sum()], [len(short)], [blocks_of(short)], block=64, seed=1)
    assert math.isnan(lo) and math.isnan(hi) and method == "none: 15 blocks of 64 predictions, fewer than 16"
    two = [short, one_document(65, 2)]  # 15 + 2 blocks
    lo, hi, method = ppl_interval(
        [d.sum() for d in two], [len(d) for d in two], [blocks_of(d) for d in two], block=64, seed=1
    )
    assert method == "bootstrap-blocks64-2000" and lo < hi


def test_coverage_over_the_blocks_of_a_few_documents():
    """Three documents, each its own mean NLL: the cell's figure, given these documents, is covered
    about 95% of the time by resampling each document's blocks."""
    means, hits = (2.5, 3.0, 3.5), []
    for s in range(200):
        docs = [one_document(2048, 3000 + 3 * s + i) - MEAN + m for i, m in enumerate(means)]
        args = ([d.sum() for d in docs], [len(d) for d in docs], [blocks_of(d) for d in docs])
        lo, hi, _ = ppl_interval(*args, block=64, seed=s)
        hits.append(lo <= math.exp(np.mean(means)) <= hi)
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_wilson_interval():
    """Against published values (Newcombe 1998, table I, method 3: 15/148 -> 0.0624-0.1605, 0/20 ->
    0-0.1611) and its coverage of a known proportion: at least near 95 % for small n."""
    assert stats.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert stats.wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert stats.wilson(20, 20) == pytest.approx((0.8389, 1.0), abs=1e-4)
    rng = np.random.default_rng(0)
    for p, n in [(0.5, 10), (0.8, 25), (0.1, 40)]:
        hits = [(lo <= p <= hi) for lo, hi in (stats.wilson(int(k), n) for k in rng.binomial(n, p, 4000))]
        assert 0.92 <= np.mean(hits) <= 0.99
    with pytest.raises(ValueError, match="not a proportion"):
        stats.wilson(3, 2)


def test_partial_credit_of_a_few_trials_has_wilsons_interval_and_a_bootstrap_from_min_units():
    """RULER's partial credit: below MIN_UNITS trials Wilson's interval of the mean score (2 trials that each
    found 1 value of 5: Wilson's for 0.4 of 2, not the bootstrap's width 0); from MIN_UNITS trials the
    bootstrap, seeded. Right-or-wrong scores stay Wilson's at any n;
    and Wilson's coverage of a partial-credit mean is at least its nominal 95 % for a few trials."""
    assert stats.score_interval([0.2, 0.2], seed=1) == stats.wilson(0.4, 2)
    lo, hi = stats.score_interval([0.2, 0.2], seed=1)
    assert lo < 0.2 < hi and hi - lo > 0.5
    rng = np.random.default_rng(3)
    few = rng.integers(0, 6, MIN_UNITS - 1) / 5
    many = rng.integers(0, 6, MIN_UNITS) / 5
    assert stats.score_interval(few, seed=1) == stats.wilson(math.fsum(few), MIN_UNITS - 1)
    boot = stats.score_interval(many, seed=1)
    assert boot != stats.score_interval(many, seed=2) and boot != stats.wilson(math.fsum(many), MIN_UNITS)
    assert boot[0] < many.mean() < boot[1]
    draws = rng.integers(0, 6, (4000, 4)) / 5  # 4 trials of 0-5 values of 5, uniformly: mean 0.5
    hits = [lo <= 0.5 <= hi for lo, hi in (stats.score_interval(d, seed=0) for d in draws)]
    assert np.mean(hits) >= 0.95
    assert stats.score_interval([1.0] * 40, seed=1) == stats.wilson(40, 40)


@pytest.mark.parametrize("n_docs", [3, 20])
def test_a_subset_holding_every_prediction_has_perplexitys_interval(n_docs):
    """subset_interval (LongPPL's key tokens) resamples the units ppl_interval does: with every prediction in
    the subset it is ppl_interval to the bit, over blocks (3 documents) and over documents (20)."""
    rng = np.random.default_rng(1)
    tokens = [int(t) for t in rng.integers(600, 1000, n_docs)]  # 10-16 blocks each
    blocks = [tuple(rng.uniform(2, 4) * n for n in stats.block_tokens(t, 64)) for t in tokens]
    sums = [math.fsum(b) for b in blocks]
    subset = [
        [(b, n) for b, n in zip(doc, stats.block_tokens(t, 64), strict=True)]
        for doc, t in zip(blocks, tokens, strict=True)
    ]
    expected = stats.ppl_interval(sums, tokens, blocks, block=64, seed=7)
    lo, hi, method = stats.subset_interval(subset, block=64, seed=7)
    assert (lo, hi) == pytest.approx(expected[:2], rel=1e-12) and method == expected[2]


def test_a_subset_intervals_units_are_those_holding_the_subset():
    """Blocks without a key token weigh nothing and are not units: 40 blocks, 20 of them holding key tokens,
    resample those 20; 12 key tokens in 3 blocks of a 64-block document give no interval (resampling all 64
    would give those 3 blocks' perplexity, or one of them, as the whole interval)."""
    doc = [(10.0, 4), (0.0, 0), (0.0, 0), (3.0, 2)] * 10
    lo, hi, method = stats.subset_interval([doc], block=64, seed=3)
    held = [b for b in doc if b[1]]
    assert (lo, hi, method) == stats.subset_interval([held], block=64, seed=3)
    assert method == "bootstrap-blocks64-2000" and lo < math.exp(130 / 60) < hi
    sparse = [(8.0, 4)] * 3 + [(0.0, 0)] * 61
    assert stats.subset_interval([sparse], block=64, seed=3)[2] == "none: 3 blocks of 64 predictions, fewer than 16"
