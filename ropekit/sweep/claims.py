"""Work units of a sweep and the claims workers take on them through the results directory.

A unit is what shares passes and weights: one (model, layer mix, rope) with its perplexity cells
and retrieval cells. Units are planned from the spec alone, so every worker plans the same ones,
and ordered longest first by the cost model's predicted seconds, so the last worker does not run
alone for hours on the longest unit.

A worker claims a unit by creating ``DIR/claims/<unit>.json`` (exclusive create, under an
exclusive ``flock`` on ``DIR/claims/.lock`` held only while it looks and writes). The claim names
the worker (its Slurm array task, or host and pid) and while the worker runs the unit a thread
touches the file every quarter of the lease: its modification time is the heartbeat. A claim
not touched for a lease (seconds, by the filesystem's own clock, so workers on several hosts
agree) belongs to a worker that stopped, and the next worker that looks takes the unit over,
continuing from what the dead worker had stored. A worker whose claim was taken over (it stalled
for a lease) stops that unit at its next document. A requeued Slurm task has the id it had
before and takes its own claims back at once, and a claim whose process on this same host is gone
(killed) is taken over at once too.

A symbolic link in ``DIR/claims`` (or the folder one) is refused when a worker starts looking
(``no_links``); the lock, the clock and a claim being written are opened without following one.

A worker killed after its unit's last row but before it released the claim leaves the claim on a
unit that needs no more work, which no worker would take over: the next claim pass of any worker
removes it (once its owner is judged gone as above), and so does the end of a run of several
workers (``drop_dead``). ``ropekit status`` reads claims through :class:`ClaimView`, which writes
nothing: a claim it judges dead it does not count as running.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..cache import no_links, open_here, running

LEASE_SECONDS = 120.0  # how long a claim lasts without a heartbeat


class UnitLost(Exception):
    """This worker's claim on a unit was taken over by another: it stops the unit."""


class ClaimError(RuntimeError):
    """A results directory whose filesystem cannot hold claims (no atomic exclusive create, no locks)."""


@dataclass
class Unit:
    """A model's (layer mix, rope) pairs that run together, their cells' keys and predicted seconds.

    ``docs`` None: the whole of those pairs' cells. A large one split for many workers is one unit
    per document (``docs`` that one: the perplexity cells that score it, for that document only)
    and one unit of the rest (``docs`` empty: retrieval cells and cells no document is long enough
    for); a cell's row is written by whichever worker stores its last document."""

    model: str
    parts: list[tuple[str, str]]  # (layer mix, rope)
    cells: list[str]
    seconds: float = 0.0
    docs: list[str] | None = None
    id: str = field(init=False)

    def __post_init__(self) -> None:
        text = "\n".join(sorted(self.cells)) + ("" if self.docs is None else "\ndocs:" + "\n".join(self.docs))
        self.id = f"u{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def name(self) -> str:
        name = f"{self.model} " + ", ".join(f"{mix}/{rope}" for mix, rope in self.parts)
        if self.docs is None:
            return name
        return f"{name} [{', '.join(self.docs)}]" if self.docs else f"{name} [retrieval and the rest]"

    def record(self) -> dict[str, Any]:
        parts = [{"layer_mix": mix, "rope": rope} for mix, rope in self.parts]
        seconds = round(self.seconds, 1)
        record = {"id": self.id, "model": self.model, "parts": parts, "seconds": seconds, "cells": self.cells}
        return record if self.docs is None else {**record, "docs": self.docs}

    @staticmethod
    def from_record(record: dict[str, Any]) -> Unit:
        parts = [(p["layer_mix"], p["rope"]) for p in record["parts"]]
        unit = Unit(record["model"], parts, record["cells"], record["seconds"], record.get("docs"))
        if unit.id != record["id"]:
            raise ValueError(f"unit {record['id']} does not match its cells")
        return unit


def worker_id() -> str:
    """This worker's name in claims and shards: its Slurm array task (the same after a requeue), its
    Slurm job, or host and pid."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}"
    return f"{socket.gethostname()}-{os.getpid()}"


class ClaimView:
    """``DIR/claims`` read, never written: who holds which unit (:meth:`holder`). Ages are read on this
    host's clock (asking the filesystem's, as :class:`Claims` does, means touching a file), so a host
    whose clock is off the filesystem's by seconds sees heartbeats that many seconds older or newer."""

    def __init__(self, out: Path, lease: float = LEASE_SECONDS):
        if not lease > 0:
            raise ClaimError(f"lease = {lease!r}: a claim's lease must be a positive number of seconds")
        self.folder, self.lease = out / "claims", lease

    def _path(self, unit: Unit) -> Path:
        return self.folder / f"{unit.id}.json"

    def now(self) -> float:
        return time.time()

    def holder(self, unit: Unit, now: float | None = None) -> dict[str, Any] | None:
        """The live claim on ``unit`` (its record, with ``age``: seconds since its last heartbeat, at
        ``now`` on :meth:`now`'s clock, read when not given), or None when there is none, it is older
        than the lease, or its process on this host is gone."""
        path = self._path(unit)
        try:
            record, mtime = json.loads(path.read_text()), path.stat().st_mtime
        except (FileNotFoundError, ValueError):  # none, or one being written (it is created whole, then renamed)
            return None
        if record.get("host") == socket.gethostname() and not running(record.get("pid", -1)):
            return None  # its process on this host is gone: no need to wait for the lease
        age = (self.now() if now is None else now) - mtime
        return {**record, "age": age} if age <= self.lease else None


