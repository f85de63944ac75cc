"""The results store of a sweep directory.

    DIR/results.csv    a row per cell (model, rope, layer_mix, length, task, depth) once it has finished
    DIR/documents.csv  per (cell, document) NLL sums, bytes, words and block sums, so any aggregate
                       or interval can be recomputed
    DIR/trials.csv     per (retrieval cell, trial) the prompt's key, value and needle position and the
                       answer's score (exact, tokens correct, log-probability)
    DIR/timings.csv    the seconds each cell's row took (a log: the only thing that differs between
                       two runs of one spec on one machine, so it is kept out of results.csv)
    DIR/meta.json      the spec, versions, device, dtype, threads, content hashes of models and
                       corpus, interval settings, the command that reruns it, timing
    DIR/plans.json     the resolved plan of each (model, layer mix, rope): rope per layer, windows

Nothing in results.csv or documents.csv depends on the clock or on the order a resumed run
happened to compute things in, and floats are written as ``repr`` (exact) or with a fixed number
of digits, so one spec run twice on one machine writes the same two files to the byte.

A directory written by an older ropekit (other columns) is refused before anything in it is
touched: its numbers were made by other rules and do not mix with new rows. The exceptions
(``UPGRADES``) are a results.csv from before retrieval tasks (``PERPLEXITY_ONLY_COLUMNS``: its rows
are all perplexity cells with the same keys and numbers), one from before LongPPL's columns, and a
trials.csv from before generated answers (no ``match``, ``output``) or tasks' own numbers (no
``scores``): opening one for writing rewrites it (atomically) with those columns filled in, empty.

The CSV files only grow: each record is one line appended with a single write, then fsync'd, so
storing N documents costs N lines, not N rewrites. A cell retried after a failure gets another
row; the last row of a cell (or document) is the one that counts. A process killed mid-write
leaves a last line without its newline: it is never read as data, and the store cuts it off when
it next opens the file. A document's score is stored as soon as it is computed and a cell's row
once all its documents are, so a rerun recomputes nothing that was finished. meta.json and the
compaction of ``keep_only`` replace whole files atomically (temporary file, fsync, rename).

One process writes these files at a time: it holds an exclusive lock on DIR/.lock while the store
is open (the kernel releases it when the process dies, SIGKILL included). Other workers of the
same sweep (``worker=``: a second ``ropekit sweep`` on DIR, local worker processes, Slurm array
tasks) each write the same files in a shard of their own, ``DIR/shards/<worker>/``, under that
shard's own lock, and read everyone's rows: DIR's files and every shard's. The holder of DIR/.lock
merges the shards into DIR's files (:func:`merge_shards`): each whole line not yet there is
appended, so merging is idempotent and a torn last line of a killed worker is never merged. A
shard whose worker has gone (its lock is free) is removed once merged. Without ``worker=`` a
second process is refused instead. A write that fails (a full disk) names its file; what was
stored before it stays, and the same sweep resumes from it.

A symbolic link at any of DIR's names (``NAMES``: these files, ``.lock``, ``shards/`` and ``claims/``
with everything in them) is refused before anything is read or written (:func:`check_links`, issue
28): a lock opened, a line appended or cut through it would land outside DIR. The files are opened
without following a link (``open_here``) in case one appears while the sweep runs.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..cache import (
    Notice,
    append_lines,
    atomic_write,
    clean_temporaries,
    csv_text,
    no_links,
    open_here,
    read_csv,
    running,
)
from ..modes import PERPLEXITY
from ..tasks import get_task
from ..tasks.longppl import COLUMNS as LONGPPL_COLUMNS
from ..tasks.perplexity import COLUMNS as PERPLEXITY_COLUMNS
from .spec import SpecError, SweepSpec

RESULT_COLUMNS = [
    "model",
    "rope",
    "layer_mix",
    "length",
    "task",
    "depth",
    "n_docs",
    "n_tokens",
    *PERPLEXITY_COLUMNS,  # the perplexity task's (ropekit/tasks/perplexity.py)
    "n_trials",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "mean_logprob",
    *LONGPPL_COLUMNS,  # a task that fills its own columns (ropekit/tasks/longppl.py)
    "status",
    "detail",
    "cell",
]
RETRIEVAL_ONLY = ("task", "depth", "n_trials", "accuracy", "accuracy_lo", "accuracy_hi", "mean_logprob")
BEFORE_LONGPPL = [c for c in RESULT_COLUMNS if c not in LONGPPL_COLUMNS]  # results.csv before LongPPL
PERPLEXITY_ONLY_COLUMNS = [c for c in BEFORE_LONGPPL if c not in RETRIEVAL_ONLY]  # results.csv before tasks
DOC_COLUMNS = [
    "cell",
    "model",
    "rope",
    "layer_mix",
    "length",
    "doc",
    "n_tokens",
    "nll_sum",
    "n_bytes",
    "n_words",
    "blocks",
]
TRIAL_COLUMNS = [
    "cell",
    "model",
    "rope",
    "layer_mix",
    "task",
    "length",
    "depth",
    "trial",
    "key",
    "value",
    "position",
    "n_answer",
    "n_correct",
    "exact",
    "logprob",
    "match",  # a task scored on what the model writes (RULER's): the output's score in [0, 1]
    "output",  # and the output, a JSON string (one line whatever it holds)
    "scores",  # a task that scores a trial its own way (LongPPL's): its numbers, a JSON object
    "status",
    "detail",
]
TIMING_COLUMNS = ["cell", "seconds"]
FILES = {
    "results.csv": RESULT_COLUMNS,
    "documents.csv": DOC_COLUMNS,
    "trials.csv": TRIAL_COLUMNS,
    "timings.csv": TIMING_COLUMNS,
}
# Store files an older ropekit wrote whose rows read the same once the columns they lack are filled in:
# their header, and those columns' values. Opening one for writing rewrites it (atomically) so.
UPGRADES = {
    "results.csv": [
        (PERPLEXITY_ONLY_COLUMNS, {"task": PERPLEXITY, **dict.fromkeys(LONGPPL_COLUMNS, "")}),  # before tasks
        (BEFORE_LONGPPL, dict.fromkeys(LONGPPL_COLUMNS, "")),
    ],
    "trials.csv": [
        (
            [c for c in TRIAL_COLUMNS if c not in ("match", "output", "scores")],
            dict.fromkeys(("match", "output", "scores"), ""),
        ),
        ([c for c in TRIAL_COLUMNS if c != "scores"], {"scores": ""}),
    ],
}


def _upgrade(name: str, header: list[str], columns: list[str] | None = None) -> dict[str, str] | None:
    """The values an older file's rows lack, when ``header`` is one ``UPGRADES`` reads, or (``columns``: the
    header this sweep writes) a results.csv that lacks only task columns this sweep's tasks add; else None."""
    own = name == "results.csv" and header and _own_columns(header) is not None
    if own and columns and header != columns and header == columns[: len(header)]:
        return dict.fromkeys(columns[len(header) :], "")
    return next((fill for old, fill in UPGRADES.get(name, ()) if header == old), None)


