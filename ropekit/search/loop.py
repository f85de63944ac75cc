"""LongRoPE's search loop (microsoft/LongRoPE ``evolution/algorithms/genetic_base.py``,
``GeneticAlgorithm.run_genetic_algorithm``) with the scoring left to the caller.

The loop draws its random numbers in LongRoPE's order, and no draw depends on a score: a generation's
candidates (its mutations, then its crossovers) are all known before any of them is scored, so each
generation is one batch that any number of workers can score at once (LongRoPE scores the mutations,
then the crossovers; the candidates are the same). Scores decide only which candidates survive.

So the whole search is a function of its settings, the initial factors, the seed and the scores: run
again over a store of the scores already computed (``score_batch`` looking them up), it proposes the
same candidates in the same order and reaches the same result, which is how a killed search resumes
and how several workers share one (``ropekit/search/run.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from .evolution import History, Space, crossover, mutate


@dataclass(frozen=True)
class Hyper:
    """LongRoPE's hyper-parameters under its names (``evolution/default_hyper_params/dim_mono.json`` and
    ``dim_piece_mono.json``, the same numbers): the defaults are its, sized for 8 GPUs and a 7B model
    (64 + 40 x 32 = 1344 candidates scored). Each count is ``int(evo_scale * value)`` as LongRoPE reads it."""

    population_size: int = 64
    max_time_budget: int = 40  # generations
    mutation_numbers: int = 16  # mutations per generation
    crossover_size: int = 16  # crossovers per generation
    max_crossover_try: int = 20
    parents_size: int = 32  # the survivors of each generation
    list_step: float = 0.01  # the grid of factors
    evo_scale: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value, whole = getattr(self, f.name), f.name not in ("list_step", "evo_scale")
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            if not ok or (whole and value != int(value)):
                expected = "a positive integer" if whole else "a positive number"
                raise ValueError(f"{f.name} = {value!r} is not allowed; expected {expected}")
        for name in ("population_size", "parents_size", "max_crossover_try"):
            if self.count(name) < 1:
                raise ValueError(
                    f"{name} = {getattr(self, name)!r} x evo_scale {self.evo_scale:g} is 0; expected at least 1"
                )
        if self.count("parents_size") > self.count("population_size"):
            raise ValueError(
                f"parents_size = {self.count('parents_size')} is larger than population_size = "
                f"{self.count('population_size')}; the parents are the best of the population"
            )
        if self.count("parents_size") < 2 and self.count("crossover_size") > 0:
            raise ValueError("parents_size must be at least 2 for crossovers (two distinct parents)")

    def count(self, name: str) -> int:
        """A count as LongRoPE reads it: ``int(evo_scale * value)``."""
        return int(self.evo_scale * getattr(self, name))

    def candidates(self) -> int:
        """How many candidates the search proposes (some may share factors, and are scored once)."""
        per_generation = self.count("mutation_numbers") + self.count("crossover_size")
        return self.count("population_size") + self.count("max_time_budget") * per_generation


def factors_key(factors: np.ndarray) -> str:
    """A candidate's key: a hash of its factors' exact values (what its score depends on)."""
    text = " ".join(repr(float(x)) for x in factors)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Candidate:
    vector: np.ndarray  # the search vector (dim_piece_mono: alpha, beta, then the factors)
    factors: np.ndarray
    generation: int
    origin: str  # init | mutation | crossover
    score: float | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = factors_key(self.factors)


@dataclass(frozen=True)
class Generation:
    """After generation ``index``'s selection: the best score, the mean over the survivors (LongRoPE's
    population) and how many candidates have been scored in all."""

    index: int
    best: float
    population: float
    scored: int
    best_key: str


@dataclass
class SearchResult:
    best: Candidate
    generations: list[Generation]
    candidates: list[Candidate]


ScoreBatch = Callable[[int, list[Candidate]], list[float]]


def evolve(
    space: Space,
    hyper: Hyper,
    init_factors: np.ndarray,
    seed: int,
    score_batch: ScoreBatch,
    *,
    on_generation: Callable[[Generation], None] | None = None,
) -> SearchResult:
    """Run the search: ``score_batch(generation, candidates)`` returns their scores (lower is better;
    NaN counts as infinitely bad). LongRoPE seeds numpy's global generator with 42 (``set_seed``)."""
    rng = np.random.RandomState(seed)
    history = History()
    everyone: list[Candidate] = []

    def scored(generation: int, batch: list[Candidate]) -> None:
        for candidate, score in zip(batch, score_batch(generation, batch), strict=True):
            candidate.score = math.inf if math.isnan(score) else float(score)
        everyone.extend(batch)

    def made(vector: np.ndarray, generation: int, origin: str) -> Candidate:
        return Candidate(vector, space.decode(vector).copy(), generation, origin)

    init = space.encode(init_factors)
    population = [made(init, 0, "init")]
    history.add(init)
    for _ in range(hyper.count("population_size") - 1):
        population.append(made(mutate(space, init, history, rng), 0, "mutation"))
    scored(0, population)

    generations: list[Generation] = []
    parents_size = hyper.count("parents_size")

    def select(index: int) -> list[Candidate]:
        parents = sorted(population, key=lambda c: c.score)[:parents_size]  # stable, as LongRoPE's sorted
        scores = [c.score for c in parents]
        mean = math.fsum(scores) / len(scores) if all(map(math.isfinite, scores)) else math.inf
        generations.append(Generation(index, parents[0].score, mean, len(everyone), parents[0].key))
        if on_generation is not None:
            on_generation(generations[-1])
        return parents

    for index in range(hyper.count("max_time_budget")):
        parents = select(index)
        batch = []
        for _ in range(hyper.count("mutation_numbers")):
            idx = rng.randint(parents_size)
            batch.append(made(mutate(space, parents[idx].vector, history, rng), index + 1, "mutation"))
        for _ in range(hyper.count("crossover_size")):
            idx1, idx2 = sorted(rng.choice(parents_size, 2, replace=False))
            child = crossover(
                space, parents[idx1].vector, parents[idx2].vector, history, hyper.count("max_crossover_try"), rng
            )
            if child is None:  # LongRoPE: mutate the first parent instead
                batch.append(made(mutate(space, parents[idx1].vector, history, rng), index + 1, "mutation"))
            else:
                batch.append(made(child, index + 1, "crossover"))
        scored(index + 1, batch)
        population = parents + batch
    final = select(hyper.count("max_time_budget"))
    return SearchResult(final[0], generations, everyone)