class Claims(ClaimView):
    """This worker's view of ``DIR/claims``: :meth:`claim` the next unit, :meth:`release` it when
    done; :meth:`heartbeat` (a context manager) keeps a claim alive while its unit runs."""

    def __init__(self, out: Path, worker: str, lease: float = LEASE_SECONDS):
        super().__init__(out, lease)
        self.worker = worker
        no_links(out, "claims")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lost: set[str] = set()  # units whose claim another worker took over
        _check_exclusive_create(self.folder)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = open_here(self.folder / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def now(self) -> float:
        """The filesystem's clock: the modification time it gives a file touched now."""
        fd = open_here(self.folder / ".clock", os.O_WRONLY | os.O_CREAT)
        try:
            os.utime(fd)
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    def claim(self, units: list[Unit], finished: Callable[[Unit], bool]) -> Unit | None:
        """The first unit (in the given order) that is not finished and has no live claim of another
        worker, now claimed by this one; None when there is none. Claims that stopped workers left on
        finished units are removed on the way (:meth:`_drop_dead`)."""
        with self._locked():
            now = self.now()
            for unit in units:
                if finished(unit):
                    self._drop_dead(unit, now)
                    continue
                held = self.holder(unit, now)
                if held is not None and held["worker"] != self.worker:
                    continue
                self._write(unit)
                self.lost.discard(unit.id)
                return unit
        return None

    def _write(self, unit: Unit) -> None:
        path, record = (
            self._path(unit),
            {
                "worker": self.worker,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "unit": unit.record() | {"cells": len(unit.cells)},
            },
        )
        path.unlink(missing_ok=True)  # a stale claim, or this worker's own (requeued): ours from now on
        temporary = path.with_suffix(f".{self.worker}.tmp")
        try:
            fd = open_here(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with open(fd, "w") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: say which file
            temporary.unlink(missing_ok=True)
            raise OSError(err.errno, err.strerror, str(path)) from None
        try:  # exclusive: the lock makes a clash impossible, this proves the filesystem agrees
            os.link(temporary, path)
        except FileExistsError:
            raise ClaimError(
                f"{path} appeared while {self.folder / '.lock'} was held: this filesystem's locks do not hold "
                "across processes; use a results directory on a local disk or a filesystem with POSIX locks"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)

    def _drop_dead(self, unit: Unit, now: float) -> None:
        """Remove the claim on a unit that needs no more work if its worker has gone (the caller holds
        the claims lock): killed between the unit's last row and its release, it left the claim to
        nobody, since nobody takes over a finished unit. A claim naming this worker is such a leftover
        too (a requeued Slurm task's earlier life): this worker holds none between its units."""
        held = self.holder(unit, now)
        if held is None or held["worker"] == self.worker:
            self._path(unit).unlink(missing_ok=True)

    def drop_dead(self, units: list[Unit], finished: Callable[[Unit], bool]) -> None:
        """Remove the claims stopped workers left on finished units (:meth:`_drop_dead`): the end of a
        run of several workers, where a worker killed after the others ended left its claim behind."""
        with self._locked():
            now = self.now()
            for unit in units:
                if finished(unit):
                    self._drop_dead(unit, now)

    def release(self, unit: Unit) -> None:
        """Drop this worker's claim on ``unit`` (its cells are stored)."""
        with self._locked():
            path = self._path(unit)
            try:
                if json.loads(path.read_text())["worker"] == self.worker:
                    path.unlink()
            except (FileNotFoundError, ValueError, KeyError):
                pass

    def stop(self, unit: Unit) -> Callable[[], None]:
        """A check to call between documents: raises UnitLost once ``unit``'s claim is lost."""

        def check() -> None:
            if unit.id in self.lost:
                raise UnitLost(unit.id)

        return check

    def others_working(self, units: list[Unit], finished: Callable[[Unit], bool]) -> list[dict[str, Any]]:
        """Live claims of other workers on units not finished: work this one may yet have to take over."""
        now = self.now()
        held = [(u, self.holder(u, now)) for u in units if not finished(u)]
        return [h for u, h in held if h is not None and h["worker"] != self.worker]

    @contextmanager
    def heartbeat(self, unit: Unit) -> Iterator[None]:
        """Touch ``unit``'s claim every quarter lease while the block runs; if another worker has taken
        it over, mark it lost (:attr:`lost`) so the unit stops at its next document."""
        stop = threading.Event()
        path = self._path(unit)

        def beat() -> None:
            while not stop.wait(self.lease / 4):
                try:
                    if json.loads(path.read_text())["worker"] != self.worker:
                        self.lost.add(unit.id)
                        return
                    os.utime(path, follow_symlinks=False)  # a link put there: not what it points to
                except (FileNotFoundError, ValueError, KeyError):
                    self.lost.add(unit.id)
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{unit.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _check_exclusive_create(folder: Path) -> None:
    """Refuse a filesystem where creating an existing name does not fail (claims would not be exclusive)."""
    probe = folder / f".probe-{socket.gethostname()}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        os.close(fd)
        raise ClaimError(
            f"{folder} is on a filesystem without atomic exclusive create (O_EXCL); workers could claim one unit "
            "twice: use a results directory on a local disk or a shared filesystem with POSIX semantics"
        )
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise ClaimError(f"{folder}: this filesystem cannot create files exclusively ({err.strerror})") from None
        raise
    finally:
        probe.unlink(missing_ok=True)
