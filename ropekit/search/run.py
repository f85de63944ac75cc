"""Running a search on a results directory: its plan from the spec and the model's config
(:func:`plan_search`), its candidates scored through claims and stored as they are scored
(:func:`run_search`), so a killed search, or several workers on one directory, lose and repeat nothing;
its progress read back without a model or torch (:func:`search_progress`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..sweep.claims import LEASE_SECONDS, Claims, Unit, worker_id
from ..sweep.spec import SpecError
from .evolution import Space
from .loop import Candidate, Generation, Hyper, SearchResult, evolve
from .spec import SearchSpec, spec_from_record
from .store import CandidateStore, SearchStoreError, read_record

POLL_SECONDS = 2.0  # how often a worker with nothing to claim looks whether the others finished


@dataclass(frozen=True)
class SearchPlan:
    """What a search runs, as plain data (DIR/search.json keeps it): the length scale, the trained and
    scored lengths, the rope's theta and rotary dim, and LongRoPE's starting factors (float32)."""

    spec: SearchSpec
    scale: float
    trained: int
    length: int
    rope_theta: float
    rotary_dim: int
    start: np.ndarray
    other: np.ndarray  # the list not searched: short_factor all 1 (long search), long_factor YaRN's ramp (short)

    @property
    def space(self) -> Space:
        return Space(self.spec.algorithm, self.scale, self.spec.hyper.list_step, self.rotary_dim // 2)

    def record(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "trained": self.trained,
            "length": self.length,
            "rope_theta": self.rope_theta,
            "rotary_dim": self.rotary_dim,
            "start": [float(x) for x in self.start],
            "start_dtype": str(self.start.dtype),
            "other": [float(x) for x in self.other],
        }

    @classmethod
    def from_record(cls, spec: SearchSpec, record: dict[str, Any]) -> SearchPlan:
        start = np.array(record["start"], dtype=record["start_dtype"])
        fields = ("scale", "trained", "length", "rope_theta", "rotary_dim")
        return cls(spec, *(record[k] for k in fields), start, np.array(record["other"]))


def model_rope(spec: SearchSpec):
    """The checkpoint's resolved plan and the rope the search rescales: its global layers' (a flat rope
    dict applies there, Gemma 3's included), read from its config without its weights."""
    from ..models import model_config, read_model_config

    _, raw = read_model_config(spec.model)
    config = model_config(raw)
    ropes = [layer.rope for layer in config.layers if layer.rope is not None]
    full = [layer.rope for layer in config.layers if layer.rope is not None and layer.attention == "full_attention"]
    if not ropes:
        raise SpecError(f"search.model = {spec.model!r} has no rope on any layer (NoPE): nothing to search")
    return config, (full or ropes)[0]


def plan_search(spec: SearchSpec) -> SearchPlan:
    from .start import yarn_start

    _, rope = model_rope(spec)
    trained = rope.original_length
    scale = spec.scale(trained)
    if scale <= 1:
        raise SpecError(
            f"search.target_length = {spec.target_length} is not past the model's trained length {trained}; "
            "LongRoPE extends a context: expected a target above it"
        )
    ramp = yarn_start(rope, scale, beta_fast=spec.beta_fast, beta_slow=spec.beta_slow)
    other = np.ones(rope.rotary_dim // 2) if spec.factors == "long" else ramp.astype(np.float64)
    if spec.start is None:
        start = ramp
    else:  # LongRoPE's --init-factors: read as given (float64), its shape checked
        start = np.array(spec.start, dtype=np.float64)
        if start.shape != (rope.rotary_dim // 2,):
            raise SpecError(
                f"search.start has {start.shape[0]} factors; expected rotary_dim // 2 = {rope.rotary_dim // 2} "
                f"for {spec.model}"
            )
    length = spec.scored_length(trained)
    return SearchPlan(spec, scale, trained, length, rope.rope_theta, rope.rotary_dim, start, other)


def rope_dict(plan: SearchPlan, factors: np.ndarray) -> dict[str, Any]:
    """The ``longrope`` rope dict (v4 ``rope_scaling`` form) of a candidate: the searched list and the other
    (long: short_factor all 1; short: long_factor YaRN's ramp), the factor and the trained length."""
    searched, other = [float(x) for x in factors], [float(x) for x in plan.other]
    short, long = (other, searched) if plan.spec.factors == "long" else (searched, other)
    return {
        "rope_type": "longrope",
        "short_factor": short,
        "long_factor": long,
        "factor": plan.scale,
        "original_max_position_embeddings": plan.trained,
    }


class _Missing(Exception):
    """A replay reached a candidate nobody has scored yet."""


def run_search(
    plan: SearchPlan,
    out: Path,
    objective: Callable[[np.ndarray], float],
    *,
    worker: str | None = None,
    lease: float = LEASE_SECONDS,
    poll: float = POLL_SECONDS,
    on_generation: Callable[[Generation], None] | None = None,
) -> SearchResult:
    """Run (or resume, or join) the search of ``plan`` in ``out``: every candidate's score is looked up in
    the store, else claimed, computed by ``objective(factors)`` and appended; candidates other workers hold
    are waited for. Writes the result files at the end (``result.py``)."""
    from .result import write_result

    worker = worker or worker_id()
    store = CandidateStore(out, plan.spec, worker=worker)
    _write_plan(out, plan)
    claims = Claims(Path(out), worker, lease)

    def scored(unit: Unit) -> bool:
        """Whether a unit's candidate is stored, read afresh under the claims lock: a worker appends its
        score before it releases its claim, so a released claim's score is always seen (none twice)."""
        if store.score(unit.cells[0]) is None:
            store.refresh()
        return store.score(unit.cells[0]) is not None

    def score_batch(generation: int, batch: list[Candidate]) -> list[float]:
        first: dict[str, Candidate] = {}
        for c in batch:
            first.setdefault(c.key, c)  # each key scored once, as its first proposal
        while todo := [c for c in first.values() if store.score(c.key) is None]:
            units = [Unit(plan.spec.name, [("candidate", c.origin)], [c.key]) for c in todo]
            unit = claims.claim(units, finished=scored)
            if unit is None:  # the rest is being scored by other workers
                time.sleep(poll)
                store.refresh()
                continue
            candidate = first[unit.cells[0]]
            with claims.heartbeat(unit):
                score = float(objective(candidate.factors))
            store.add(
                candidate.key, generation, candidate.origin, math.inf if math.isnan(score) else score, candidate.factors
            )
            claims.release(unit)
            store.refresh()
        return [store.score(c.key) for c in batch]

    result = evolve(plan.space, plan.spec.hyper, plan.start, plan.spec.seed, score_batch, on_generation=on_generation)
    write_result(out, plan, result)
    return result


def _write_plan(out: Path, plan: SearchPlan) -> None:
    """Add the plan to DIR/search.json (once): status and the report replay the search from it."""
    import json

    from ..cache import atomic_write

    path = Path(out) / "search.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("plan") != plan.record():
        if "plan" in record:
            raise SearchStoreError(f"{path} was planned for another model config; use another --out")
        atomic_write(path, json.dumps({**record, "plan": plan.record()}, indent=2) + "\n")


@dataclass(frozen=True)
class Progress:
    """Where a search stands, from its store alone: generations done of ``total``, the best score so far
    (and its key), candidates scored of at most ``proposals``; ``finished`` once the last is scored."""

    generations: list[Generation]
    total: int
    scored: int
    proposals: int
    finished: bool
    best: float | None
    best_key: str | None


def search_progress(out: Path) -> Progress:
    """Replay the search over its stored scores up to the first missing one (numpy only, no model)."""
    record = read_record(out)
    if "plan" not in record:
        raise SearchStoreError(f"{out} holds a search that has not started scoring (no plan in search.json)")
    spec = spec_from_record(record["spec"])
    plan = SearchPlan.from_record(spec, record["plan"])
    store = CandidateStore(out)
    seen: list[Generation] = []
    best: list[float | str] = [math.inf, None]

    def lookup(generation: int, batch: list[Candidate]) -> list[float]:
        scores = [store.score(c.key) for c in batch]
        for c, s in zip(batch, scores, strict=True):
            if s is not None and s < best[0]:
                best[:] = [s, c.key]
        if any(s is None for s in scores):
            raise _Missing
        return scores

    finished = True
    try:
        evolve(plan.space, spec.hyper, plan.start, spec.seed, lookup, on_generation=seen.append)
    except _Missing:
        finished = False
    hyper: Hyper = spec.hyper
    found = best[1] is not None
    return Progress(
        seen,
        hyper.count("max_time_budget"),
        len(store.scores),
        hyper.candidates(),
        finished,
        best[0] if found else None,
        best[1],
    )
