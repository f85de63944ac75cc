"""Running a sweep: the grid of (model, layer mix, rope, length) cells, resumable and failure-tolerant.

Per model the weights load once; each (layer mix, rope) reuses them under another plan. Per
document, one forward pass serves every length whose rope frequencies are the same (static
ropes: one pass at the largest length; dynamic: one per length past its trained length;
longrope: one per regime). Each document's score and each finished cell go to disk at once.

What a cell scores, by ``mode`` (ropekit.eval.perplexity has each mode's source):

* documents (``choose_documents``): the same at every length; first and yarn cut documents to
  their first L ids, so every length uses the first ``n_docs`` documents in corpus order with at
  least the longest length's ids (``document_ids`` of the mode; fewer that long: each length its
  own, with a note); strided and rolling score whole documents, the first ``n_docs`` with at least
  2 ids (something to predict).
* its row (results.csv): ``nll`` and ``ppl`` as the mode's source weighs documents
  (``aggregate``: by tokens, yarn by documents; ``nll`` is log ``ppl``); ``ppl_lo``/``ppl_hi`` a
  95% percentile bootstrap (``ropekit.stats.ppl_interval``, seeded with ``seed_of`` the cell key)
  over its documents when it has at least ``stats.MIN_UNITS``, else over each document's blocks of
  ``BLOCK`` predictions, weighed as ``ppl`` is; ``interval`` names the method, or says why there is
  none (fewer than ``MIN_UNITS`` blocks: empty bounds); ``bits_per_byte`` = total NLL / total
  UTF-8 bytes / ln 2 and ``word_ppl`` = exp(total NLL / total words) over the cell's documents, as
  lm-evaluation-harness computes them
  (``text_counts``), whatever the mode.
* the scored text those bytes and words are counted in (``scored_text``): the document's own text
  when every id the mode does not predict is a special token (rolling always; strided when the ids
  start with BOS and stride < L; first and yarn when the document has exactly L ids), else
  ``tokenizer.decode(predicted ids, skip_special_tokens=True)`` (first, yarn: ids 1..L-1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import stats
from ..cache import Notice, atomic_write, file_sha256
from ..data import load_corpus, tokenize
from ..eval.perplexity import (
    BLOCK,
    WEIGHTING,
    Plan,
    Score,
    aggregate,
    combine,
    encoding,
    frequency_signature,
    memo_lengths,
    plan_document,
    score_plan,
    text_counts,
)
from ..models import (
    Checkpoint,
    ModelConfig,
    Precision,
    checkpoint_config,
    load_model,
    load_tokenizer,
    plan_config,
    read_model_config,
    resolve_dtype,
)
from ..modes import SHARED, WHOLE_DOCUMENTS
from ..tasks import TrialSettings, get_task
from .claims import LEASE_SECONDS, Claims, Unit, UnitLost, worker_id
from .cost import NOMINAL_RATES, machine_rates, measurable, pass_seconds, plan_seconds
from .spec import SpecError, SweepSpec, reproduce_command
from .store import ResultStore, StoredResults, cell_key, format_blocks, merge_if_free, parse_blocks
from .trials import (
    TRIAL_ANSWER_TOKENS,
    TrialGroup,
    check_lengths,
    failure_status,
    run_trials,
    trial_groups,
    trial_tokens,
)


@dataclass
class Cell:
    model: str
    rope: str
    layer_mix: str
    length: int
    key: str
    config: ModelConfig  # the resolved plan this cell runs
    docs: list[str] = field(default_factory=list)  # the documents this cell scores, in order
    task: str = "perplexity"
    depth: float | None = None  # a retrieval cell's needle depth, percent of the haystack
    settings: TrialSettings | None = None  # a trial task's cell: its task's settings
    checkpoint: Checkpoint | None = None  # where the model's files are, resolved once when planned


@dataclass
class SweepSummary:
    out: Path
    cells: int
    computed: int
    reused: int
    failed: list[dict[str, Any]]
    seconds: float
    merged: bool = True  # DIR's files hold this worker's rows (else its shard does, till the holder merges)

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_cells(
    spec: SweepSpec, corpus_sha: str, precision: Precision | None = None
) -> tuple[list[Cell], dict[str, Checkpoint]]:
    """Every cell of the grid with its resolved plan (no weights are read): each model is located once
    (a hub id: the commit its revision names now, part of its cells' keys, so numbers of two snapshots
    never mix) and its config filled with upstream's defaults once, then each (layer mix, rope) is
    resolved from it once. A rope that fails validation or a mix that does not fit a model stops the
    sweep here. ``precision``: what the spec's dtype resolves to on this machine (resolved here when
    not given). Returns the cells and each model's checkpoint."""
    cells, checkpoints = [], {}
    precision = precision or resolve_dtype(spec.dtype, spec.device)
    # "auto" is keyed by what it resolves to here, so that a DIR resumed on another machine never
    # mixes bf16 and fp32 numbers in a cell; other dtypes by the spec's word (the keys DIRs hold).
    dtype = precision.name if spec.dtype == "auto" else spec.dtype
    for model in spec.models:
        try:
            located, raw = read_model_config(model)
            checkpoint = checkpoint_config(raw)
        except ValueError as err:
            raise SpecError(f"models: {err}") from None
        checkpoints[model] = located
        snapshot = {"commit": located.hub.commit} if located.hub else {}  # local models' keys stay as they were
        for mix in spec.layer_mixes:
            for rope_name, rope in spec.ropes.items():
                try:
                    config = plan_config(checkpoint, rope_scaling=rope, layer_mix=mix)
                except ValueError as err:
                    raise SpecError(f"model {model!r}, rope {rope_name!r}, layer mix {mix!r}: {err}") from None
                record = config.plan_record()  # what decides the numbers, whatever the spec called it
                where = {"model": model, "rope": rope_name, "plan": record, "layer_mix": mix, **snapshot}
                cells += _retrieval_cells(spec, where, config, corpus_sha, dtype, located)
                for length in spec.lengths if "perplexity" in spec.tasks else ():
                    definition = {
                        "model": model,
                        "rope": rope_name,
                        "plan": record,
                        "layer_mix": mix,
                        "length": length,
                        "mode": spec.mode,
                        "stride": spec.stride,
                        "n_docs": spec.n_docs,
                        "corpus": corpus_sha,
                        "dtype": dtype,
                        "device": spec.device,
                        **snapshot,
                    }
                    key = cell_key(definition)
                    cells.append(Cell(model, rope_name, mix, length, key, config, checkpoint=located))
    return cells, checkpoints


