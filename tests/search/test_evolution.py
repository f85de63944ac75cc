"""ropekit's LongRoPE search against microsoft/LongRoPE's own (``tests/search/longrope_source.py``, rewritten
from its files): the same candidates, in the same order, to the bit, under the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from ropekit.rope import parse_rope
from ropekit.search.evolution import History, Space, crossover, mutate
from ropekit.search.loop import Hyper, evolve
from ropekit.search.start import yarn_start
from tests.search import longrope_source as source

SMALL = {  # LongRoPE's keys; its defaults (64, 40, 16, 16, 20, 32, 0.01) take 1344 scores
    "evo_scale": 1.0,
    "population_size": 12,
    "max_time_budget": 5,
    "mutation_numbers": 4,
    "crossover_size": 6,
    "max_crossover_try": 20,
    "parents_size": 6,
    "list_step": 0.01,
}


def quadratic(target: np.ndarray):
    return lambda factors: float(np.sum((np.asarray(factors, dtype=np.float64) - target) ** 2))


def ropekit_run(algorithm, init, scale, hyper, seed, objective):
    space = Space(algorithm, scale, hyper.list_step, init.shape[0])
    return evolve(space, hyper, init, seed, lambda g, batch: [objective(c.factors) for c in batch])


def longrope_run(algorithm, init, scale, params, seed, objective):
    cls = {"dim_mono": source.DimMonoGeneticAlgorithm, "dim_piece_mono": source.DimPieceMonoGeneticAlgorithm}
    source.set_seed(seed)
    ga = cls[algorithm](objective, scale, params, init)
    return ga, ga.run_genetic_algorithm()


@pytest.mark.parametrize("algorithm", ["dim_mono", "dim_piece_mono"])
@pytest.mark.parametrize("seed", [42, 3])
def test_search_equals_longrope(algorithm, seed):
    """Every candidate LongRoPE makes, ropekit makes, in the same order with the same factors (exactly),
    and both end on the same best: the operators (mutation, crossover, the monotonic constraint, the
    history) and the loop (selection, parents drawn, crossover falling back to mutation) are LongRoPE's."""
    scale = 4.0
    init = source.yarn_init_factors(32, 10000.0, scale, 512).astype(np.float32)
    target = np.linspace(1.0, scale, 16) ** 1.3 / scale**0.3
    objective = quadratic(target)
    ga, theirs = longrope_run(algorithm, init, scale, SMALL, seed, objective)
    ours = ropekit_run(algorithm, init, scale, Hyper(**SMALL), seed, objective)
    assert len(ours.candidates) == len(ga.made) == Hyper(**SMALL).candidates()
    for mine, their in zip(ours.candidates, ga.made, strict=True):
        assert mine.vector.dtype == their.factors.dtype
        assert np.array_equal(mine.vector, their.factors)
        assert mine.score == their.ppl
    assert np.array_equal(ours.best.vector, theirs)
    assert [g.best for g in ours.generations] == ga.best_ppl_records
    assert {c.origin for c in ours.candidates} == {"init", "mutation", "crossover"}


@pytest.mark.parametrize("algorithm", ["dim_mono", "dim_piece_mono"])
def test_candidates_keep_the_constraints(algorithm):
    """Every candidate is new (no two allclose), its factors non-decreasing and at least 1; dim_piece_mono's
    alpha <= beta within the dimensions. (No upper bound: a middle dimension draws up to its right neighbour
    plus a step, so in LongRoPE's source factors can creep past the scale; ``evolution.py`` says so.)"""
    scale, n = 3.0, 12
    init = source.yarn_init_factors(2 * n, 10000.0, scale, 256).astype(np.float32)
    hyper = Hyper(**SMALL)
    result = ropekit_run(algorithm, init, scale, hyper, 1, quadratic(np.full(n, 2.0)))
    vectors = [c.vector for c in result.candidates]
    for i, v in enumerate(vectors):
        factors = v[2:] if algorithm == "dim_piece_mono" else v
        assert np.all(np.diff(factors) >= 0) and factors.min() >= 1.0
        assert not any(np.allclose(w, v) for w in vectors[:i])
        if algorithm == "dim_piece_mono" and i > 0:
            assert 0 <= v[0] <= v[1] < n  # crossover may take the start's (0, 0): LongRoPE checks alpha <= beta


def test_mutation_and_crossover_alone_equal_longrope():
    """One operator at a time from a shared history, against LongRoPE's with numpy's global generator."""
    scale = 2.0
    init = source.yarn_init_factors(16, 10000.0, scale, 128).astype(np.float32)
    for algorithm, cls in (
        ("dim_mono", source.DimMonoGeneticAlgorithm),
        ("dim_piece_mono", source.DimPieceMonoGeneticAlgorithm),
    ):
        ga = cls(lambda f: 0.0, scale, SMALL, init)
        space = Space(algorithm, scale, 0.01, init.shape[0])
        first = source.Individual(ga.init_factors)
        ga.history.append(first)
        history = History()
        history.add(space.encode(init))
        rng = np.random.RandomState(5)
        source.set_seed(5)
        a, b = ga.mutate(first), mutate(space, space.encode(init), history, rng)
        assert np.array_equal(a.factors, b)
        c, d = ga.mutate(a), mutate(space, b, history, rng)
        assert np.array_equal(c.factors, d)
        child_theirs = ga.crossover(a, c)
        child_ours = crossover(space, b, d, history, 20, rng)
        assert (child_theirs is None) == (child_ours is None)
        if child_ours is not None:
            assert np.array_equal(child_theirs.factors, child_ours)
        assert crossover(space, b, b.copy(), history, 20, rng) is None  # equal parents: LongRoPE's None
        assert rng.rand() == np.random.rand()  # both drew the same number of numbers


@pytest.mark.parametrize(
    ("head_dim", "theta", "original", "scale"),
    [(64, 100000.0, 8192, 2.0), (128, 500000.0, 8192, 4.0), (32, 1e4, 512, 8.0)],
)
def test_yarn_start_equals_longrope(head_dim, theta, original, scale):
    spec = parse_rope(None, head_dim=head_dim, rope_theta=theta, max_position_embeddings=original)
    ours = yarn_start(spec, scale)
    theirs = source.yarn_init_factors(head_dim, theta, scale, original)
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs.astype(np.float32))
    assert ours[0] == 1.0 and ours[-1] == np.float32(scale)


@pytest.mark.parametrize(
    ("algorithm", "start"),
    [("dim_mono", [1.0] * 8), ("dim_piece_mono", [1.0] * 6 + [2.0] * 2)],  # piece: its last two move by crossover only
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_finds_a_known_optimum(algorithm, start, seed):
    """On a grid of 0.25 in [1, 2] over 8 dimensions (495 monotonic vectors), the search reaches the one
    minimum of sum |x - target| (a score of exactly 0) in 208 proposals, the best never getting worse."""
    target = np.array([1.0, 1.0, 1.25, 1.5, 1.5, 1.75, 2.0, 2.0])
    hyper = Hyper(
        population_size=16, max_time_budget=12, mutation_numbers=8, crossover_size=8, parents_size=8, list_step=0.25
    )
    space = Space(algorithm, 2.0, 0.25, 8)
    result = evolve(
        space, hyper, np.array(start), seed, lambda g, b: [float(np.abs(c.factors - target).sum()) for c in b]
    )
    assert result.best.score == 0.0 and np.array_equal(result.best.factors, target)
    bests = [g.best for g in result.generations]
    assert bests == sorted(bests, reverse=True) and bests[0] > 0
    assert len(result.generations) == hyper.max_time_budget + 1
