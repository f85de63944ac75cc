"""Work units: the (model, layer mix, rope) groups a worker claims, joined where passes are shared, priced
and ordered longest first, planned once by the first worker (DIR/units.json).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import atomic_write, open_here
from ..data import load_corpus
from ..eval.perplexity import frequency_signature
from ..models import Checkpoint, Precision, check_weights, dtype_device
from ..modes import SHARED
from .cells import Cell, plan_cells
from .claims import Unit
from .cost import NOMINAL_RATES, plan_seconds
from .spec import SweepSpec
from .store import StoredResults
from .trials import trial_seconds
from .work import ModelWork, plan_work


def plan_units(cells: list[Cell], spec: SweepSpec) -> list[Unit]:
    """The sweep's work units in spec order, from its cells alone (done or not, so every worker plans
    the same ones): one per (model, layer mix, rope), joined where passes are shared, that is where
    two have the same plan and frequencies at a length in first or yarn mode (dynamic is the default
    rope up to its trained length): a pass planned from another's memo then runs in the same worker,
    exactly as in a single process."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.layer_mix, c.rope), []).append(c)
    parent = {g: g for g in groups}

    def root(g: tuple) -> tuple:
        while parent[g] != g:
            g = parent[g]
        return g

    if spec.mode in SHARED and spec.document_task:
        first: dict[tuple, tuple] = {}  # (model, signature) -> the first group with it
        for g, group in groups.items():
            for length in spec.lengths:
                other = first.setdefault((g[0], frequency_signature(group[0].config, length)), g)
                parent[root(g)] = root(other)
    joined: dict[tuple, tuple[list, list]] = {}  # root -> (parts, cell keys)
    for g, group in groups.items():
        parts, keys = joined.setdefault(root(g), ([], []))
        parts.append(g[1:])
        keys += [c.key for c in group]
    return [Unit(root[0], parts, keys) for root, (parts, keys) in joined.items()]


@dataclass
class PlannedUnits:
    """The sweep's units, longest first, and the whole work of each (model, layer mix, rope) group they
    are parts of, planned as if nothing were stored."""

    units: list[Unit]
    whole: dict[str, ModelWork]  # per group's unit id
    group: dict[str, str]  # cell key -> its group's unit id

    def documents(self) -> dict[str, dict[int, list[str]]]:
        """Per model, the documents each length's perplexity cells score (as its units' work planned them)."""
        out: dict[str, dict[int, list[str]]] = {}
        for work in self.whole.values():
            out.setdefault(work.model, {}).update(work.documents)
        return out

    def work(self) -> dict[str, ModelWork]:
        """Each unit's part of its group's work."""
        return {u.id: _restrict(self.whole[self.group[u.cells[0]]], u) for u in self.units}


@dataclass
class SweepPlan:
    """All a sweep reads before it writes anything, so that bad input is refused before DIR is touched:
    the corpus, the dtype as this device resolves it (a device torch does not see is refused), the cells
    and each model's checkpoint (every weight there in its shape, from the files' headers), each model's
    tokenizer and ids (``inputs``) and the units."""

    corpus: Any
    precision: Precision
    cells: list[Cell]
    checkpoints: dict[str, Checkpoint]
    inputs: dict[str, tuple]
    units: PlannedUnits


def plan_sweep(spec: SweepSpec, precision: Precision | None = None) -> SweepPlan:
    """The :class:`SweepPlan` of ``spec``: what every worker, and the process that starts them, reads first.
    ``precision``: the spec's dtype as the process that started this worker resolved it (its workers
    must not resolve ``"auto"`` otherwise), else resolved here."""
    corpus = load_corpus(spec.corpus.path, format=spec.corpus.format, field=spec.corpus.field)
    precision = dtype_device(precision or spec.dtype, spec.device)[0]
    cells, checkpoints = plan_cells(spec, corpus.sha256, precision)
    for model, checkpoint in checkpoints.items():
        check_weights(checkpoint, next(c.config for c in cells if c.model == model))
    inputs: dict[str, tuple] = {}
    return SweepPlan(corpus, precision, cells, checkpoints, inputs, sweep_units(spec, corpus, cells, inputs))


def sweep_units(spec: SweepSpec, corpus, cells: list[Cell], inputs: dict) -> PlannedUnits:
    """The sweep's units, longest first, with their work, read from the spec, corpus and tokenizers alone
    (nothing is written: a sweep plans them before it opens DIR). Planned here: :func:`plan_units`,
    priced and ordered by :func:`longest_first`, and, with several workers, each unit larger than half a
    worker's share split into one unit per document (:func:`split_large`)."""
    by_key = {c.key: c for c in cells}
    nothing = StoredResults({}, [], [], [])  # units are ordered by all their work: a resumed run keeps the order
    groups = plan_units(cells, spec)
    whole = {u.id: unit_work(spec, corpus, u, by_key, nothing, inputs) for u in groups}
    units = split_large(longest_first(groups, whole), whole, spec.executor.workers)
    return PlannedUnits(units, whole, {key: u.id for u in groups for key in u.cells})


def shared_units(out: Path, planned: PlannedUnits, force: bool) -> PlannedUnits:
    """The units every worker of DIR takes: planned once, by the first worker, and written to
    ``out/units.json``; a worker that finds that file for these cells takes its units (so workers
    started with other settings, by hand or by another executor, share one plan)."""
    return dataclasses.replace(planned, units=_units_of(out, planned.units, force))


