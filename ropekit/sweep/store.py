"""The results store of a sweep directory.

    DIR/results.csv    one row per cell (model, rope, layer_mix, length) once it has finished
    DIR/documents.csv  per (cell, document) NLL sums, so any aggregate can be recomputed
    DIR/meta.json      the spec, versions, device, content hashes of models and corpus, timing

Every write replaces the whole file atomically (write a temporary file, fsync, rename), so a
reader never sees half a row and a SIGKILL at any moment leaves the last complete state. A
document's score is stored as soon as it is computed and a cell's row once all its documents are,
so a rerun recomputes nothing that was finished.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ..cache import atomic_write
from .spec import SpecError, SweepSpec

RESULT_COLUMNS = [
    "model",
    "rope",
    "layer_mix",
    "length",
    "n_docs",
    "n_tokens",
    "nll",
    "ppl",
    "status",
    "seconds",
    "detail",
    "cell",
]
DOC_COLUMNS = ["cell", "model", "rope", "layer_mix", "length", "doc", "n_tokens", "nll_sum"]


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cell_key(definition: dict[str, Any]) -> str:
    """A cell's identity: a hash of everything that decides its numbers."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


class ResultStore:
    def __init__(self, out: Path, spec: SweepSpec, *, force: bool = False):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.meta_path, self.results_path, self.docs_path = (
            out / "meta.json",
            out / "results.csv",
            out / "documents.csv",
        )
        self.meta: dict[str, Any] = {}
        if self.meta_path.exists():
            try:
                self.meta = json.loads(self.meta_path.read_text())
            except ValueError as err:
                raise SpecError(f"{self.meta_path} is not valid JSON ({err}); move the directory aside") from None
            if self.meta.get("spec_sha256") != spec.sha256 and not force:
                raise SpecError(
                    f"{out} holds the results of a different sweep spec; use another --out, or --force to keep the "
                    "cells both specs share and drop the rest"
                )
        self.rows = {r["cell"]: r for r in _read_csv(self.results_path)}
        self.docs = {(r["cell"], r["doc"]): r for r in _read_csv(self.docs_path)}

    def done(self, cell: str) -> bool:
        return self.rows.get(cell, {}).get("status") == "ok"

    def doc_score(self, cell: str, doc: str) -> tuple[float, int] | None:
        """The stored (nll_sum, n_tokens) of a document in a cell; a non-finite one counts as not
        computed, so a rerun tries it again."""
        row = self.docs.get((cell, doc))
        if row is None or not math.isfinite(float(row["nll_sum"])):
            return None
        return float(row["nll_sum"]), int(row["n_tokens"])

    def add_doc(self, row: dict[str, Any]) -> None:
        self.docs[(row["cell"], row["doc"])] = row
        atomic_write(self.docs_path, _csv_text(DOC_COLUMNS, list(self.docs.values())))

    def add_cell(self, row: dict[str, Any]) -> None:
        self.rows[row["cell"]] = row
        atomic_write(self.results_path, _csv_text(RESULT_COLUMNS, list(self.rows.values())))

    def keep_only(self, cells: set[str]) -> None:
        """Drop stored rows of cells that are not part of the current spec (after --force)."""
        self.rows = {k: r for k, r in self.rows.items() if k in cells}
        self.docs = {k: r for k, r in self.docs.items() if k[0] in cells}
        atomic_write(self.results_path, _csv_text(RESULT_COLUMNS, list(self.rows.values())))
        atomic_write(self.docs_path, _csv_text(DOC_COLUMNS, list(self.docs.values())))

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        atomic_write(self.meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
