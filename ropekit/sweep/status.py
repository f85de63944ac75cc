"""``ropekit status DIR``: where a sweep stands, read from its directory alone (no weights, no lock),
also while workers run: cells done, running (which worker, since when), pending and failed, the rate
so far and the time left.

The time left is the cost model's nominal seconds of the units not finished (DIR/units.json, as
ordered) scaled by what the finished ones took: the sweep's wall time (its runs before this one and
this one so far, from meta.json) over the nominal seconds of the units finished, divided among the
workers holding live claims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .claims import Claims, Unit
from .cost import duration
from .spec import SpecError, spec_from_dict
from .store import StoredResults


@dataclass
class UnitStatus:
    unit: Unit
    done: int
    failed: int
    claim: dict[str, Any] | None  # the live claim on it: worker, host, pid, since, age


@dataclass
class SweepStatus:
    out: Path
    units: list[UnitStatus] = field(default_factory=list)
    elapsed: float = 0.0  # seconds since the sweep started
    finished: bool = False

    @property
    def cells(self) -> int:
        return sum(len(u.unit.cells) for u in self.units)

    @property
    def done(self) -> int:
        return sum(u.done for u in self.units)

    @property
    def failed(self) -> int:
        return sum(u.failed for u in self.units)

    @property
    def running(self) -> list[UnitStatus]:
        return [u for u in self.units if u.claim is not None]

    def seconds_left(self) -> float | None:
        """Predicted wall seconds to the end (module docstring); None before any unit has finished."""
        whole = [u for u in self.units if u.done + u.failed == len(u.unit.cells)]
        nominal_done = sum(u.unit.seconds for u in whole)
        if not nominal_done or self.elapsed <= 0:
            return None
        left = sum(u.unit.seconds * (1 - (u.done + u.failed) / len(u.unit.cells)) for u in self.units)
        return left * self.elapsed / nominal_done / max(1, len(self.running))

    def text(self) -> str:
        pending = self.cells - self.done - self.failed
        running_cells = sum(len(u.unit.cells) - u.done - u.failed for u in self.running)
        lines = [
            f"{self.out}: {self.done} of {self.cells} cells done, {running_cells} running, "
            f"{pending - running_cells} pending, {self.failed} failed"
            + (" (finished)" if self.finished and not pending else "")
        ]
        if self.elapsed > 0 and self.done:
            lines.append(f"rate: {self.done / self.elapsed * 3600:.1f} cells/hour over {duration(self.elapsed)}")
        if pending and (left := self.seconds_left()) is not None:
            lines.append(f"time left: about {duration(left)} at the rate of the units finished so far")
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
    """The status of the sweep in ``out`` (refused, naming what is missing, where it holds no sweep)."""
    try:
        meta = json.loads((out / "meta.json").read_text())
        spec = spec_from_dict(meta["spec"])
    except FileNotFoundError:
        raise SpecError(f"{out} holds no sweep (no meta.json); start one with ropekit sweep --out {out}") from None
    except (ValueError, KeyError) as err:
        raise SpecError(f"{out / 'meta.json'} cannot be read ({err}); it was not written by this ropekit") from None
    try:
        records = json.loads((out / "units.json").read_text())
    except FileNotFoundError:
        raise SpecError(f"{out} has no units.json: it was written by a ropekit without workers") from None
    stored = StoredResults.read(out, spec, force=True)
    claims = Claims(out, worker="status", lease=spec.executor.lease)
    status = SweepStatus(out, finished="finished" in meta)
    now = claims.now()
    for record in records:
        unit = Unit(record["model"], [(p["layer_mix"], p["rope"]) for p in record["parts"]], record["cells"])
        unit.seconds = record["seconds"]
        done = sum(stored.done(key) for key in unit.cells)
        failed = sum(1 for key in unit.cells if key in stored.rows and not stored.done(key))
        status.units.append(UnitStatus(unit, done, failed, claims.holder(unit, now)))
    if status.finished:
        status.elapsed = float(meta.get("total_wall_seconds", 0.0))
    else:  # the runs before this one, and this one so far
        started = datetime.fromisoformat(meta.get("run_started", meta["started"]))
        now = datetime.now(timezone.utc)
        status.elapsed = float(meta.get("earlier_wall_seconds", 0.0)) + (now - started).total_seconds()
    return status
