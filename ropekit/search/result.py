"""A search's end, as files any ropekit command takes as they are:

    DIR/result.json           the best candidate (factors, score), its rope dict in both forms, where the
                              search started (the YaRN ramp's score), and each generation's best and mean
    DIR/rope.json             the found rope as a flat ``longrope`` rope dict (transformers v4
                              ``rope_scaling``): ``ropekit sweep --rope "found=$(cat DIR/rope.json)"``,
                              ``ropekit inspect``, ``ropekit export``, or a ``[ropes]`` table of a spec
    DIR/rope_parameters.json  the same in the v5 ``rope_parameters`` form (``rope_theta`` inside)

Written whole (atomically) by whichever worker ends the search; every worker writes the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..cache import atomic_write
from .loop import SearchResult


def result_record(plan, result: SearchResult) -> dict[str, Any]:
    from .run import rope_dict

    rope = rope_dict(plan, result.best.factors)
    start = result.candidates[0]
    return {
        "name": plan.spec.name,
        "model": plan.spec.model,
        "algorithm": plan.spec.algorithm,
        "objective": plan.spec.objective,
        "factors": plan.spec.factors,
        "scale": plan.scale,
        "scored_length": plan.length,
        "best": {
            "key": result.best.key,
            "score": result.best.score,
            "generation": result.best.generation,
            "origin": result.best.origin,
            "factors": [float(x) for x in result.best.factors],
        },
        "start": {"key": start.key, "score": start.score},
        "scored": len({c.key for c in result.candidates}),
        "proposed": len(result.candidates),
        "generations": [
            {"generation": g.index, "best": g.best, "population": g.population, "scored": g.scored}
            for g in result.generations
        ],
        "rope_scaling": rope,
        "rope_parameters": {**rope, "rope_theta": plan.rope_theta},
    }


def write_result(out: Path, plan, result: SearchResult) -> dict[str, Any]:
    record = result_record(plan, result)
    out = Path(out)
    atomic_write(out / "result.json", json.dumps(record, indent=2) + "\n")
    atomic_write(out / "rope.json", json.dumps(record["rope_scaling"]) + "\n")
    atomic_write(out / "rope_parameters.json", json.dumps(record["rope_parameters"]) + "\n")
    return record
