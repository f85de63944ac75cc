"""The executors of a sweep: one record each, in one registry that code outside ropekit adds to.

An executor says how a sweep's workers run, never what they compute: each worker is
``ropekit.sweep.run.run_sweep`` on one results directory, claiming work units until none is left
(``ropekit/sweep/claims.py``), so any executor's workers, and sweeps started by hand, share a DIR. A
record holds its name, its ``run(spec, out, launch)`` (returns what the workers computed, or None
when it only submitted them), and its own keys of the spec's ``[executor]`` table beside
``executor``, ``workers`` and ``lease`` (each also a ``ropekit sweep`` flag). ropekit's own are
``inline.py``, ``local.py`` and ``slurm.py`` beside this file; an installed package adds one through
the ``ropekit.executors`` entry-point group (each entry point names an :class:`Executor`).

This module imports no model code (a record's ``run`` imports it when it runs), so a spec is checked
without torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...plugins import Registry
from ...rope.checks import is_count

if TYPE_CHECKING:
    from ..run import SweepSummary
    from ..spec import SweepSpec

ENTRY_POINTS = "ropekit.executors"
KINDS = ("count", "text", "options")  # a positive integer; a string; a list of "--option[=value]"


@dataclass(frozen=True)
class Option:
    """A key of an executor's own: ``kind`` one of ``KINDS`` (repeated ``options`` flags add to the
    spec's list), ``help`` its flag's help, ``default`` what the executor uses when it is not given."""

    kind: str
    help: str = ""
    default: Any = None

    def check(self, key: str, value: Any) -> Any:
        """``value`` as this key takes it; raises ValueError naming the key and what is allowed."""
        if self.kind == "count":
            if not is_count(value):
                raise ValueError(f"{key} = {value!r} is not allowed; expected a positive integer")
        elif self.kind == "text":
            if not isinstance(value, str):
                raise ValueError(f"{key} = {value!r} is not allowed; expected a string")
        else:
            listed = [value] if isinstance(value, str) else value
            if not isinstance(listed, (list, tuple)) or not all(str(o).startswith("--") for o in listed):
                raise ValueError(f"{key} = {value!r} is not allowed; expected a list of options like '--exclusive'")
            return list(listed)
        return value


@dataclass(frozen=True)
class Launch:
    """What the command asked of this run: ``force`` (rewrite DIR), ``quiet`` (no progress bar),
    ``wait`` (an executor that submits waits for its workers)."""

    force: bool = False
    quiet: bool = False
    wait: bool = False


@dataclass(frozen=True)
class Executor:
    """One executor (module docstring); ``title`` names it in messages (``Slurm``)."""

    name: str
    run: Callable[[SweepSpec, Path, Launch], SweepSummary | None]
    options: Mapping[str, Option] = field(default_factory=dict)
    title: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"executor name {self.name!r} is not allowed; expected an identifier such as 'pbs'")
        if not callable(self.run):
            raise ValueError(f"executor {self.name!r}: run must be a function (spec, out, launch)")
        for key, option in self.options.items():
            if key in ("executor", "workers", "lease") or option.kind not in KINDS:
                raise ValueError(f"executor {self.name!r}: option {key!r} must be a new key of kind {KINDS}")


@dataclass
class Started:
    """The start of a run of several workers: the cells the spec plans (checked before any worker
    starts), how many DIR held already, and the dtype the spec resolved to here (``precision``: a
    worker on this machine takes it rather than resolve ``"auto"`` again)."""

    cells: list
    reused: int
    started: float
    precision: Any = None


def start_workers(spec: SweepSpec, out: Path, launch: Launch) -> Started:
    """What every executor of several workers does first: refuse ``force`` (one process rewrites DIR),
    plan the sweep as each worker will (bad input, or a DIR computed from other inputs, stops here,
    before any worker starts: ``plan_sweep``, ``check_resumable``) and count the cells DIR holds."""
    from ..meta import check_resumable
    from ..spec import SpecError
    from ..store import StoredResults
    from ..units import plan_sweep

    if launch.force:
        raise SpecError(
            "--force rewrites DIR, which one process must do alone; run the sweep once with --force "
            "--executor local --workers 1, then as many workers as you like"
        )
    started = time.perf_counter()
    plan, stored = plan_sweep(spec), StoredResults.read(out, spec)
    check_resumable(stored, plan, out)
    return Started(plan.cells, sum(stored.done(c.key) for c in plan.cells), started, plan.precision)


def finish_workers(spec: SweepSpec, out: Path, begun: Started, problems: list[str]) -> SweepSummary:
    """What the workers computed together; each worker in ``problems`` (killed, or stopped by an error) a
    failed row where cells are left undone, else a note (``ropekit.sweep.run.workers_summary``)."""
    from ..run import workers_summary

    return workers_summary(spec, out, begun.cells, begun.reused, problems, begun.started)


EXECUTORS: Registry[Executor] = Registry(
    "executor",
    Executor,
    ENTRY_POINTS,
    ["ropekit.sweep.executors.inline", "ropekit.sweep.executors.local", "ropekit.sweep.executors.slurm"],
)


def register_executor(record: Executor, *, replace: bool = False) -> Executor:
    """Add an executor to the registry and return it; a name already registered is refused unless
    ``replace=True``."""
    return EXECUTORS.register(record, replace=replace)


def executors() -> dict[str, Executor]:
    """Every registered executor, installed plugins included, by name (ropekit's own first)."""
    return EXECUTORS.all()


def get_executor(name: str) -> Executor | None:
    return EXECUTORS.get(name)
