"""results.csv rows: the columns that name a cell, every task's (a perplexity cell's numbers:
``perplexity.py``; a trial task's: ``trials.py``)."""

from __future__ import annotations

import time
from typing import Any

from .cells import Cell


def depth_text(depth: float | None) -> str:
    """A depth as the CSV files write it: ``f"{depth:g}"``, empty for a cell of a task that places no needle."""
    return "" if depth is None else f"{depth:g}"


def named(c: Cell) -> dict[str, Any]:
    """The columns that name a cell, first in its row: model, rope, layer mix, length, task."""
    return {"model": c.model, "rope": c.rope, "layer_mix": c.layer_mix, "length": c.length, "task": c.task}


def write_row(row: dict[str, Any], store, progress, started: float) -> list[dict[str, Any]]:
    """A finished cell's row, written: to results.csv, the seconds since its group ``started`` to
    timings.csv, and to the progress bar; ``[row]`` when it failed (the sweep's failed rows), else []."""
    store.add_cell(row)
    store.add_timing(row["cell"], time.perf_counter() - started)
    progress.cell_done(row)
    return [row] if row["status"] != "ok" else []
