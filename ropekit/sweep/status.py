"""``ropekit status DIR``: where a sweep stands, read from its directory alone (no weights, no lock),
also while workers run: cells done, running (which worker, since when), pending and failed, the rate
so far and the time left.

The time left is the cost model's nominal seconds of the work not done (DIR/units.json: a unit's
seconds shared by its cells) scaled by what this run's work took: the seconds since this run
started over the nominal seconds of the cells done since (meta.json holds both at its start), so
a run resumed after an interruption of unknown length still predicts from what it measured, and
the rate is that of all the workers together.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .claims import Claims, Unit
from .spec import SpecError, SweepSpec, spec_from_dict
from .store import StoredResults, check_links


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
    elapsed: float = 0.0  # a finished sweep's wall seconds, its runs together
    run_elapsed: float = 0.0  # seconds since this run started (0 once finished)
    done_at_start: int = 0  # cells done when this run started
    nominal_at_start: float = 0.0  # nominal seconds done when this run started (:meth:`nominal_done`)
    finished: bool = False
    costed: bool = True  # False: its units have no predicted seconds (a DIR without units.json)

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
        lines = [
            f"{self.out}: {self.done} of {self.cells} cells done, {running_cells} running, "
            f"{pending - running_cells} pending, {self.failed} failed"
            + (" (finished)" if self.finished and not pending else "")
        ]
        if self.finished and not pending and self.elapsed > 0:
            lines.append(f"rate: {self.done / self.elapsed * 3600:.1f} cells/hour over {duration(self.elapsed)}")
        elif self.run_elapsed > 0 and self.done > self.done_at_start:
            rate = (self.done - self.done_at_start) / self.run_elapsed * 3600
            lines.append(f"rate: {rate:.1f} cells/hour in this run ({duration(self.run_elapsed)} so far)")
        if pending and (left := self.seconds_left()) is not None:
            lines.append(f"time left: about {duration(left)} at the rate of the units finished so far")
        elif pending and not self.costed:
            lines.append("time left: not estimated (a DIR from a ropekit before units.json holds no unit costs)")
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
    stored = StoredResults.read(out, spec, force=True)
    # No claims folder: no worker ever claimed a unit here (nothing runs), and status writes nothing.
    claims = Claims(out, worker="status", lease=spec.executor.lease) if (out / "claims").is_dir() else None
    status = SweepStatus(out, finished="finished" in meta, costed=any(u.seconds for u in units))
    now = claims.now() if claims else 0.0
    for unit in units:
        for key in unit.cells:
            status.states[key] = "done" if stored.done(key) else "failed" if key in stored.rows else "pending"
        done = {key for key in unit.cells if stored.done(key) or _scored(stored, key, unit.docs)}
        finished, failed = len(done), sum(1 for key in unit.cells if key in stored.rows and key not in done)
        status.units.append(UnitStatus(unit, finished, failed, claims.holder(unit, now) if claims else None))
    if status.finished:
        status.elapsed = float(meta.get("total_wall_seconds", 0.0))
    else:  # this run so far (a run before it may have stopped without saying how long it ran)
        started = datetime.fromisoformat(meta.get("run_started", meta["started"]))
        status.run_elapsed = (datetime.now(timezone.utc) - started).total_seconds()
        status.done_at_start = int(meta.get("cells_done_at_start", 0))
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