def _retrieval_cells(
    spec: SweepSpec, where: dict[str, Any], config: ModelConfig, corpus: str, dtype, checkpoint: Checkpoint
) -> list[Cell]:
    """One (model, layer mix, rope)'s trial-task cells: per task, length and depth. A cell's key holds
    what decides its prompts (the task's settings; the corpus, for a task that reads it) and its plan."""
    cells = []
    for task, settings in spec.retrieval_tasks.items():
        reads_corpus = get_task(task).reads_corpus
        for length in spec.lengths:
            for depth in settings.depths:
                definition = {**where, "task": task, "length": length, "depth": depth, **settings.definition()}
                definition |= {"corpus": corpus if reads_corpus else None, "dtype": dtype, "device": spec.device}
                fields = where["model"], where["rope"], where["layer_mix"], length, cell_key(definition), config
                cells.append(Cell(*fields, task=task, depth=depth, settings=settings, checkpoint=checkpoint))
    return cells


def plan_records(cells: list[Cell]) -> list[dict[str, Any]]:
    """One record per (model, layer mix, rope): the resolved plan each of its cells ran."""
    seen: dict[tuple, dict[str, Any]] = {}
    for c in cells:
        seen.setdefault(
            (c.model, c.layer_mix, c.rope),
            {"model": c.model, "layer_mix": c.layer_mix, "rope": c.rope, **c.config.plan_record()},
        )
    return list(seen.values())


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    force: bool = False,
    quiet: bool = False,
    worker: str | None = None,
    lease: float = LEASE_SECONDS,
) -> SweepSummary:
    """Run (or resume) ``spec`` into ``out`` as one worker: claim units (``ropekit.sweep.claims``) until
    none is left, then wait for other workers' units to finish or go stale (taking those over);
    returns what this worker computed, what was stored before, and what failed. Any number of
    workers may run this on one ``out`` at once; the first holds DIR and merges the others' shards."""
    started = time.perf_counter()
    corpus = load_corpus(spec.corpus.path, format=spec.corpus.format, field=spec.corpus.field)
    precision = resolve_dtype(spec.dtype, spec.device)
    cells, checkpoints = plan_cells(spec, corpus.sha256, precision)
    worker = worker or worker_id()
    with ResultStore(out, spec, force=force, worker=worker) as store:  # holds DIR, or this worker's shard
        if store.primary and store.merge():  # what workers before this one left in their shards
            store.refresh()
        if force:
            store.keep_only({c.key for c in cells})
        else:
            _check_dtype(store.meta, precision, out)
            _check_snapshots(store.meta, checkpoints, out)
        claims = Claims(out, worker, lease)
        meta = _meta(spec, corpus, checkpoints, out, precision, started=store.meta.get("started"))
        earlier = float(store.meta.get("total_wall_seconds", store.meta.get("wall_seconds", 0.0)))  # resumed runs
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        store.write_plans(plan_records(cells))
        reused = sum(store.done(c.key) for c in cells)
        inputs: dict[str, tuple] = {}  # per model: tokenizer and token ids, for every unit's plan
        by_key = {c.key: c for c in cells}
        units, whole = sweep_units(spec, corpus, cells, inputs, out=out, force=force)
        stored = {u.id: _stored_state(store, u) for u in units}  # what they are planned against
        planned = {  # a unit DIR holds nothing of runs as a whole
            u.id: whole[u.id] if stored[u.id] == (0, 0, 0) else _unit_work(spec, corpus, u, by_key, store, inputs)
            for u in units
        }
        # for ropekit status while it runs: this run's start and the nominal work done before it
        at_start = round(sum(u.seconds * _stored_state(store, u)[0] / len(u.cells) for u in units), 3)
        meta |= {"run_started": now, "earlier_wall_seconds": earlier, "cells_done_at_start": reused}
        meta["nominal_done_at_start"] = at_start
        store.write_meta(meta)
        progress = _Progress(len(cells), reused, _estimate(spec, precision, quiet), quiet=quiet)
        try:
            for work in planned.values():
                progress.add(work)
            run = _Worker(spec, corpus, by_key, store, claims, progress, planned, stored, inputs)
            run.loop(units, lease)
            run.finish_cells(cells)
        finally:
            progress.close()
        if store.primary:
            store.merge()
            store.write_meta(
                {
                    **meta,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "total_wall_seconds": round(earlier + time.perf_counter() - started, 1),
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
    corpus: Any
    by_key: dict[str, Cell]
    store: ResultStore
    claims: Claims
    progress: _Progress
    planned: dict[str, ModelWork]  # per unit not finished yet: its work as the bar counts it
    stored: dict[str, tuple[int, int, int]]  # per unit: what DIR held of it when it was planned
    inputs: dict[str, tuple]
    computed: int = 0  # cell rows this worker wrote
    failed: list[dict[str, Any]] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)  # units this worker ran: a failed cell waits for the next run
    loaded: tuple[str, Any] | None = None  # the model whose weights are in memory

    def finished(self, unit: Unit) -> bool:
        """Whether ``unit`` needs no more work in this run: tried here, every cell done, or (a unit of
        documents) every cell's document stored."""
        store = self.store
        if unit.id in self.tried or all(store.done(key) for key in unit.cells):
            return True
        return bool(unit.docs) and all(
            store.done(key) or all((key, doc) in store.docs for doc in unit.docs) for key in unit.cells
        )

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
        if self.stored[unit.id] != _stored_state(store, unit):  # a worker before this one stored some of it
            self.progress.drop_work(self.planned.pop(unit.id, None))
            self.planned[unit.id] = _unit_work(spec, self.corpus, unit, self.by_key, store, self.inputs)
            self.progress.add(self.planned[unit.id])
        work = self.planned[unit.id]
        if self.loaded is None or self.loaded[0] != unit.model:
            self.loaded = None  # the old weights go before the new ones load
            checkpoint = self.by_key[unit.cells[0]].checkpoint  # the snapshot planned, not what a name means now
            self.loaded = (unit.model, load_model(checkpoint, device=spec.device, dtype=spec.dtype))
        before = {key: store.rows.get(key) for key in unit.cells}
        with self.claims.heartbeat(unit):
            stop = self.claims.stop(unit)
            self.failed += _run_unit(self.loaded[1], work, self.corpus, spec, store, self.progress, stop)
        self.planned.pop(unit.id, None)
        self.tried.add(unit.id)
        self.computed += sum(store.rows.get(key) is not row for key, row in before.items())  # rows it wrote

    def finish_cells(self, cells: list[Cell]) -> None:
        """Write the row of each cell whose documents are all stored but which has none: units of one
        document that finished together, each before the other had stored its document (every worker
        does this at its end; the same row twice is merged once)."""
        self.store.refresh()
        for c in cells:
            store = self.store
            if c.task != "perplexity" or store.done(c.key) or not c.docs:
                continue
            if all((c.key, doc) in store.docs for doc in c.docs):
                row = _cell_row(c, store, self.spec.mode, None)
                store.add_cell(row)
                self.progress.cell_done(row)
                self.computed += 1


def sweep_cells(spec: SweepSpec) -> list[Cell]:
    """The spec's cells (its corpus read, no weights): how a process that starts workers checks the
    spec before any of them runs, and counts their cells after."""
    corpus = load_corpus(spec.corpus.path, format=spec.corpus.format, field=spec.corpus.field)
    return plan_cells(spec, corpus.sha256, resolve_dtype(spec.dtype, spec.device))[0]


def workers_summary(
    spec: SweepSpec, out: Path, cells: list[Cell], reused: int, problems: list[str], started: float
) -> SweepSummary:
    """What workers that have stopped computed together (their shards merged when DIR is free), with a
    failed row per worker ``problems`` names (it stopped with an error; its units go to the rerun)."""
    merge_if_free(out)
    after = StoredResults.read(out, spec)
    failed = [after.rows[c.key] for c in cells if c.key in after.rows and not after.done(c.key)]
    failed += [
        {"model": "-", "rope": "-", "layer_mix": "-", "length": "-", "status": "worker", "detail": problem}
        for problem in problems
    ]
    done = sum(after.done(c.key) for c in cells)
    return SweepSummary(out, len(cells), done - reused, reused, failed, time.perf_counter() - started)


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

    if spec.mode in SHARED and "perplexity" in spec.tasks:
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


def sweep_units(
    spec: SweepSpec, corpus, cells: list[Cell], inputs: dict, *, out: Path | None = None, force: bool = False
) -> tuple[list[Unit], dict[str, ModelWork]]:
    """The sweep's units, longest first, and each one's whole work (planned as if nothing were stored).

    The units are planned once, by the first worker, and written to ``out/units.json``; a worker that
    finds that file for these cells takes its units (so workers started with other settings, by hand
    or by another executor, share one plan). Planned here: :func:`plan_units`, priced and ordered by
    :func:`longest_first`, and, with several workers, each unit larger than half a worker's share
    split into one unit per document (:func:`split_large`)."""
    by_key = {c.key: c for c in cells}
    nothing = StoredResults({}, [], [], [])  # units are ordered by all their work: a resumed run keeps the order
    groups = plan_units(cells, spec)
    whole = {u.id: _unit_work(spec, corpus, u, by_key, nothing, inputs) for u in groups}  # sets each cell's docs
    units = split_large(longest_first(groups, whole), whole, spec.executor.workers)
    if out is not None:
        units = _units_of(out, units, force)
    of_group = {key: u.id for u in groups for key in u.cells}
    return units, {u.id: _restrict(whole[of_group[u.cells[0]]], u) for u in units}


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
        tmp.write_text(text)
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
        per_doc = {key: set(c_docs) for key, c_docs in ((c.key, c.docs) for cells, _ in groups for c in cells)}
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
                one = pass_seconds(c.config, trial_tokens(c.length), NOMINAL_RATES, head_rows=TRIAL_ANSWER_TOKENS)
                unit.seconds += one * len(trials.todo[c.key])
    return sorted(units, key=lambda u: -u.seconds)  # stable


def _stored_state(store: StoredResults, unit: Unit) -> tuple[int, int, int]:
    """How much of a unit ``store`` holds: cells done, documents and trials scored."""
    keys = set(unit.cells)
    return (
        sum(store.done(key) for key in keys),
        sum(1 for cell, _ in store.docs if cell in keys),
        sum(1 for cell, _ in store.trials if cell in keys),
    )


def _unit_work(spec, corpus, unit: Unit, by_key: dict[str, Cell], store: StoredResults, inputs: dict) -> ModelWork:
    """The work of a unit's cells that ``store`` does not hold (an empty ModelWork when none)."""
    pending = [by_key[key] for key in unit.cells if not store.done(key)]
    work = plan_work(spec, corpus, pending, store, inputs)
    return _restrict(work[0], unit) if work else ModelWork(unit.model, None, {}, [])


def _run_unit(base, work: ModelWork, corpus, spec: SweepSpec, store: ResultStore, progress, stop) -> list:
    """One unit's pending cells as planned, on the weights already loaded: its (layer mix, rope) a plan
    over them. Returns the failed rows."""
    texts = Texts(work.tokenizer, {d.name: d.text for d in corpus.documents})
    memos: dict[str, dict] = {}  # per document's ids (a digest: other ids never share a pass): passes by signature
    failed = []
    for group, plans in work.groups:
        model = base.with_config(group[0].config)
        failed += _run_group(model, group, plans, work.tokens, texts, spec, store, progress, memos, stop)
    for trials in work.trials:
        model = base.with_config(trials.cells[0].config)
        failed += run_trials(model, trials, work.tokenizer, work.haystack, store, progress, stop)
    return failed


@dataclass
class ModelWork:
    """One model's pending cells, planned from its config and tokenizer alone (no weights are read):
    its documents' ids in the sweep's mode and, per (layer mix, rope), its cells and each document
    still to score with the cells that want it and its plan. The sweep runs it; a dry run prices it."""

    model: str
    tokenizer: Any
    tokens: dict[str, np.ndarray]
    groups: list[tuple[list[Cell], dict[str, tuple[list[Cell], Plan]]]]
    trials: list[TrialGroup] = field(default_factory=list)  # retrieval cells per (layer mix, rope)
    haystack: list[np.ndarray] = field(default_factory=list)  # the corpus's ids without BOS, for tasks that read it


def plan_work(
    spec: SweepSpec, corpus, pending: list[Cell], store: StoredResults, inputs: dict | None = None
) -> list[ModelWork]:
    """The work of the pending cells, model by model: each model's tokenizer (no weights), the corpus
    tokenized in the mode's encoding (``document_ids``, cached on disk), the documents each length
    scores (``choose_documents``, set as each cell's ``docs``), and every (layer mix, rope)'s plans
    (``_plans``, against what ``store`` holds). ``inputs`` keeps each model's tokenizer and ids for
    the next call."""
    work = []
    inputs = {} if inputs is None else inputs
    for name in spec.models:
        if not (cells := [c for c in pending if c.model == name]):
            continue
        if name not in inputs:
            tokenizer = load_tokenizer(cells[0].checkpoint)
            prefix, special_tokens = encoding(tokenizer, spec.mode)  # document_ids of the mode, cached
            inputs[name] = tokenizer, tokenize(corpus, tokenizer, prefix=prefix, special_tokens=special_tokens)
        tokenizer, tokens = inputs[name]
        chosen = choose_documents(tokens, spec.lengths, spec.mode, spec.n_docs)
        perplexity = [c for c in cells if c.task == "perplexity"]
        for cell in perplexity:
            cell.docs = chosen[cell.length]
        groups = _groups(perplexity)
        plans = _plans(groups, tokens, chosen, spec, store)
        work.append(ModelWork(name, tokenizer, tokens, list(zip(groups, plans, strict=True))))
        if retrieval := [c for c in cells if c.task != "perplexity"]:
            if any(get_task(task).reads_corpus for task in spec.retrieval_tasks):
                work[-1].haystack = list(tokenize(corpus, tokenizer, special_tokens=False).values())
            check_lengths(spec, tokenizer, work[-1].haystack)
            work[-1].trials = trial_groups(retrieval, store)
    return work


def choose_documents(tokens: dict[str, np.ndarray], lengths, mode: str, n_docs: int) -> dict[int, list[str]]:
    """The documents each length scores, in corpus order, the same at every length so that a curve
    over lengths reads one text: first and yarn (the first L ids of each) the first ``n_docs`` with at
    least the longest length's ids, as the YaRN paper's truncations of long documents; strided and
    rolling (whole documents) the first ``n_docs`` with at least 2 ids. Where fewer than ``n_docs``
    documents are that long, each length takes the first ``n_docs`` with at least its own length,
    and a note says that lengths then read different text."""
    if mode in WHOLE_DOCUMENTS:
        whole = [doc for doc, ids in tokens.items() if len(ids) >= 2][:n_docs]
        return {length: whole for length in lengths}
    longest = [doc for doc, ids in tokens.items() if len(ids) >= max(lengths)][:n_docs]
    if len(longest) == n_docs:
        return {length: longest for length in lengths}
    warnings.warn(
        f"only {len(longest)} of the {n_docs} documents asked for have {max(lengths)} ids, the longest length: "
        "each length takes the first documents with at least its own length, so lengths read different text",
        Notice,
        stacklevel=2,
    )
    return {length: [doc for doc, ids in tokens.items() if len(ids) >= length][:n_docs] for length in lengths}


def _ids_key(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


class Texts:
    """The scored text of a document at a length, and its UTF-8 bytes and words (``scored_text``)."""

    def __init__(self, tokenizer, texts: dict[str, str]):
        self.tokenizer, self.texts = tokenizer, texts
        self.special = set(tokenizer.all_special_ids)
        self.known: dict[tuple, tuple[int, int]] = {}  # every rope of a length predicts the same positions

    def counts(self, doc: str, ids: np.ndarray, predicted: list[tuple[int, int]]) -> tuple[int, int]:
        key = (doc, tuple(predicted))  # one model's tokenizer: a document has one set of ids
        if key not in self.known:
            text = scored_text(self.tokenizer, ids, predicted, self.texts[doc], special=self.special)
            self.known[key] = text_counts(text)
        return self.known[key]


def scored_text(
    tokenizer, ids: np.ndarray, predicted: list[tuple[int, int]], text: str, *, special: set[int] | None = None
) -> str:
    """The text of the predictions ``predicted`` (``(first, stop)`` ranges of positions in ``ids``)
    make of a document ``text``: the text itself when every position left out holds a special token
    (BOS, rolling's prefix: every text token is predicted), else the predicted ids decoded with
    special tokens skipped. Its bytes and words are what bits per byte and word perplexity divide by."""
    special = set(tokenizer.all_special_ids) if special is None else special
    mask = np.zeros(len(ids), dtype=bool)
    for first, stop in predicted:
        mask[first:stop] = True
    if all(int(i) in special for i in ids[~mask]):
        return text
    return tokenizer.decode([int(i) for i in ids[mask]], skip_special_tokens=True)


def _check_dtype(meta: dict[str, Any], precision: Precision, out: Path) -> None:
    """Refuse to add numbers in one dtype to a DIR that holds another's (``dtype = "auto"`` resolved
    on another machine), as for a changed spec."""
    stored = meta.get("dtype", {})
    if isinstance(stored, str):  # meta.json of a ropekit before "auto": the dtype's name
        stored = {"asked": stored, "resolved": stored, "reason": "asked for"}
    if stored.get("resolved", precision.name) != precision.name:
        raise SpecError(
            f"{out} holds numbers computed in {stored['resolved']} ({stored.get('reason')}); here dtype "
            f"{stored.get('asked')} is {precision.name} ({precision.reason}); use another --out, or --force to "
            f"drop them and compute in {precision.name}"
        )


def _check_snapshots(meta: dict[str, Any], checkpoints: dict[str, Checkpoint], out: Path) -> None:
    """A DIR resumed where a hub id's revision now names another commit is refused: its cells were
    computed from the snapshot meta.json records."""
    for model, checkpoint in checkpoints.items():
        stored = meta.get("models", {}).get(model, {}).get("commit")
        if checkpoint.hub and stored and stored != checkpoint.hub.commit:
            raise SpecError(
                f"{out} holds cells of {model} at commit {stored}, but revision {checkpoint.hub.revision!r} is now "
                f"commit {checkpoint.hub.commit}; use another --out, or --force to drop those cells"
            )


def _meta(
    spec: SweepSpec, corpus, checkpoints: dict[str, Checkpoint], out: Path, precision: Precision, *, started: str | None
) -> dict[str, Any]:
    """meta.json: what it takes to reproduce the sweep (the spec as ``spec_from_dict`` takes it back
    and the ``ropekit sweep`` command that reruns it, content hashes of corpus and models and, for a
    hub id, the repository, revision and commit that ran, versions,
    the dtype the models ran in and why, device, threads, interval settings), and when it first
    started (kept across resumed runs)."""
    meta = {
        "name": spec.name,
        "spec": spec.to_dict(),
        "spec_sha256": spec.sha256,
        "corpus": {
            "source": spec.corpus.path,
            "name": corpus.name,
            "documents": len(corpus.documents),
            "sha256": corpus.sha256,
        },
        "models": {m: {**c.record(), "sha256": file_sha256(c.path)} for m, c in checkpoints.items()},
        "versions": {
            "ropekit": __import__("ropekit").__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "dtype": {"asked": spec.dtype, "resolved": precision.name, "reason": precision.reason},
        "device": spec.device,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "intervals": {
            "method": "percentile bootstrap",
            "resamples": stats.N,
            "level": stats.LEVEL,
            "units": f"the cell's documents when it has at least {stats.MIN_UNITS}, else each document's blocks "
            f"resampled within it; no interval from fewer than {stats.MIN_UNITS} units",
            "min_units": stats.MIN_UNITS,
            "block": BLOCK,
            "weighting": "as ppl: by tokens (yarn: by documents; blocks by tokens)",
            "seed": "seed_of(cell key): the first 4 bytes of the SHA-256 of the cell key, little-endian, seeding "
            "numpy.random.RandomState",
        },
    }
    if spec.retrieval_tasks:
        meta["retrieval"] = {
            "exact": "every answer token is the argmax given the prompt and the answer tokens before it (greedy "
            "decoding's outcome), scored teacher-forced in one forward of prompt + answer - 1 tokens",
            "accuracy_interval": f"Wilson score interval, {stats.LEVEL:.0%}, over the cell's trials",
            "depth": "percent of the haystack's tokens before the needle line",
            "answer": "the value after a space, tokenized as the question's continuation (lm-evaluation-harness's "
            "split of context and continuation)",
            "prompts": "each trial from numpy default_rng([seed, crc32(task), length, round(depth * 1e6), trial])",
            "tasks": {task: get_task(task).description for task in spec.retrieval_tasks},
        }
    try:
        meta["command"] = reproduce_command(meta, out)
    except ValueError:  # a rope name no flag can carry: the spec above still reruns it
        meta["command"] = None
    return {**meta, "started": started or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _groups(cells: list[Cell]) -> list[list[Cell]]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.layer_mix, cell.rope), []).append(cell)
    return list(groups.values())


def _plans(
    groups: list[list[Cell]], tokens: dict, chosen: dict[int, list[str]], spec: SweepSpec, store: StoredResults
) -> list[dict[str, tuple[list[Cell], Plan]]]:
    """Per group, each document still to score: the cells that still want it and its plan (from the
    group's resolved config: planning reads no weights). A plan serves every length of the group that
    scores the document, scored or not, so a resumed sweep runs the passes an uninterrupted one would
    and writes the same bits (a length read as the prefix of a longer pass differs in the last bits
    from a pass of its own). Plans are chained through what each leaves in its document's memo, as
    they will run; they are the progress bar's total and a dry run's passes."""
    computed: dict[str, dict] = {}  # per document's ids: signature -> tokens its running sums will cover
    plans = []
    for cells in groups:
        work = {}
        for doc in dict.fromkeys(d for c in cells for d in c.docs):
            if todo := [c for c in cells if doc in c.docs and store.doc_score(c.key, doc) is None]:
                held = computed.setdefault(_ids_key(tokens[doc]), {})
                lengths = [n for n in spec.lengths if doc in chosen[n]]  # done or not (``chosen``: every length's)
                plan = _plan(cells[0].config, lengths, len(tokens[doc]), spec, held)
                held.update(plan.kept())
                work[doc] = (todo, plan)
        plans.append(work)
    return plans


def _plan(model, lengths: list[int], n_tokens: int, spec: SweepSpec, computed: dict) -> Plan:
    """``plan_document`` for a model or its resolved config."""
    return plan_document(model, n_tokens, lengths, mode=spec.mode, stride=spec.stride, computed=computed)


def _run_group(
    model,
    cells: list[Cell],
    work: dict[str, tuple[list[Cell], Plan]],
    tokens: dict,
    texts: Texts,
    spec: SweepSpec,
    store: ResultStore,
    progress: _Progress,
    memos: dict,
    stop: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One (model, layer mix, rope): its documents as planned. A cell's row is written once all its
    documents are stored (by this unit, or, in units of one document, by others before it: else the
    last worker writes it, ``_Worker.finish_cells``), or at its first failure (its other documents
    are then skipped), then the
    seconds from the start of the group to its row go to timings.csv. ``stop`` (called before each
    document) ends the unit early by raising. Returns the failed rows."""
    left = {c.key: [doc for doc, (todo, _) in work.items() if c in todo] for c in cells}  # documents to score
    failed: list[dict[str, Any]] = []
    started = time.perf_counter()

    def finish(c: Cell, failure: tuple[str, str] | None = None) -> None:
        left[c.key] = []
        row = _cell_row(c, store, spec.mode, failure)
        store.add_cell(row)
        store.add_timing(c.key, time.perf_counter() - started)
        progress.cell_done(row)
        failed.extend([row] if row["status"] != "ok" else [])

    def complete(c: Cell) -> bool:  # every document stored (units of one document: by others too)
        return not left[c.key] and all((c.key, doc) in store.docs for doc in c.docs)

    for c in cells:
        if not c.docs:
            need = "a token to predict" if spec.mode in WHOLE_DOCUMENTS else f"{c.length} tokens"
            finish(c, ("no_docs", f"no document has {need}"))
        elif complete(c):  # every document was scored by an earlier run that stopped before the row
            finish(c)
    for doc, (planned, plan) in work.items():
        if stop is not None:
            stop()
        todo = [c for c in planned if left[c.key]]  # not the cells that failed on an earlier document
        memo = memos.setdefault(_ids_key(tokens[doc]), {})
        if len(todo) < len(planned) or not plan.ready(memo):  # a failure changed what is left to run
            progress.drop(model.config, plan)
            if not todo:
                continue
            plan = _plan(model, [c.length for c in todo], plan.n_tokens, spec, memo_lengths(memo))
            progress.add_plan(model.config, plan)
        begun = time.perf_counter()
        scores, failures = _score_doc(model, torch.as_tensor(tokens[doc], dtype=torch.long), plan, spec, memo)
        progress.done(model.config, plan, time.perf_counter() - begun)
        for c in todo:
            if c.length in failures:
                finish(c, (failures[c.length][0], f"{doc}: {failures[c.length][1]}"))
                continue
            score = scores[c.length]
            n_bytes, n_words = texts.counts(doc, tokens[doc], predicted(plan, c.length))
            store.add_doc(
                {
                    "cell": c.key,
                    "model": c.model,
                    "rope": c.rope,
                    "layer_mix": c.layer_mix,
                    "length": c.length,
                    "doc": doc,
                    "n_tokens": score.n_tokens,
                    "nll_sum": repr(score.nll_sum),
                    "n_bytes": n_bytes,
                    "n_words": n_words,
                    "blocks": format_blocks(score.blocks),
                }
            )
            left[c.key].remove(doc)
            if complete(c):
                finish(c)
    return failed


def _score_doc(
    model, ids: torch.Tensor, plan: Plan, spec: SweepSpec, memo: dict
) -> tuple[dict[int, Score], dict[int, tuple[str, str]]]:
    """Scores of one document as planned, and (status, message) for lengths that failed. When a
    pass shared by several lengths runs out of memory, each length is planned and retried on its
    own, so the shorter ones still get their numbers."""
    try:
        return score_plan(model, ids, plan, memo=memo), {}
    except (RuntimeError, MemoryError) as err:
        status = failure_status(err)
        if status is None:
            raise
        if len(plan.lengths) == 1:
            return {}, {plan.lengths[0]: (status, str(err).splitlines()[0][:200])}
    scores, failures = {}, {}
    for length in plan.lengths:
        alone = _plan(model, [length], len(ids), spec, memo_lengths(memo))
        one, failed = _score_doc(model, ids, alone, spec, memo)
        scores.update(one)
        failures.update(failed)
    return scores, failures


def predicted(plan: Plan, length: int) -> list[tuple[int, int]]:
    """The positions whose predictions count towards ``length`` in ``plan``, as ``(first, stop)`` ranges."""
    return [(first, stop) for p in plan.passes for served, first, stop in p.serves if served == length]


def _cell_row(c: Cell, store: ResultStore, mode: str, failure: tuple[str, str] | None) -> dict[str, Any]:
    """A cell's results.csv row, computed from its documents as stored in documents.csv (so a
    resumed sweep writes the row an uninterrupted one would, to the bit)."""
    row = {"model": c.model, "rope": c.rope, "layer_mix": c.layer_mix, "length": c.length, "task": c.task}
    row["n_docs"] = len(c.docs)
    if failure is not None:
        return {**row, "n_tokens": 0, "status": failure[0], "detail": failure[1], "cell": c.key}
    docs = [store.docs[c.key, d] for d in c.docs]
    scores = [Score(float(r["nll_sum"]), int(r["n_tokens"]), parse_blocks(r["blocks"])) for r in docs]
    total = combine(scores)
    if not math.isfinite(total.nll_sum):
        return {**row, "n_tokens": total.n_tokens, "status": "nan", "detail": "non-finite loss", "cell": c.key}
    ppl = aggregate(mode, scores)
    lo, hi, method = stats.ppl_interval(
        [s.nll_sum for s in scores],
        [s.n_tokens for s in scores],
        [s.blocks for s in scores],
        block=BLOCK,
        seed=stats.seed_of(c.key),
        weighting=WEIGHTING[mode],
    )
    n_bytes, n_words = sum(int(r["n_bytes"]) for r in docs), sum(int(r["n_words"]) for r in docs)
    return {
        **row,
        "n_tokens": total.n_tokens,
        "nll": f"{math.log(ppl):.6f}",
        "ppl": f"{ppl:.4f}",
        "ppl_lo": "" if math.isnan(lo) else f"{lo:.4f}",
        "ppl_hi": "" if math.isnan(hi) else f"{hi:.4f}",
        "interval": method,  # or "none: ..." saying why there is none
        "bits_per_byte": f"{total.nll_sum / n_bytes / math.log(2):.6f}" if n_bytes else "",
        "word_ppl": f"{_exp(total.nll_sum / n_words):.4f}" if n_words else "",
        "status": "ok",
        "detail": "",
        "cell": c.key,
    }


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:  # a text with almost no whitespace has few, very long "words"
        return math.inf


def _estimate(spec: SweepSpec, precision: Precision, quiet: bool) -> Callable[[ModelConfig, Plan], float] | None:
    """Predicted seconds of a plan or a retrieval trial's pass (``ropekit.sweep.cost``, with this
    machine's rates, measured once and cached), for the progress bar; None (the bar counts tokens)
    when the bar is off or this machine lacks the spec's device (loading the model says so next)."""
    if quiet or not measurable(spec.device):
        return None
    rates = machine_rates(precision.dtype, spec.device)

    def estimate(config: ModelConfig, work: Plan | int) -> float:
        if isinstance(work, int):  # a trial's prompt length: the LM head runs on its answer only
            return pass_seconds(config, trial_tokens(work), rates, head_rows=TRIAL_ANSWER_TOKENS)
        return plan_seconds(config, work, rates)

    return estimate


class _Progress:
    """A tqdm bar over the predicted seconds of the planned passes (``estimate``; their tokens when
    there is none), so that its time left is the prediction from the first second on, scaled, once
    passes have finished, by the seconds they took over the seconds predicted for them. Tokens done of
    the total and cells done are beside it; silent with quiet=True."""

    def __init__(self, cells: int, reused: int, estimate: Callable[[ModelConfig, Plan], float] | None, *, quiet: bool):
        from tqdm.auto import tqdm

        class Bar(tqdm):  # tqdm's documented way to a field of one's own in bar_format
            status = ""

            @property
            def format_dict(self) -> dict[str, Any]:
                return {**super().format_dict, "status": self.status}

        self.cells, self.finished = cells, reused
        self.predicts = estimate is not None
        self.estimate = estimate or (lambda config, work: float(work if isinstance(work, int) else work.tokens))
        self.tokens = self.tokens_done = 0
        self.predicted_done = self.took = 0.0  # of the passes that finished
        self.last = ""
        self.bar = Bar(total=0, disable=quiet, dynamic_ncols=True, desc="sweep", bar_format="{l_bar}{bar}| {status}")
        self._status()

    def _status(self) -> None:
        bar = self.bar
        if bar.disable:
            return
        if self.predicted_done:  # the prediction, scaled by how the passes so far compared with it
            left = bar.format_interval((bar.total - bar.n) * self.took / self.predicted_done)
        else:  # the prediction as it is; tokens say nothing of seconds yet
            left = bar.format_interval(bar.total) if self.predicts else "?"
        tokens = f"{_count(self.tokens_done)}/{_count(self.tokens)} tok"
        elapsed = bar.format_interval(bar.format_dict["elapsed"])
        last = f" {self.last}" if self.last else ""
        bar.status = f"{tokens} [{elapsed}<{left}], cells {self.finished}/{self.cells}{last}"
        bar.refresh()

    def add(self, work: ModelWork) -> None:
        """Every plan and retrieval trial of a model's work."""
        for group, plans in work.groups:
            for _, plan in plans.values():
                self.add_plan(group[0].config, plan, refresh=False)
        for trials in work.trials:
            for c in trials.cells:
                self.bar.total += self.estimate(c.config, c.length) * len(trials.todo[c.key])
                self.tokens += c.length * len(trials.todo[c.key])
        self._status()

    def drop_work(self, work: ModelWork | None) -> None:
        """A unit's work that this worker will not run as planned (another ran it, or it is planned
        again)."""
        if work is None:
            return
        for group, plans in work.groups:
            for _, plan in plans.values():
                self.bar.total -= self.estimate(group[0].config, plan)
                self.tokens -= plan.tokens
        for trials in work.trials:
            for c in trials.cells:
                self.bar.total -= self.estimate(c.config, c.length) * len(trials.todo[c.key])
                self.tokens -= c.length * len(trials.todo[c.key])
        self._status()

    def trial_done(self, config: ModelConfig, length: int, seconds: float) -> None:
        """A retrieval trial of a prompt of ``length`` tokens that ran in ``seconds``."""
        predicted = self.estimate(config, length)
        self.predicted_done += predicted
        self.took += seconds
        self.tokens_done += length
        self.bar.n += predicted
        self._status()

    def add_plan(self, config: ModelConfig, plan: Plan, *, refresh: bool = True) -> None:
        self.bar.total += self.estimate(config, plan)
        self.tokens += plan.tokens
        if refresh:
            self._status()

    def drop(self, config: ModelConfig, plan: Plan) -> None:
        """A plan that will not run (a failure changed what is left)."""
        self.bar.total -= self.estimate(config, plan)
        self.tokens -= plan.tokens
        self._status()

    def done(self, config: ModelConfig, plan: Plan, seconds: float) -> None:
        """A plan that ran, in ``seconds``."""
        predicted = self.estimate(config, plan)
        self.predicted_done += predicted
        self.took += seconds
        self.tokens_done += plan.tokens
        self.bar.n += predicted  # then one refresh, with the status that goes with it
        self._status()

    def cell_done(self, row: dict[str, Any]) -> None:
        self.finished += 1
        if row["status"] != "ok":
            outcome = row["status"]
        elif row.get("task", "perplexity") == "perplexity":
            outcome = f"ppl {row['ppl']}"
        else:
            outcome = f"{row['task']} at {row['depth']}% {float(row['accuracy']):.0%}"
        self.last = f"{row['rope']}@{row['length']}: {outcome}"
        self._status()

    def close(self) -> None:
        self.bar.close()


def _count(n: int) -> str:
    """Tokens as tqdm scales them (``7.17k``), whole below a thousand."""
    from tqdm import tqdm

    return str(n) if n < 1000 else tqdm.format_sizeof(n)