def _own_columns(header: list[str]) -> list[str] | None:
    """The task columns a results.csv header has after ``RESULT_COLUMNS`` (a plugin task's own: a task that
    scores its own way fills them), or None when it is no header of this ropekit's."""
    if header[: len(RESULT_COLUMNS)] != RESULT_COLUMNS or not all(c.isidentifier() for c in header):
        return None
    return header[len(RESULT_COLUMNS) :]


def result_columns(path: Path, spec: SweepSpec) -> list[str]:
    """The columns of results.csv at ``path`` as this sweep writes it: ``RESULT_COLUMNS``, then the columns that
    tasks filling their own add beyond them (``TrialTask.columns``: a plugin's), those the file has first."""
    held = _own_columns(_header(path)) or []
    wanted = [c for task in spec.retrieval_tasks for c in get_task(task).columns if c not in RESULT_COLUMNS]
    return [*RESULT_COLUMNS, *dict.fromkeys([*held, *wanted])]


def parse_blocks(text: str) -> tuple[float, ...]:
    """A documents.csv ``blocks`` field: block NLL sums as space-separated ``repr`` floats."""
    return tuple(float(b) for b in text.split())


def format_blocks(blocks: tuple[float, ...]) -> str:
    return " ".join(repr(float(b)) for b in blocks)