def _units_of(out: Path, units: list[Unit], force: bool) -> list[Unit]:
    """The units of DIR/units.json when it plans these very cells (a plan written by the first worker,
    whatever its settings), else ``units``, written there (exclusive create: of two first workers one
    plan wins, and both take it)."""
    path = out / "units.json"
    if force:
        path.unlink(missing_ok=True)
    text = json.dumps([u.record() for u in units], indent=1) + "\n"
    for _ in range(2):
        try:
            theirs = [Unit.from_record(r) for r in json.loads(path.read_text())]
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):  # not a plan this ropekit reads: replaced
            atomic_write(path, text)
            return units
        else:
            cells = {key for u in units for key in u.cells}
            if cells == {key for u in theirs for key in u.cells}:
                return theirs
            atomic_write(path, text)  # the plan of other cells (an older ropekit's keys): replaced
            return units
        tmp = path.with_name(f".units.{os.getpid()}.json")
        with open(open_here(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:  # a name others can guess
            f.write(text)
        try:
            os.link(tmp, path)  # exclusive: fails when another worker wrote its plan first
            return units
        except FileExistsError:
            continue
        finally:
            tmp.unlink()
    return units


def split_large(units: list[Unit], work: dict[str, ModelWork], workers: int) -> list[Unit]:
    """With several workers, each unit whose seconds exceed half a worker's share of the sweep
    (``sum / (2 * workers)``) and that scores several documents becomes one unit per document (its
    perplexity cells that score it; the seconds of its plans) and one of the rest (retrieval and
    cells without documents) when there is any; longest first again. One worker: ``units`` as they
    are (one process writes the same files, in the same order, as before units existed)."""
    if workers <= 1 or not units:
        return units
    share = sum(u.seconds for u in units) / (2 * workers)
    out: list[Unit] = []
    for unit in units:
        groups = work[unit.id].groups
        docs = list(dict.fromkeys(doc for _, plans in groups for doc in plans))
        if unit.seconds <= share or len(docs) < 2:
            out.append(unit)
            continue
        chosen = work[unit.id].documents
        per_doc = {c.key: set(chosen[c.length]) for cells, _ in groups for c in cells}
        for doc in docs:
            seconds = sum(
                plan_seconds(cells[0].config, plans[doc][1], NOMINAL_RATES) for cells, plans in groups if doc in plans
            )
            keys = [key for key in unit.cells if doc in per_doc.get(key, ())]
            out.append(Unit(unit.model, unit.parts, keys, seconds, [doc]))
        if rest := [key for key in unit.cells if not per_doc.get(key)]:
            out.append(Unit(unit.model, unit.parts, rest, unit.seconds - sum(u.seconds for u in out[-len(docs) :]), []))
    return sorted(out, key=lambda u: -u.seconds)


def _restrict(work: ModelWork, unit: Unit) -> ModelWork:
    """A unit's part of its group's work: its cells, with its documents' plans (``unit.docs``); the
    trials only in the unit of the rest (``docs`` empty) or the whole (``docs`` None)."""
    if unit.docs is None:
        return work
    keys = set(unit.cells)
    groups = [([c for c in cells if c.key in keys], plans) for cells, plans in work.groups]
    groups = [(cells, {d: plan for d, plan in plans.items() if d in unit.docs}) for cells, plans in groups if cells]
    return dataclasses.replace(work, groups=groups, trials=[] if unit.docs else work.trials)


def longest_first(units: list[Unit], work: dict[str, ModelWork]) -> list[Unit]:
    """``units`` with their seconds (the cost model's, of all their ``work``, at nominal rates:
    ``cost.NOMINAL_RATES``, so the order is the same on every machine and in every run of the spec),
    longest first; ties in spec order."""
    for unit in units:
        unit.seconds = 0.0
        for group, plans in work[unit.id].groups:
            unit.seconds += sum(plan_seconds(group[0].config, plan, NOMINAL_RATES) for _, plan in plans.values())
        for trials in work[unit.id].trials:
            for c in trials.cells:
                unit.seconds += trial_seconds(c.config, c, NOMINAL_RATES) * len(trials.todo[c.key])
    return sorted(units, key=lambda u: -u.seconds)  # stable


def stored_state(store: StoredResults, unit: Unit) -> tuple[int, int, int]:
    """How much of a unit ``store`` holds: cells done, documents and trials scored."""
    keys = set(unit.cells)
    return (
        sum(store.done(key) for key in keys),
        sum(1 for cell, _ in store.docs if cell in keys),
        sum(1 for cell, _ in store.trials if cell in keys),
    )


def unit_complete(store: StoredResults, unit: Unit) -> bool:
    """Whether ``store`` holds all of ``unit``'s work: every cell done, or (a unit of documents) every
    cell done or its documents of the unit stored."""
    if all(store.done(key) for key in unit.cells):
        return True
    return bool(unit.docs) and all(
        store.done(key) or all((key, doc) in store.docs for doc in unit.docs) for key in unit.cells
    )


def unit_work(spec, corpus, unit: Unit, by_key: dict[str, Cell], store: StoredResults, inputs: dict) -> ModelWork:
    """The work of a unit's cells that ``store`` does not hold (an empty ModelWork when none)."""
    pending = [by_key[key] for key in unit.cells if not store.done(key)]
    work = plan_work(spec, corpus, pending, store, inputs)
    return _restrict(work[0], unit) if work else ModelWork(unit.model, None, {}, [])
