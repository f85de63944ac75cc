"""``ropekit status DIR``: where a sweep stands, read from its directory alone (no weights, no lock,
nothing written anywhere: it works on a read-only DIR), also while workers run: cells done, running
(which worker, since when), pending and failed, the rate so far and the time left.

Rates count only the cells this run computed: meta.json holds, from this run's start, when it
started (``run_started``) and how many cells were done then (``cells_done_at_start``). The time left
is the cost model's nominal seconds of the work not done (DIR/units.json: a unit's seconds shared by
its cells) scaled by what this run's work took: the seconds since this run started over the nominal
seconds of the cells done since (``nominal_done_at_start``), so a run resumed after an interruption
of unknown length still predicts from what it measured, and the rate is that of all the workers
together.

A sweep is finished when every cell of its spec is done, whether or not meta.json says so: the
worker that writes "finished" there (the holder of DIR/.lock) may have been killed while others
computed the rest. One that is not finished and that nothing runs (no live claim, and every process
that held DIR's or a shard's lock has gone, ``lock_holders``) is said to be stopped, with neither a
rate nor a time left, which would only shrink and grow with the clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .claims import ClaimView, Unit
from .spec import SpecError, SweepSpec, spec_from_dict
from .store import StoredResults, check_links, lock_holders, shards


@dataclass
class UnitStatus:
    unit: Unit
    done: int  # its cells done (a unit of documents: whose documents it scores are stored)
    failed: int
    claim: dict[str, Any] | None  # the live claim on it: worker, host, pid, since, age


@dataclass
class SweepStatus:
    out: Path
    units: list[UnitStatus] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # per cell: done, failed or pending
    elapsed: float = 0.0  # the wall seconds of the run meta.json says finished
    run_elapsed: float = 0.0  # seconds since this run started (0 once meta.json says it finished)
    done_at_start: int = 0  # cells done when this run started
    nominal_at_start: float = 0.0  # nominal seconds done when this run started (:meth:`nominal_done`)
    finished: bool = False  # meta.json says this run finished
    costed: bool = True  # False: its units have no predicted seconds (a DIR without units.json)
    holders: list[str] = field(default_factory=list)  # processes that may be writing DIR (``lock_holders``)
    unmerged: int = 0  # shards of workers not merged into DIR's files yet

    @property
    def cells(self) -> int:
        return len(self.states)

    @property
    def done(self) -> int:
        return sum(state == "done" for state in self.states.values())

    @property
    def failed(self) -> int:
        return sum(state == "failed" for state in self.states.values())

    @property
    def running(self) -> list[UnitStatus]:
        return [u for u in self.units if u.claim is not None]

    @property
    def ended(self) -> bool:
        """Every cell done, or meta.json says the run finished and none is pending (some failed)."""
        pending = self.cells - self.done - self.failed
        return self.done == self.cells or (self.finished and not pending)

    @property
    def stopped(self) -> bool:
        """Not ended, and nothing runs: no live claim, and no process that may be writing DIR."""
        return not self.ended and not self.running and not self.holders

    def nominal_done(self) -> float:
        """The cost model's seconds of the cells done or failed, a unit's shared by its cells."""
        return sum(u.unit.seconds * (u.done + u.failed) / len(u.unit.cells) for u in self.units)

    def seconds_left(self) -> float | None:
        """Predicted wall seconds to the end (module docstring); None before this run has finished a cell."""
        done = self.nominal_done() - self.nominal_at_start
        if done <= 0 or self.run_elapsed <= 0:
            return None
        return (sum(u.unit.seconds for u in self.units) - self.nominal_done()) * self.run_elapsed / done

    def text(self) -> str:
        pending = self.cells - self.done - self.failed
        running = {key for u in self.running for key in u.unit.cells if self.states[key] == "pending"}
        running_cells = len(running)
        computed = self.done - self.done_at_start  # by this run
        lines = [
            f"{self.out}: {self.done} of {self.cells} cells done, {running_cells} running, "
            f"{pending - running_cells} pending, {self.failed} failed"
            + (" (finished)" if self.ended else " (stopped)" if self.stopped else "")
        ]
        if self.ended:  # a rate only from the wall time meta.json recorded (none when its writer was killed)
            if self.finished and self.elapsed > 0 and computed > 0:
                rate = computed / self.elapsed * 3600
                lines.append(
                    f"rate: {rate:.1f} cells/hour in the last run ({computed} cells over {duration(self.elapsed)})"
                )
        elif self.stopped:
            lines.append(
                "nothing runs (no unit is claimed; every sweep that held DIR or a shard has gone): "
                "the same command resumes"
            )
        else:
            if self.run_elapsed > 0 and computed > 0:
                rate = computed / self.run_elapsed * 3600
                lines.append(f"rate: {rate:.1f} cells/hour in this run ({duration(self.run_elapsed)} so far)")
            if pending and (left := self.seconds_left()) is not None:
                lines.append(f"time left: about {duration(left)} at the rate of the units finished so far")
            elif pending and not self.costed:
                lines.append("time left: not estimated (a DIR from a ropekit before units.json holds no unit costs)")
        if self.unmerged and self.ended:
            lines.append(
                f"{self.unmerged} worker shard(s) in {self.out / 'shards'} not merged into DIR's files yet: "
                "`ropekit report DIR` or the same sweep command merges them"
            )
        for u in self.running:
            claim = u.claim
            lines.append(
                f"  running {u.unit.name()}: {u.done}/{len(u.unit.cells)} cells, worker {claim['worker']} "
                f"(pid {claim['pid']} on {claim['host']}) since {claim['since']}, "
                f"last heartbeat {claim['age']:.0f} s ago"
            )
        for u in self.units:
            if u.failed:
                lines.append(f"  failed {u.unit.name()}: {u.failed} cells (rerun the sweep to try them again)")
        return "\n".join(lines)


def sweep_status(out: Path) -> SweepStatus:
    """The status of the sweep in ``out`` (refused, naming what is missing, where it holds no sweep, or
    naming the link, where it holds one: ``check_links``)."""
    check_links(out)
    try:
        meta = json.loads((out / "meta.json").read_text())
        spec = spec_from_dict(meta["spec"])
    except FileNotFoundError:
        raise SpecError(f"{out} holds no sweep (no meta.json); start one with ropekit sweep --out {out}") from None
    except (ValueError, KeyError) as err:
        raise SpecError(f"{out / 'meta.json'} cannot be read ({err}); it was not written by this ropekit") from None
    try:
        units = [Unit.from_record(record) for record in json.loads((out / "units.json").read_text())]
    except FileNotFoundError:  # written by a ropekit before workers: its units planned now, without their cost
        units = _planned_units(spec, meta)
    stored = StoredResults.read(out, spec, force=True)  # DIR's rows and every shard's: nothing to merge first
    claims = ClaimView(out, lease=spec.executor.lease)
    status = SweepStatus(out, finished="finished" in meta, costed=any(u.seconds for u in units))
    status.holders, status.unmerged = lock_holders(out), len(shards(out))
    now = claims.now()
    for unit in units:
        for key in unit.cells:
            status.states[key] = "done" if stored.done(key) else "failed" if key in stored.rows else "pending"
        done = {key for key in unit.cells if stored.done(key) or _scored(stored, key, unit.docs)}
        finished, failed = len(done), sum(1 for key in unit.cells if key in stored.rows and key not in done)
        status.units.append(UnitStatus(unit, finished, failed, claims.holder(unit, now)))
    status.done_at_start = int(meta.get("cells_done_at_start", 0))
    if status.finished:  # this run's own wall time (total_wall_seconds adds only the runs that said theirs)
        status.elapsed = float(meta.get("wall_seconds", meta.get("total_wall_seconds", 0.0)))
    else:  # this run so far (a run before it may have stopped without saying how long it ran)
        started = datetime.fromisoformat(meta.get("run_started", meta["started"]))
        status.run_elapsed = (datetime.now(timezone.utc) - started).total_seconds()
        status.nominal_at_start = float(meta.get("nominal_done_at_start", 0.0))
    return status


def _scored(stored: StoredResults, key: str, docs: list[str] | None) -> bool:
    """Whether a unit of documents has stored its documents of a cell."""
    return bool(docs) and all((key, doc) in stored.docs for doc in docs)


def _planned_units(spec: SweepSpec, meta: dict[str, Any]) -> list[Unit]:
    """The units of a DIR without units.json, planned from its spec as a sweep would (configs only, no
    weights), in the dtype its numbers were computed in; their seconds are unknown (0)."""
    from ..models.precision import resolve_dtype
    from .cells import plan_cells  # the planner (it imports the model code) only for such DIRs
    from .units import plan_units

    dtype = meta.get("dtype", {})
    resolved = dtype.get("resolved") if isinstance(dtype, dict) else dtype
    precision = resolve_dtype(resolved or spec.dtype, spec.device)
    cells, _ = plan_cells(spec, meta["corpus"]["sha256"], precision)
    return plan_units(cells, spec)


def duration(seconds: float) -> str:
    """Seconds as people read them: ``0.04 s``, ``4.2 s``, ``42 s``, ``3m05s``, ``2h07m``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds) // 60
    if minutes < 60:
        return f"{minutes}m{round(seconds) % 60:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