# what a whole record must parse as
NUMBERS = {"n_tokens": int, "nll_sum": float, "n_bytes": int, "n_words": int, "blocks": parse_blocks}
NUMBERS |= {"nll": float, "ppl": float, "seconds": float, "trial": int, "n_correct": int, "logprob": float}
RETRIEVAL_NUMBERS = {"n_tokens": int, "n_trials": int, "accuracy": float, "mean_logprob": float}


def _readable(row: dict[str, str]) -> bool:
    """Whether a record's numbers parse (a failed cell's row has none to parse)."""
    if row.get("status", "ok") != "ok":
        return True
    retrieval = (row.get("task") or PERPLEXITY) != PERPLEXITY and "trial" not in row  # a retrieval cell's row
    numbers = RETRIEVAL_NUMBERS if retrieval else NUMBERS
    own = retrieval or bool(row.get("scores"))  # a task that scores its own way fills its own columns
    try:
        if row.get("scores") and not isinstance(json.loads(row["scores"]), dict):
            return False
        for column, kind in numbers.items():
            if column in row and (row[column] != "" or not own):
                kind(row[column])
    except ValueError:
        return False
    return True


class StoreError(RuntimeError):
    """A sweep directory that cannot be written now; the message says why and what to do."""


SCORES = ("results.csv", "documents.csv", "trials.csv")  # what decides which work is done
# what a sweep reads and writes in DIR (units.json: sweep/units.py; claims/: sweep/claims.py)
NAMES = (".lock", *FILES, "meta.json", "plans.json", "units.json", "shards", "claims")


def check_links(out: Path, *, instead: str = "") -> None:
    """Refuse a DIR with a symbolic link at one of ``NAMES`` or inside its folders (module docstring)."""
    no_links(out, *NAMES, instead=instead)


def shards(out: Path) -> list[Path]:
    """The workers' shard folders of DIR, by name (a link is none: merging would read and remove through it)."""
    folder = out / "shards"
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) if folder.is_dir() else []


def _whole_rows(path: Path) -> list[dict[str, str]]:
    """A store file's whole, readable lines (nothing when it does not exist)."""
    return [r for r in read_csv(path)[1] if _readable(r)]


def _stored_rows(out: Path, name: str) -> list[dict[str, str]]:
    """Every whole, readable row of ``name`` in DIR and in each worker's shard."""
    return [r for folder in [out, *shards(out)] for r in _whole_rows(folder / name)]


class Tails:
    """The lines appended to DIR's store files and to every shard's since the last read: a worker's
    refresh reads what is new, not the whole directory again. A file replaced since (an atomic
    rewrite: another inode, or fewer bytes) is read again from its start."""

    def __init__(self, out: Path):
        self.out = out
        self.read: dict[Path, tuple[int, int, list[str]]] = {}  # path -> (inode, bytes read, header)
        self.skipped: set[Path] = set()

    def skip(self, folder: Path) -> None:
        """Never read ``folder``'s files (this worker's own)."""
        self.skipped.add(folder)

    def new_rows(self, name: str) -> list[dict[str, str]]:
        rows = []
        for folder in [self.out, *shards(self.out)]:
            path = folder / name
            if folder in self.skipped:
                continue
            try:
                with open(open_here(path, os.O_RDONLY), "rb") as f:
                    stat = os.fstat(f.fileno())
                    inode, size = stat.st_ino, stat.st_size
                    known, offset, header = self.read.get(path, (inode, 0, []))
                    if known != inode or size < offset:
                        offset, header = 0, []
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            whole = data.rfind(b"\n") + 1
            records = list(csv.reader(io.StringIO(data[:whole].decode("utf-8"), newline="")))
            if not header and records:
                header, records = records[0], records[1:]
            whole_rows = (dict(zip(header, r, strict=True)) for r in records if len(r) == len(header))
            rows += [row for row in whole_rows if _readable(row)]
            self.read[path] = (inode, offset + whole, header)
        return rows


