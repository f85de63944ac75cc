"""``ropekit status DIR`` for a search directory: its generation and best so far, read from its store
alone (``run.search_progress``: numpy, no model, no torch), writing nothing."""

from __future__ import annotations

from pathlib import Path

from .run import search_progress


def search_status(out: Path) -> str:
    p = search_progress(Path(out))
    state = "finished" if p.finished else f"generation {len(p.generations)}/{p.total} running"
    best = "none yet" if p.best is None else f"{p.best:.6g} ({p.best_key})"
    lines = [f"search in {out}: {state}; {p.scored} candidates scored (at most {p.proposals} proposed)"]
    lines.append(f"best so far: {best}")
    lines += [
        f"  generation {g.index}: best {g.best:.6g}, population {g.population:.6g}, {g.scored} scored"
        for g in p.generations
    ]
    return "\n".join(lines)
