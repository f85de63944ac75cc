"""Running a sweep as one worker: claim units until none is left, run each on the weights loaded, and
write rows as cells finish; any number of workers share one directory (``ropekit/sweep/claims.py``)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..models import Precision, load_model
from ..tasks import is_trial
from .cells import Cell, plan_records
from .claims import LEASE_SECONDS, Claims, Unit, UnitLost, worker_id
from .meta import changed_models, check_resumable, sweep_meta
from .perplexity import cell_row
from .progress import Progress, seconds_estimator
from .spec import SweepSpec
from .store import ResultStore, StoredResults, merge_if_free
from .units import plan_sweep, shared_units, stored_state, unit_complete, unit_work
from .work import ModelWork, run_unit


@dataclass
class SweepSummary:
    out: Path
    cells: int
    computed: int
    reused: int
    failed: list[dict[str, Any]]
    seconds: float
    merged: bool = True  # DIR's files hold this worker's rows (else its shard does, till the holder merges)
    notes: list[str] = field(default_factory=list)  # what failed nothing: a worker killed, its units done by others

    @property
    def ok(self) -> bool:
        return not self.failed


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    force: bool = False,
    quiet: bool = False,
    worker: str | None = None,
    lease: float = LEASE_SECONDS,
    precision: Precision | None = None,
) -> SweepSummary:
    """Run (or resume) ``spec`` into ``out`` as one worker: claim units (``ropekit.sweep.claims``) until
    none is left, then wait for other workers' units to finish or go stale (taking those over);
    returns what this worker computed, what was stored before, and what failed. Any number of
    workers may run this on one ``out`` at once; the first holds DIR and merges the others' shards.
    ``precision``: the dtype the process that started this worker resolved (``plan_sweep``)."""
    started = time.perf_counter()
    if not quiet and sys.stderr.isatty():  # seconds before the bar can show anything: what they are spent on
        print(
            "sweep: planning: reading each model's config and tokenizer, tokenizing the corpus, pricing the passes",
            file=sys.stderr,
            flush=True,
        )
    plan = plan_sweep(spec, precision)  # bad input is refused here, before DIR is written
    corpus, cells, inputs = plan.corpus, plan.cells, plan.inputs
    worker = worker or worker_id()
    with ResultStore(out, spec, force=force, worker=worker) as store:  # holds DIR, or this worker's shard
        if store.primary and store.merge():  # what workers before this one left in their shards
            store.refresh()
        if force:  # a model whose files changed is computed again: its cells' keys are those of its plan
            changed = changed_models(store.meta, plan.checkpoints)
            store.keep_only({c.key for c in cells if c.model not in changed})
        else:
            check_resumable(store, plan, out)
        claims = Claims(out, worker, lease)
        meta = sweep_meta(spec, corpus, plan.checkpoints, out, plan.precision, started=store.meta.get("started"))
        earlier = float(store.meta.get("total_wall_seconds", store.meta.get("wall_seconds", 0.0)))  # resumed runs
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        store.write_plans(plan_records(cells, max(spec.lengths)))
        reused = sum(store.done(c.key) for c in cells)
        by_key = {c.key: c for c in cells}
        planned_units = shared_units(out, plan.units, force)
        units, whole = planned_units.units, planned_units.work()
        stored = {u.id: stored_state(store, u) for u in units}  # what they are planned against
        planned = {  # a unit DIR holds nothing of runs as a whole
            u.id: whole[u.id] if stored[u.id] == (0, 0, 0) else unit_work(spec, corpus, u, by_key, store, inputs)
            for u in units
        }
        # for ropekit status while it runs: this run's start and the nominal work done before it
        at_start = round(sum(u.seconds * stored_state(store, u)[0] / len(u.cells) for u in units), 3)
        meta |= {"run_started": now, "earlier_wall_seconds": earlier, "cells_done_at_start": reused}
        meta["nominal_done_at_start"] = at_start
        store.write_meta(meta)
        progress = Progress(len(cells), reused, seconds_estimator(spec, plan.precision, quiet), quiet=quiet)
        try:
            for work in planned.values():
                progress.add(work)
            run = _Worker(spec, plan.precision, corpus, by_key, store, claims, progress, planned, stored, inputs)
            run.loop(units, lease)
            run.finish_cells(cells, planned_units.documents())
        finally:
            progress.close()
        if store.primary:
            store.merge()
            wall = time.perf_counter() - started  # to the millisecond: a resumed run's last few cells can take < 0.1 s
            store.write_meta(
                {
                    **meta,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "wall_seconds": round(wall, 3),
                    "total_wall_seconds": round(earlier + wall, 3),
                }
            )
        primary = store.primary
    # this worker's rows to DIR's files: a holder still there has no unit left either, and lets go soon
    merged = primary or merge_if_free(out, wait=min(lease, 30.0)) is not None
    return SweepSummary(out, len(cells), run.computed, reused, run.failed, time.perf_counter() - started, merged)


@dataclass
class _Worker:
    """One worker's claim loop over the sweep's units (``run_sweep``): what it needs, and what it did."""

    spec: SweepSpec
    precision: Precision  # resolved once, when planned: loading a model does not resolve "auto" again
    corpus: Any
    by_key: dict[str, Cell]
    store: ResultStore
    claims: Claims
    progress: Progress
    planned: dict[str, ModelWork]  # per unit not finished yet: its work as the bar counts it
    stored: dict[str, tuple[int, int, int]]  # per unit: what DIR held of it when it was planned
    inputs: dict[str, tuple]
    computed: int = 0  # cell rows this worker wrote
    failed: list[dict[str, Any]] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)  # units this worker ran: a failed cell waits for the next run
    loaded: tuple[str, Any] | None = None  # the model whose weights are in memory

    def finished(self, unit: Unit) -> bool:
        """Whether ``unit`` needs no more work in this run: tried here, or all its work stored."""
        return unit.id in self.tried or unit_complete(self.store, unit)

    def loop(self, units: list[Unit], lease: float) -> None:
        """Claim units (longest first) until none is left, then wait while others hold live claims
        (a worker that stops beating leaves its unit to this one)."""
        store, claims, planned = self.store, self.claims, self.planned
        while True:
            store.refresh()
            for unit in units:  # others' finished units leave the bar
                if unit.id in planned and self.finished(unit):
                    self.progress.drop_work(planned.pop(unit.id))
            unit = claims.claim(units, self.finished)
            if unit is None:
                if not claims.others_working(units, self.finished):
                    return
                time.sleep(min(lease / 4, 5.0))
                continue
            store.refresh()  # another worker may have finished it and let go since the last look
            if self.finished(unit):
                claims.release(unit)
                continue
            try:
                self._run(unit)
            except UnitLost:
                self.progress.drop_work(planned.pop(unit.id, None))
                continue
            except BaseException:  # an interrupt, a full disk: the unit is free for the next run at once
                claims.release(unit)
                raise
            claims.release(unit)
            store.merge()

    def _run(self, unit: Unit) -> None:
        store, spec = self.store, self.spec
        if self.stored[unit.id] != stored_state(store, unit):  # a worker before this one stored some of it
            self.progress.drop_work(self.planned.pop(unit.id, None))
            self.planned[unit.id] = unit_work(spec, self.corpus, unit, self.by_key, store, self.inputs)
            self.progress.add(self.planned[unit.id])
        work = self.planned[unit.id]
        weights = work.trials or any(plans for _, plans in work.groups)  # else only rows of cells with no document
        if weights and (self.loaded is None or self.loaded[0] != unit.model):
            self.loaded = None  # the old weights go before the new ones load
            first = self.by_key[unit.cells[0]]  # the snapshot planned, not what a name means now, and its plan:
            self.progress.planning(f"loading the weights of {unit.model}")
            model = load_model(first.checkpoint, device=spec.device, dtype=self.precision, config=first.config)
            self.progress.planning("")
            self.loaded = (unit.model, model)  # the checkpoint's config is read once per process, when planned
        before = {key: store.rows.get(key) for key in unit.cells}
        with self.claims.heartbeat(unit):
            stop = self.claims.stop(unit)
            model = self.loaded[1] if weights else None
            self.failed += run_unit(model, work, self.corpus, spec, store, self.progress, stop)
        self.planned.pop(unit.id, None)
        self.tried.add(unit.id)
        self.computed += sum(store.rows.get(key) is not row for key, row in before.items())  # rows it wrote

    def finish_cells(self, cells: list[Cell], documents: dict[str, dict[int, list[str]]]) -> None:
        """Write the row of each cell whose documents (``documents``: per model, per length) are all stored
        but which has none: units of one document that finished together, each before the other had stored
        its document (every worker does this at its end; the same row twice is merged once)."""
        self.store.refresh()
        for c in cells:
            store, docs = self.store, documents.get(c.model, {}).get(c.length)
            if is_trial(c.task) or store.done(c.key) or not docs:
                continue
            if all((c.key, doc) in store.docs for doc in docs):
                row = cell_row(c, docs, store, self.spec.mode, None)
                store.add_cell(row)
                self.progress.cell_done(row)
                self.computed += 1


def workers_summary(
    spec: SweepSpec, out: Path, cells: list[Cell], reused: int, problems: list[str], started: float
) -> SweepSummary:
    """What workers that have stopped computed together (their shards merged when DIR is free). A worker
    ``problems`` names (killed, or stopped by an error) failed the sweep only if cells are left without
    a row (the rerun computes them): then it is a failed row; when the others finished its units, a
    note. Claims that killed workers left on finished units are removed (``Claims.drop_dead``)."""
    merge_if_free(out)
    after = StoredResults.read(out, spec)
    failed = [after.rows[c.key] for c in cells if c.key in after.rows and not after.done(c.key)]
    undone = sum(c.key not in after.rows for c in cells)
    if undone:
        failed += [
            {
                "model": "-",
                "rope": "-",
                "layer_mix": "-",
                "length": "-",
                "status": "worker",
                "detail": f"{problem}; {undone} cells are left undone: the same command computes them",
            }
            for problem in problems
        ]
    notes = [] if undone else [f"{problem}; its units were finished by the others" for problem in problems]
    _drop_dead_claims(out, after, spec.executor.lease)
    done = sum(after.done(c.key) for c in cells)
    return SweepSummary(out, len(cells), done - reused, reused, failed, time.perf_counter() - started, notes=notes)


def _drop_dead_claims(out: Path, stored: StoredResults, lease: float) -> None:
    """The end of a run of several workers: a worker killed after its unit's last row, once the others
    had ended, left its claim to nobody (``Claims.drop_dead``)."""
    try:
        units = [Unit.from_record(record) for record in json.loads((out / "units.json").read_text())]
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # no plan (no worker got so far): no claim
        return
    if (out / "claims").is_dir():
        Claims(out, worker_id(), lease).drop_dead(units, lambda unit: unit_complete(stored, unit))