def _digest(row: dict[str, str], columns: list[str]) -> bytes:
    return hashlib.blake2b("\x1f".join(row.get(c, "") for c in columns).encode(), digest_size=16).digest()


class Merger:
    """Merges the workers' shards into DIR's files (the caller holds DIR/.lock), reading each shard
    line once: the holder of DIR keeps one for its whole run. A whole line is appended unless DIR's
    file holds the same record (by a digest of its fields, DIR's file read once), so merging is
    idempotent across processes, and a torn last line is never merged. A shard whose worker has gone
    (its lock is free) is removed once merged."""

    def __init__(self, out: Path):
        self.out, self.tails, self.have = out, Tails(out), {}
        self.columns = dict(FILES)  # results.csv's: DIR's own header, read with the file (task columns after)
        self.tails.skip(out)

    def saw(self, name: str, row: dict[str, Any]) -> None:
        """A record the holder appended to DIR's ``name`` itself."""
        if name in self.have:  # as the line reads back
            columns = self.columns[name]
            fields = next(csv.reader([csv_text(columns, [row], header=False)]))
            self.have[name].add(_digest(dict(zip(columns, fields, strict=True)), columns))

    def merge(self) -> dict[str, list[dict[str, str]]]:
        """Merge what the shards hold now; returns the rows appended, per file name."""
        folders = shards(self.out)
        if not folders:
            return {}
        appended = {}
        for name, columns in FILES.items():
            path = self.out / name
            if name not in self.have:
                if not path.exists():
                    atomic_write(path, csv_text(columns, []))
                header, rows, whole = read_csv(path)
                if whole < path.stat().st_size:  # its writer died mid-line (the caller holds DIR)
                    _cut(path, whole)
                if name == "results.csv" and _own_columns(header) is not None:
                    self.columns[name] = header
                self.have[name] = {_digest(r, self.columns[name]) for r in rows}
            columns = self.columns[name]
            new = []
            for row in self.tails.new_rows(name):
                if (digest := _digest(row, columns)) not in self.have[name]:
                    self.have[name].add(digest)
                    new.append(row)
            if new:
                append_lines(path, columns, *new)
                appended[name] = new
        for folder in folders:
            fd = open_here(folder / ".lock", os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its worker still runs: merged again later
            finally:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: a worker still runs
            (self.out / "shards").rmdir()
        return appended


def merge_shards(out: Path) -> int:
    """Append to DIR's files every whole line of the workers' shards that they do not hold yet, then
    remove the shards whose worker has gone (``Merger``). The caller holds DIR/.lock. Returns the
    lines appended."""
    return sum(len(rows) for rows in Merger(out).merge().values())


def _header(path: Path) -> list[str]:
    """A store file's columns ([] when it does not exist, or its header was cut short)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        first = f.readline()
    return next(csv.reader([first])) if first.endswith("\n") else []  # a header cut short is rewritten


def _files(folder: Path, spec: SweepSpec) -> dict[str, list[str]]:
    """The columns of each store file in ``folder`` as this sweep writes them (results.csv: :func:`result_columns`)."""
    return {**FILES, "results.csv": result_columns(folder / "results.csv", spec)}


def _check_header(path: Path, columns: list[str]) -> None:
    """Refuse a store file with other columns (written by an older ropekit), before anything is written."""
    header = _header(path)
    if _upgrade(path.name, header, columns) is not None:
        return  # read as it is, rewritten with the new columns when opened for writing
    if header and header != columns:
        raise StoreError(
            f"{path} was written by another version of ropekit (columns {','.join(header)}; this one writes "
            f"{','.join(columns)}); use a new --out (the directory is left as it is)"
        )


def _open_appendable(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """The rows of a store file (whose header ``_check_header`` passed); creates it with its
    header, and cuts off a torn last line so the next append starts on a line of its own. A whole
    line whose numbers do not parse (edited by hand, damaged) is left out with a notice: its cell
    or document is computed again."""
    header, rows, whole = read_csv(path)
    if (fill := _upgrade(path.name, header, columns)) is not None:
        rows = [{**r, **fill} for r in rows]
        atomic_write(path, csv_text(columns, rows))  # whole lines only: a torn last one is left out
        header, whole = columns, path.stat().st_size
    if bad := [r for r in rows if not _readable(r)]:
        warnings.warn(
            f"{path}: {len(bad)} line(s) with unreadable numbers ignored; computed again", Notice, stacklevel=3
        )
        rows = [r for r in rows if _readable(r)]
    if not header:  # new, or even its header was cut short
        atomic_write(path, csv_text(columns, []))
    elif whole < path.stat().st_size:
        warnings.warn(
            f"{path}: its last line was cut short (a write interrupted); ignored and removed", Notice, stacklevel=3
        )
        _cut(path, whole)
    return rows


def _cut(path: Path, whole: int) -> None:
    """Cut a torn last line off a store file: keep its first ``whole`` bytes, on disk before returning."""
    fd = open_here(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, whole)
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(out: Path, *, wait: bool = False) -> int:
    """Hold DIR/.lock exclusively for as long as the returned descriptor is open; who holds it is
    written in it, so a refused process can say. Held by another process: StoreError, or with
    ``wait`` the lock once it is free."""
    fd = open_here(out / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise StoreError(
            f"{out} is being written by another ropekit sweep ({holder}); wait for it to finish "
            "(the same command then resumes), or use another --out"
        ) from None
    os.ftruncate(fd, 0)
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
    return fd


def lock_holders(out: Path) -> list[str]:
    """Who may be writing DIR: the holders of DIR/.lock and of each shard's lock as each wrote itself in
    (``_lock``), read without taking the locks (a sweep starting while a reader held one would be
    refused). The file keeps its last holder after the lock is let go, so one whose process on this
    host has gone is left out; one on another host is kept (this host cannot tell)."""
    found = []
    for folder in [out, *shards(out)]:
        try:
            text = (folder / ".lock").read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            continue
        recorded = re.fullmatch(r"pid (\d+) on (\S+) since \S+", text)
        if text and not (recorded and recorded[2] == socket.gethostname() and not running(int(recorded[1]))):
            found.append(text)
    return found


def cell_key(definition: dict[str, Any]) -> str:
    """A cell's identity: a hash of everything that decides its numbers."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def _read_meta(path: Path, spec: SweepSpec, force: bool) -> dict[str, Any]:
    """DIR/meta.json (empty when there is none yet); a DIR of another spec is refused unless ``force``."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise SpecError(f"{path} is not valid JSON ({err}); move the directory aside") from None
    if meta.get("spec_sha256") != spec.sha256 and not force:
        raise SpecError(
            f"{path.parent} holds the results of a different sweep spec; use another --out, or --force to keep the "
            "cells both specs share and drop the rest"
        )
    return meta


class StoredResults:
    """What a sweep directory holds: its meta.json, each cell's last row and each (cell, document)'s
    last score. :meth:`read` reads them without the lock and without writing anything (a torn last
    line and unreadable numbers left out, as a sweep reads them): a dry run's view of DIR, the same
    cells done and documents scored as a sweep opening it would find."""

    def __init__(
        self, meta: dict[str, Any], rows: list[dict[str, str]], docs: list[dict[str, str]], trials: list[dict[str, str]]
    ):
        self.meta = meta
        self.rows: dict[str, dict[str, str]] = {}
        self.docs: dict[tuple[str, str], dict[str, str]] = {}
        self.trials: dict[tuple[str, int], dict[str, str]] = {}
        self._add(rows, docs, trials)

    def _add(self, rows: list[dict[str, str]], docs: list[dict[str, str]], trials: list[dict[str, str]]) -> None:
        """Rows read, in the order read. A cell (or document, or trial) retried after a failure has several
        rows: the last one counts, but never a failed row over an ok one (workers' shards are read in no
        order of time)."""
        for r in rows:
            if self.rows.get(r["cell"], {}).get("status") != "ok" or r.get("status") == "ok":
                self.rows[r["cell"]] = {"task": PERPLEXITY, **r}
        self.docs.update(((r["cell"], r["doc"]), r) for r in docs)
        for r in trials:
            key = (r["cell"], int(r["trial"]))
            if self.trials.get(key, {}).get("status") != "ok" or r.get("status") == "ok":
                self.trials[key] = r

    @classmethod
    def read(cls, out: Path, spec: SweepSpec, *, force: bool = False) -> StoredResults:
        """DIR as it is (nothing when it does not exist), refused as a sweep would refuse it: written by
        an older ropekit, or (unless ``force``) by another spec, or holding a link (:func:`check_links`)."""
        check_links(out)
        for name, columns in _files(out, spec).items():
            _check_header(out / name, columns)
        meta = _read_meta(out / "meta.json", spec, force)
        return cls(meta, *(_stored_rows(out, name) for name in SCORES))

    def done(self, cell: str) -> bool:
        return self.rows.get(cell, {}).get("status") == "ok"

    def doc_score(self, cell: str, doc: str) -> tuple[float, int] | None:
        """The stored (nll_sum, n_tokens) of a document in a cell; a non-finite one counts as not
        computed, so a rerun tries it again."""
        row = self.docs.get((cell, doc))
        if row is None or not math.isfinite(float(row["nll_sum"])):
            return None
        return float(row["nll_sum"]), int(row["n_tokens"])

    def trial_done(self, cell: str, trial: int) -> bool:
        """Whether a retrieval cell's trial has its score (a failed one is tried again)."""
        return self.trials.get((cell, trial), {}).get("status") == "ok"


class ResultStore(StoredResults):
    """A sweep directory open for writing by this process (a context manager: closing it releases
    its locks). The first process holds DIR/.lock and writes DIR's files; with ``worker`` (this
    worker's id) a process that finds DIR held writes ``DIR/shards/<worker>/`` instead (``primary``
    False). Either reads every worker's rows."""

    def __init__(self, out: Path, spec: SweepSpec, *, force: bool = False, worker: str | None = None):
        self.out = out
        check_links(out, instead="use another --out")  # first of all: nothing read or written through a link
        for name, columns in _files(out, spec).items():  # an older ropekit's directory is left untouched
            _check_header(out / name, columns)
        out.mkdir(parents=True, exist_ok=True)
        self._lock = self._shard_lock = -1
        self._merger: Merger | None = None  # the holder's, for the run
        try:
            self._lock = _lock(out)
        except StoreError as err:
            if worker is None:
                raise
            if force:
                raise StoreError(f"{err}: --force rewrites the directory, so it needs it to itself") from None
        self.files = out if self.primary else out / "shards" / worker
        try:
            if not self.primary:
                for name, columns in _files(self.files, spec).items():
                    _check_header(self.files / name, columns)
                self.files.mkdir(parents=True, exist_ok=True)
                self._shard_lock = _lock(self.files)
            self._open(spec, force)
        except BaseException:
            self.close()
            raise

    @property
    def primary(self) -> bool:
        """Whether this process holds DIR/.lock (writes DIR's files, merges the shards)."""
        return self._lock >= 0

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in ("_shard_lock", "_lock"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)

    def _open(self, spec: SweepSpec, force: bool) -> None:
        files = self.files
        self.meta_path = self.out / "meta.json"
        self.results_path, self.docs_path, self.trials_path, self.timings_path = (
            files / "results.csv",
            files / "documents.csv",
            files / "trials.csv",
            files / "timings.csv",
        )
        clean_temporaries(files)
        meta = _read_meta(self.meta_path, spec, force)
        self.result_columns = result_columns(self.results_path, spec)
        rows = _open_appendable(self.results_path, self.result_columns)
        docs = _open_appendable(self.docs_path, DOC_COLUMNS)
        trials = _open_appendable(self.trials_path, TRIAL_COLUMNS)
        _open_appendable(self.timings_path, TIMING_COLUMNS)
        super().__init__(meta, rows, docs, trials)
        self._tails = Tails(self.out)
        self._tails.skip(files)  # this worker's own rows are in memory already, and will be as it adds them
        self.refresh()  # the other workers'

    def refresh(self) -> None:
        """Add what the other workers have stored since the last look (between units: they finish
        theirs). Reads only the lines appended since (``Tails``)."""
        self._add(*(self._tails.new_rows(name) for name in SCORES))

    def merge(self) -> int:
        """Merge the shards into DIR's files (``Merger``, kept for the run) when this process holds DIR,
        and add what it appended to this view (a merged shard is removed, so only DIR holds its rows)."""
        if not self.primary:
            return 0
        self._merger = self._merger or Merger(self.out)
        appended = self._merger.merge()
        self._add(*(appended.get(name, []) for name in SCORES))
        return sum(len(rows) for rows in appended.values())

    def add_doc(self, row: dict[str, Any]) -> None:
        self.docs[(row["cell"], row["doc"])] = row
        self._write(self.docs_path, DOC_COLUMNS, row)

    def add_trial(self, row: dict[str, Any]) -> None:
        self.trials[(row["cell"], int(row["trial"]))] = row
        self._write(self.trials_path, TRIAL_COLUMNS, row)

    def add_cell(self, row: dict[str, Any]) -> None:
        self.rows[row["cell"]] = row
        self._write(self.results_path, self.result_columns, row)

    def add_timing(self, cell: str, seconds: float) -> None:
        self._write(self.timings_path, TIMING_COLUMNS, {"cell": cell, "seconds": f"{seconds:.2f}"})

    def _write(self, path: Path, columns: list[str], row: dict[str, Any]) -> None:
        append_lines(path, columns, row)
        if self._merger is not None:  # the holder's own line: a shard's copy of it is not merged again
            self._merger.saw(path.name, row)

    def keep_only(self, cells: set[str]) -> None:
        """Drop stored rows of cells that are not part of the current spec (after --force), and
        compact the files to one row per cell and document."""
        self.rows = {k: r for k, r in self.rows.items() if k in cells}
        self.docs = {k: r for k, r in self.docs.items() if k[0] in cells}
        self.trials = {k: r for k, r in self.trials.items() if k[0] in cells}
        atomic_write(self.results_path, csv_text(self.result_columns, list(self.rows.values())))
        atomic_write(self.docs_path, csv_text(DOC_COLUMNS, list(self.docs.values())))
        atomic_write(self.trials_path, csv_text(TRIAL_COLUMNS, list(self.trials.values())))

    def write_plans(self, plans: list[dict[str, Any]]) -> None:
        """DIR/plans.json: the resolved plan of each (model, layer mix, rope), for reports."""
        if self.primary:
            atomic_write(self.out / "plans.json", json.dumps(plans, indent=1) + "\n")

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        if self.primary:
            atomic_write(self.meta_path, json.dumps(meta, indent=1) + "\n")  # in its own order: the spec's axes run so


def merge_if_free(out: Path, *, wait: float = 0.0) -> int | None:
    """Merge the shards (:func:`merge_shards`) if no process holds DIR/.lock (or it lets go within
    ``wait`` seconds), holding it meanwhile, and return the lines appended; else None, leaving them to
    the holder, which merges before it lets go. How a worker that was not the first hands its rows to
    DIR's files at its end (waiting a little: a holder that merged while this worker still held its
    shard is about to let go, and the shard would be left behind), and how readers of DIR catch up.
    Without shards nothing is touched (0)."""
    check_links(out)
    if not shards(out):
        return 0
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = _lock(out)
            break
        except StoreError:
            if time.monotonic() >= deadline or not shards(out):
                return None if shards(out) else 0
            time.sleep(0.1)
    try:
        return merge_shards(out)
    finally:
        os.close(fd)
