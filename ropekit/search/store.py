"""The store of a search directory: every scored candidate, appended as it is scored.

    DIR/search.json             the spec the search was started with (its key decides every score)
    DIR/candidates/<worker>.csv one line per scored candidate: its key (a hash of its factors), the
                                generation and way it was first proposed, its score (``repr``, exact)
                                and its factors (space-separated ``repr``)
    DIR/claims/                 which worker scores which candidate now (``ropekit/sweep/claims.py``)
    DIR/result.json             the search's end: the best factors, their rope dicts, each generation
    DIR/rope.json, DIR/rope_parameters.json                   the found rope (``result.py``)
    DIR/search-report.md, DIR/figures/                        ``ropekit report DIR`` (``report.py``)

Each process (a second ``ropekit search`` on DIR, a Slurm array task) appends only to its own file,
named by its worker id (``ropekit.sweep.claims.worker_id``: a requeued array task has its old one), one
line per candidate in a single write, fsync'd; it reads every worker's file. A process killed mid-write
leaves a last line without its newline: it is never read, and its writer cuts it off when it next opens
the file. A candidate's score is looked up by its key, so the replayed search (``loop.py``) re-proposes
it and reads its score instead of computing it: nothing scored is lost or scored twice by one worker.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from ..cache import Notice, append_lines, atomic_write, csv_text, no_links, open_here, read_csv
from ..sweep.spec import SpecError
from .spec import SearchSpec

COLUMNS = ["key", "generation", "origin", "score", "factors"]
NAMES = ("search.json", "candidates", "claims", "result.json", "rope.json", "rope_parameters.json")


class SearchStoreError(RuntimeError):
    """A results directory that holds another search, or files another ropekit wrote."""


def _worker_file(folder: Path, worker: str) -> Path:
    return folder / (re.sub(r"[^\w.-]+", "-", worker) + ".csv")


class CandidateStore:
    """The scores of a search directory (:meth:`score`), read from every worker's file (:meth:`refresh`);
    this worker's new ones appended to its own (:meth:`add`)."""

    def __init__(self, out: Path, spec: SearchSpec | None = None, *, worker: str | None = None):
        self.out = Path(out)
        no_links(self.out, *NAMES)
        self.folder = self.out / "candidates"
        self.scores: dict[str, float] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.path = None if worker is None else _worker_file(self.folder, worker)
        if spec is not None:
            self._check_spec(spec)
        if self.path is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._open_own()
        self.refresh()

    def _check_spec(self, spec: SearchSpec) -> None:
        if (self.out / "meta.json").exists():
            raise SearchStoreError(f"{self.out} holds a sweep (meta.json); a search needs a directory of its own")
        path = self.out / "search.json"
        record = {"key": spec.key, "spec": spec.to_dict()}
        if path.exists():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise SearchStoreError(f"{path} is not a search's record; use another --out") from None
            if stored.get("key") != spec.key:
                differ = [k for k, v in spec.to_dict().items() if stored.get("spec", {}).get(k) != v]
                raise SpecError(
                    f"{self.out} holds another search (its {', '.join(differ) or 'settings'} differ); "
                    "rerun its own spec to resume it, or use another --out"
                )
        elif self.path is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(record, indent=2) + "\n")

    def _open_own(self) -> None:
        """Create this worker's file with its header, or cut off the torn last line a kill left."""
        header, _, whole = read_csv(self.path)
        if header and header != COLUMNS:
            raise SearchStoreError(
                f"{self.path} has columns {','.join(header)}, not {','.join(COLUMNS)}; use another --out"
            )
        if not header:
            atomic_write(self.path, csv_text(COLUMNS, []))
        elif whole < self.path.stat().st_size:
            warnings.warn(
                f"{self.path}: its last line was cut short (a write interrupted); removed", Notice, stacklevel=3
            )
            fd = open_here(self.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, whole)
                os.fsync(fd)
            finally:
                os.close(fd)

    def refresh(self) -> None:
        """Read every worker's scores (whole lines only; the first score of a key counts: all are equal)."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.csv")):
            _, rows, _ = read_csv(path)
            for row in rows:
                if row.get("key") and row["key"] not in self.scores:
                    try:
                        self.scores[row["key"]] = float(row["score"])
                    except (TypeError, ValueError):
                        continue
                    self.rows[row["key"]] = row

    def score(self, key: str) -> float | None:
        return self.scores.get(key)

    def add(self, key: str, generation: int, origin: str, score: float, factors) -> None:
        """Append one scored candidate as one line, on disk before returning."""
        row = {
            "key": key,
            "generation": generation,
            "origin": origin,
            "score": repr(float(score)),
            "factors": " ".join(repr(float(x)) for x in factors),
        }
        append_lines(self.path, COLUMNS, row)
        self.scores.setdefault(key, float(score))
        self.rows.setdefault(key, {k: str(v) for k, v in row.items()})


def read_record(out: Path) -> dict[str, Any]:
    """DIR/search.json: the spec a search directory was started with."""
    path = Path(out) / "search.json"
    no_links(Path(out), "search.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchStoreError(f"{out} holds no search (no search.json)") from None
    except (ValueError, UnicodeDecodeError):
        raise SearchStoreError(f"{path} is not a search's record") from None
