"""LongRoPE's evolutionary search over per-dimension rescale factors, as microsoft/LongRoPE writes it
(``evolution/algorithms/genetic_base.py``, ``dim_mono.py``, ``dim_piece_mono.py``; its defaults in
``evolution/default_hyper_params/*.json``), with the random numbers drawn from an explicit
``numpy.random.RandomState`` instead of numpy's global one: seeded alike, the two draw the same numbers
in the same order, so ropekit's candidates are LongRoPE's (``tests/search/test_evolution.py`` proves it
against the source rewritten there).

A candidate is a vector of floats: the rescale factors themselves (``dim_mono``), or two integers
``alpha, beta`` followed by the factors (``dim_piece_mono``: factors of dimensions up to ``alpha`` set to 1,
past ``beta`` to the length scale, monotonic between). The constraint is LongRoPE's: factors non-decreasing
from the fastest dimension to the slowest. A candidate already in the history (``numpy.allclose``, as
LongRoPE's ``Individual.__eq__``) is never proposed twice.

What LongRoPE's source does that its paper does not say, kept as it is so results match:
* ``dim_piece_mono``'s mutation changes dimensions ``2 .. n-3`` of the vector only (``range(2, len - 2)``):
  the last two factors move only by crossover; its branch for the last dimension never runs.
* the first dimension of ``dim_mono`` draws from ``[1, next)`` (the next factor excluded), the others up to
  and including their neighbours.
* a mutation keeps mutating the same vector until it is new and monotonic: changes accumulate, and
  since a middle dimension draws up to its right neighbour plus a step, factors can creep past the
  scale (3.14 seen at scale 3); only the last dimension's draw is bounded by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALGORITHMS = ("dim_mono", "dim_piece_mono")
MUTATE_P = 0.3  # LongRoPE: each dimension mutates (or crosses over) with probability 0.3
CROSS_P = 0.5  # and takes the second parent's value with probability 0.5
ALPHA_BETA_STD = 2.0  # dim_piece_mono: std of the normal step of alpha or beta
MAX_ROUNDS = 100_000  # a mutation that finds nothing new in this many rounds: the space is used up


class SearchSpaceError(RuntimeError):
    """The search space holds no candidate the history does not already have."""


@dataclass(frozen=True)
class Space:
    """LongRoPE's search space: ``algorithm`` (``dim_mono`` | ``dim_piece_mono``), ``scale`` (the length scale:
    the largest factor, and past ``beta`` the factor itself), ``list_step`` (the grid of factors), ``n`` (the
    number of factors: rotary dim / 2)."""

    algorithm: str
    scale: float
    list_step: float
    n: int

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not allowed; expected one of {', '.join(ALGORITHMS)}")

    @property
    def piece(self) -> bool:
        return self.algorithm == "dim_piece_mono"

    def encode(self, factors: np.ndarray) -> np.ndarray:
        """The search vector of a list of factors (LongRoPE's ``preprocess_init_factors``)."""
        factors = np.array(factors)  # its dtype kept: LongRoPE's YaRN start is float32, and so its candidates
        return np.concatenate([[0, 0], factors]) if self.piece else factors

    def decode(self, vector: np.ndarray) -> np.ndarray:
        """The factors of a search vector (LongRoPE's ``extract_factors``)."""
        return vector[2:] if self.piece else vector

    def allowed(self, vector: np.ndarray) -> bool:
        """LongRoPE's constraint: factors non-decreasing (and ``alpha <= beta`` for ``dim_piece_mono``)."""
        factors = self.decode(vector)
        return bool(np.all(np.diff(factors) >= 0)) and (not self.piece or vector[0] <= vector[1])


class History:
    """Every candidate proposed so far; ``x in history`` as LongRoPE's ``Individual(x) in self.history``:
    ``numpy.allclose(h, x)`` for some ``h`` (``|h - x| <= 1e-8 + 1e-5 |x|`` everywhere)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._stack: np.ndarray | None = None

    def add(self, vector: np.ndarray) -> None:
        self._rows.append(np.array(vector))
        self._stack = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, vector: np.ndarray) -> bool:
        if not self._rows:
            return False
        if self._stack is None:
            self._stack = np.stack(self._rows)
        return bool(np.isclose(self._stack, vector).all(axis=1).any())


def mutate(space: Space, vector: np.ndarray, history: History, rng: np.random.RandomState) -> np.ndarray:
    """A new candidate from ``vector`` (LongRoPE's ``mutate``), added to ``history``."""
    new = _mutate_piece(space, vector, history, rng) if space.piece else _mutate_mono(space, vector, history, rng)
    history.add(new)
    return new


def _grid_top(space: Space) -> float:
    step = space.list_step
    return float(np.arange(1.0, 1.0 + space.scale + step, step).max())


def _used_up(space: Space) -> SearchSpaceError:
    return SearchSpaceError(
        f"no new candidate after {MAX_ROUNDS} mutation rounds: the search space ({space.algorithm}, "
        f"list_step {space.list_step:g}) is used up; lower list_step or population_size"
    )


def _mutate_mono(space: Space, vector: np.ndarray, history: History, rng: np.random.RandomState) -> np.ndarray:
    step, top = space.list_step, _grid_top(space)
    new, rounds = vector, 0
    while new in history or not np.all(np.diff(new) >= 0):
        if (rounds := rounds + 1) > MAX_ROUNDS:
            raise _used_up(space)
        last = new.shape[0] - 1
        for dim in range(new.shape[0]):
            if rng.rand() < MUTATE_P:
                if dim == 0:
                    choices = np.arange(1.0, new[dim + 1], step)
                elif dim == last:
                    choices = np.arange(new[dim - 1], top + step, step)
                else:
                    choices = np.arange(new[dim - 1], new[dim + 1] + step, step)
                if choices.shape[0] > 0:
                    new = new.copy()
                    new[dim] = choices[rng.randint(0, choices.shape[0])]
    return new


def _mutate_piece(space: Space, vector: np.ndarray, history: History, rng: np.random.RandomState) -> np.ndarray:
    step = space.list_step
    new, rounds = vector, 0
    while new in history or not np.all(np.diff(new[2:]) >= 0):
        if (rounds := rounds + 1) > MAX_ROUNDS:
            raise _used_up(space)
        alpha, beta = new[0], new[1]
        if rng.rand() < 0.5:
            alpha = int(rng.normal(alpha, ALPHA_BETA_STD))
        else:
            beta = int(rng.normal(beta, ALPHA_BETA_STD))
        while not (0 <= alpha < beta < space.n):
            if rng.rand() < 0.5:
                alpha = int(rng.normal(alpha, ALPHA_BETA_STD)) * 1.0
            else:
                beta = int(rng.normal(beta, ALPHA_BETA_STD)) * 1.0
        new = new.copy()
        new[0], new[1] = alpha, beta
        for dim in range(2, new.shape[0] - 2):  # LongRoPE's range: the last two factors are left out
            if rng.rand() < MUTATE_P:
                if dim <= alpha + 2:
                    new[dim] = 1.0
                elif dim > beta + 2:
                    new[dim] = space.scale
                else:
                    if dim == 2:
                        choices = np.arange(1.0, new[dim + 1], step)
                    else:
                        choices = np.arange(new[dim - 1], new[dim + 1] + step, step)
                    if choices.shape[0] > 0:
                        new = new.copy()
                        new[dim] = choices[rng.randint(0, choices.shape[0])]
    return new


def crossover(
    space: Space,
    first: np.ndarray,
    second: np.ndarray,
    history: History,
    max_crossover_try: int,
    rng: np.random.RandomState,
) -> np.ndarray | None:
    """A child of two parents (LongRoPE's ``crossover``), added to ``history``; None when the parents are
    equal or ``max_crossover_try`` passes found no new allowed child (LongRoPE then mutates ``first``)."""
    if np.allclose(first, second):
        return None
    new = first.copy()
    for _ in range(max_crossover_try):
        for i in range(new.shape[0]):
            if rng.rand() < MUTATE_P:
                new = new.copy()
                if rng.rand() < CROSS_P:
                    if space.piece and i < 2:
                        new[0], new[1] = second[0], second[1]
                    else:
                        new[i] = second[i]
                if new in history or not space.allowed(new):
                    continue
                history.add(new)
                return new
    return None
