"""A sweep's plan and what it will cost, before it runs (``ropekit sweep --dry-run``): no weights are
read and nothing is written to DIR.

The dry run plans with the sweep's own code (``plan_cells``, then ``plan_work``: each model's config
and tokenizer, the corpus tokenized in the mode's encoding, the documents each length scores, every
document's passes) against what DIR already holds (read without its lock, ``StoredResults.read``), so
its passes and tokens are the ones ``run_sweep`` would run, in the dtype the sweep would run
(``dtype = "auto"`` resolved as the sweep resolves it, ``ropekit.models.precision``). Each pass is
priced by ``ropekit.sweep.cost``: predicted seconds from this machine's measured rates in that dtype
(and the total again at the fastest and the slowest round of the measurement: its spread), peak
memory from the model's sizes.

A cell's predicted seconds are its share of the passes: each pass's seconds are divided equally
among the lengths it serves whose cells still score that document; a pass that serves none of them
(it runs so that a resumed sweep writes the bits an uninterrupted one would) is divided equally among
the document's cells still to run. The cells' seconds add up to the total. Not predicted: loading the
weights and tokenizing the corpus.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..data import load_corpus
from ..models import Precision, check_weights, resolve_dtype
from ..tasks import is_trial
from .cells import Cell, plan_cells
from .cost import (
    STABLE_SPREAD,
    MeasuredRates,
    Memory,
    Rates,
    machine_rates,
    measurable,
    pass_memory,
    pass_seconds,
    rates_key,
    rates_path,
)
from .meta import check_dtype, check_inputs, check_snapshots
from .spec import SweepSpec
from .status import duration
from .store import StoredResults
from .trials import TRIAL_ANSWER_TOKENS, trial_seconds, trial_tokens
from .units import sweep_units
from .work import plan_work


@dataclass(frozen=True)
class PassCost:
    """One planned pass: tokens ``begin:end`` of a document, the lengths it serves, whether it is read
    from the memo (``cached``: another rope's identical pass), and its predicted seconds and memory
    (none for a cached pass)."""

    model: str
    layer_mix: str
    rope: str
    doc: str
    begin: int
    end: int
    serves: tuple[int, ...]
    cached: bool
    seconds: float
    memory: Memory | None

    @property
    def tokens(self) -> int:
        """Tokens pushed through the model (``Pass.tokens``)."""
        return 0 if self.cached else self.end - self.begin


@dataclass(frozen=True)
class CellCost:
    """A cell of the grid: ``done`` (DIR holds its row), ``to run`` or ``no documents`` (none is long
    enough: the sweep records it as failed), the documents it scores and those still to score (a
    retrieval cell: its trials), and its share of the predicted seconds."""

    model: str
    layer_mix: str
    rope: str
    length: int
    status: str
    docs: int
    to_score: int
    seconds: float
    task: str
    depth: float | None = None


@dataclass(frozen=True)
class DryRun:
    """What ``run_sweep(spec, out)`` would run: every pass and every cell, priced. ``rates`` is None
    where this machine lacks the spec's device (no seconds predicted); ``measured``, the rounds they
    come from (None where they were given), and ``spread`` the total seconds at their fastest and
    slowest round."""

    spec: SweepSpec
    out: Path
    precision: Precision
    threads: int
    rates: Rates | None
    rates_file: Path | None
    passes: tuple[PassCost, ...]
    cells: tuple[CellCost, ...]
    units: tuple[tuple[str, float], ...] = ()  # each work unit's name and predicted seconds, longest first
    measured: MeasuredRates | None = None
    spread: tuple[float, float] | None = None

    def workers(self) -> list[tuple[float, list[str]]]:
        """The units as ``spec.executor.workers`` workers would take them (longest first, each to the
        worker free first): per worker its predicted seconds and units. Loading weights is not counted."""
        loads: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(self.spec.executor.workers)]
        for name, seconds in self.units:
            first = min(range(len(loads)), key=lambda i: loads[i][0])
            loads[first] = (loads[first][0] + seconds, [*loads[first][1], name])
        return loads

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.passes)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.passes if not p.cached)

    @property
    def peak(self) -> PassCost | None:
        """The pass with the largest predicted memory."""
        return max((p for p in self.passes if p.memory), key=lambda p: p.memory.total, default=None)

    def table(self):
        """One row per cell (pandas): model, layer_mix, rope, length, status, docs, to_score, seconds."""
        import pandas as pd

        return pd.DataFrame([vars(c) for c in self.cells])

    def pass_table(self):
        """One row per model, layer mix, rope and set of lengths a pass serves (pandas): passes run,
        passes read from the memo, pass lengths, tokens, predicted seconds and peak bytes."""
        import pandas as pd

        groups: dict[tuple, list[PassCost]] = defaultdict(list)
        for p in self.passes:
            groups[p.model, p.layer_mix, p.rope, p.serves].append(p)
        rows = []
        for (model, mix, rope, serves), passes in groups.items():
            ran = [p for p in passes if not p.cached]
            lengths = sorted({p.end - p.begin for p in passes})
            rows.append(
                {
                    "model": model,
                    "layer_mix": mix,
                    "rope": rope,
                    "serves": ",".join(map(str, serves)),
                    "passes": len(ran),
                    "cached": len(passes) - len(ran),
                    "pass_tokens": str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}",
                    "tokens": sum(p.tokens for p in ran),
                    "seconds": sum(p.seconds for p in ran),
                    "peak_bytes": max((p.memory.total for p in ran), default=0),
                }
            )
        return pd.DataFrame(rows)

    def text(self) -> str:
        """The dry run as ``ropekit sweep --dry-run`` prints it."""
        lines = [f"Dry run of sweep {self.spec.name!r} into {self.out}: nothing is loaded, run or written."]
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        dtype = f"{self.precision.name} ({self.precision.reason})" if self.spec.dtype == "auto" else self.precision.name
        lines.append(f"{dtype} on {self.spec.device}, {threads}. " + self._rates_text())
        status = [c.status for c in self.cells]
        counts = ", ".join(f"{status.count(s)} {s}" for s in ("done", "to run", "no documents") if s in status)
        lines.append(f"{len(self.cells)} cells: {counts}.")
        passes = self.pass_table()
        if len(passes):
            passes["seconds"] = passes["seconds"].map(duration)
            passes["peak_memory"] = passes.pop("peak_bytes").map(lambda n: _size(n) if n else "-")
            passes["tokens"] = passes["tokens"].map("{:,}".format)
            lines += [
                "",
                "Passes per model, layer mix and rope (serves: the lengths one pass gives; cached: read from another "
                "rope's identical pass)",
                passes.to_string(index=False),
            ]
        lines += ["", "Predicted seconds per cell (a pass's seconds shared by the lengths it serves still to run)"]
        table = self.table()
        for (model, mix, task), block in table.groupby(["model", "layer_mix", "task"], sort=False):
            if is_trial(task):  # a retrieval cell per depth: summed over the depths
                agg = {
                    "seconds": "sum",
                    "to_score": "sum",
                    "status": lambda s: "done" if (s == "done").all() else "to run",
                }
                block = block.groupby(["length", "rope"], sort=False).agg(agg).reset_index()
            shown = block.assign(shown=[_cell_text(c) for c in block.itertuples()])
            grid = shown.pivot(index="length", columns="rope", values="shown")[list(dict.fromkeys(block["rope"]))]
            grid.columns.name = None
            what = f", {task} (all depths)" if is_trial(task) else ""
            lines += [f"{model}, layer mix {mix}{what}", grid.to_string()]
        lines += ["", self._total_text()]
        return "\n".join(lines)

    def _rates_text(self) -> str:
        if self.rates is None:
            return f"No {self.spec.device} here to measure: seconds are not predicted."
        r, m = self.rates, self.measured
        if m is None:
            source, slow, fast = "Rates given", r, r
        else:
            settled = "agreeing" if m.stable else "not settling"
            cached = (
                f"cached in {self.rates_file}; delete it to measure again"
                if self.rates_file
                else "not cached: other processes kept the cores busy"
            )
            source = (
                f"Rates measured here (median of {len(m.rounds)} rounds {settled} within {STABLE_SPREAD:.0%}, their "
                f"range in brackets; {cached})"
            )
            slow, fast = m.slow, m.fast

        def shown(field: str, digits: int = 0) -> str:
            values = [getattr(rates, field) / 1e9 for rates in (r, slow, fast)]
            text = f"{values[0]:.{digits}f}"
            return text if m is None else f"{text} ({values[1]:.{digits}f}-{values[2]:.{digits}f})"

        return (
            f"{source}: matmul {shown('matmul')} GFLOP/s, causal attention {shown('causal')} GFLOP/s, sliding "
            f"attention {shown('band')} GFLOP/s, log-softmax {shown('logits', 2)} G values/s."
        )

    def _total_text(self) -> str:
        ran = sum(not p.cached for p in self.passes)
        text = (
            f"Total: {ran} passes of {self.tokens:,} tokens, predicted {duration(self.seconds)} "
            "(the passes alone: not loading weights or tokenizing"
        )
        if self.spread is not None:
            text += f"; {duration(self.spread[0])} to {duration(self.spread[1])} at the fastest and slowest round"
        text += ")"
        if (peak := self.peak) is not None:
            m = peak.memory
            text += (
                f"; peak memory {_size(m.total)} ({peak.model}, {peak.layer_mix}, {peak.rope}, a pass of "
                f"{peak.end - peak.begin} tokens: weights {_size(m.weights)}, activations {_size(m.activations)}, "
                f"logits {_size(m.logits)}, attention workspace {_size(m.workspace)})"
            )
        text += "."
        if self.spec.executor.workers > 1 and self.units:
            loads = self.workers()
            wall = max(seconds for seconds, _ in loads)
            text += (
                f"\nWith {len(loads)} workers ({self.spec.executor.executor}), units longest first, each worker at "
                f"the rates above (its own GPU or node; local CPU workers share these cores): wall time "
                f"{duration(wall)}, the workers busy {self.seconds / (wall * len(loads)):.0%} of it"
                if wall > 0 and not math.isnan(wall)
                else f"\nWith {len(loads)} workers: no seconds predicted here"
            )
            for i, (seconds, names) in enumerate(loads):
                text += f"\n  worker {i}: {duration(seconds)}: {'; '.join(names) or 'nothing'}"
        return text


def _cell_text(c: Any) -> str:
    if c.status != "to run":
        return c.status
    return duration(c.seconds) if c.to_score else "row only"


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def dry_run(spec: SweepSpec, out: Path, *, force: bool = False, rates: Rates | None = None) -> DryRun:
    """What ``run_sweep(spec, out, force=force)`` would run, priced, without loading weights or writing
    to ``out``: refused as the sweep would refuse (another spec's DIR without ``force``, another
    dtype's). ``rates``: this machine's (``machine_rates``, measured once and cached) when not given."""
    corpus = load_corpus(spec.corpus.path, format=spec.corpus.format, field=spec.corpus.field)
    precision = resolve_dtype(spec.dtype, spec.device)
    cells, checkpoints = plan_cells(spec, corpus.sha256, precision)
    for model, checkpoint in checkpoints.items():  # weights the sweep would refuse (a device it may lack is priced)
        check_weights(checkpoint, next(c.config for c in cells if c.model == model))
    stored = StoredResults.read(out, spec, force=force)
    if not force:
        check_dtype(stored.meta, precision, out)
        check_snapshots(stored.meta, checkpoints, out)
        check_inputs(stored, corpus, checkpoints, cells, out)
    pending = [c for c in cells if not stored.done(c.key)]
    work = plan_work(spec, corpus, pending, stored)
    threads, rates_file, measured = torch.get_num_threads(), None, None
    if rates is None and measurable(spec.device):
        measured = machine_rates(precision.dtype, spec.device, threads)
        rates, rates_file = measured.rates, rates_path(rates_key(precision.dtype, spec.device, threads))
        rates_file = rates_file if rates_file.exists() else None  # measured on a busy machine: not cached
    spread = [0.0, 0.0]  # the total at the fastest and at the slowest round

    def price(seconds: Callable[[Rates], float]) -> float:
        """``seconds`` at the rates (NaN without), the total at the fastest and slowest round kept beside."""
        if rates is None:
            return math.nan
        if measured is not None:
            spread[0] += seconds(measured.fast)
            spread[1] += seconds(measured.slow)
        return seconds(rates)

    passes, shares, to_score = [], defaultdict(float), defaultdict(int)
    for model_work in work:
        for group, plans in model_work.groups:
            config, first = group[0].config, group[0]
            for doc, (todo, plan) in plans.items():
                wanting = {c.length: c for c in todo}
                for c in todo:
                    to_score[c.key] += 1
                for p in plan.passes:
                    served, tokens = tuple(n for n, _, _ in p.serves), p.end - p.begin
                    if p.cached:
                        seconds, memory = 0.0, None
                    else:
                        seconds = price(partial(pass_seconds, config, tokens))
                        memory = pass_memory(config, tokens, precision.dtype, threads)
                    where = (first.model, first.layer_mix, first.rope, doc, p.begin, p.end)
                    passes.append(PassCost(*where, served, p.cached, seconds, memory))
                    sharing = [wanting[n] for n in served if n in wanting] or list(wanting.values())
                    for c in sharing:
                        shares[c.key] += seconds / len(sharing)
        read = set()  # (task, settings, length, trial) whose shared passes (a shared evaluator's) are priced
        for group in model_work.trials:
            config = group.cells[0].config
            for c in group.cells:
                tokens = trial_tokens(c.length)
                to_score[c.key] = len(group.todo[c.key])
                for t in group.todo[c.key]:
                    first = (shared := (c.task, repr(c.settings), c.length, t)) not in read
                    read.add(shared)
                    seconds = price(partial(trial_seconds, config, c, shared=first))
                    memory = pass_memory(config, tokens, precision.dtype, threads, head_rows=TRIAL_ANSWER_TOKENS)
                    at = "" if c.depth is None else f" {c.depth:g}%"
                    where = (c.model, c.layer_mix, c.rope, f"{c.task}{at} trial {t}", 0, c.length)
                    passes.append(PassCost(*where, (c.length,), False, seconds, memory))
                    shares[c.key] += seconds
    planned = sweep_units(spec, corpus, cells, {})  # every cell's documents, done or not
    documents = planned.documents()

    def docs_of(c: Cell) -> list[str]:
        return documents.get(c.model, {}).get(c.length, [])

    costs = []
    for c in cells:
        retrieval = is_trial(c.task)
        if stored.done(c.key):
            status = "done"
            docs = int(stored.rows[c.key]["n_trials" if retrieval else "n_docs"])
        elif retrieval:
            status, docs = "to run", c.settings.trials
        else:
            status, docs = ("to run" if docs_of(c) else "no documents"), len(docs_of(c))
        seconds = shares[c.key] if status == "to run" else 0.0
        cost = (c.model, c.layer_mix, c.rope, c.length, status, docs, to_score[c.key], seconds, c.task, c.depth)
        costs.append(CellCost(*cost))
    unit_seconds: dict[str, float] = defaultdict(float)
    owner = {}  # (model, part, document or None for a trial) -> the unit that runs it
    scored = {d for c in cells for d in docs_of(c)}
    for u in planned.units:
        for part in u.parts:
            for doc in [None, *dict.fromkeys(d for c in cells if c.key in u.cells for d in docs_of(c))]:
                if u.docs is None or (doc in u.docs if doc else not u.docs):
                    owner[u.model, part, doc] = u
    for p in passes:
        doc = p.doc if p.doc in scored else None  # a retrieval trial's pass: no document
        unit_seconds[owner[p.model, (p.layer_mix, p.rope), doc].id] += 0.0 if p.cached else p.seconds
    named = {u.id: u.name() for u in owner.values()}
    units = sorted(((named[uid], seconds) for uid, seconds in unit_seconds.items()), key=_longest)
    priced = (tuple(passes), tuple(costs), tuple(units), measured, tuple(spread) if measured else None)
    return DryRun(spec, out, precision, threads, rates, rates_file, *priced)


def _longest(unit: tuple[str, float]) -> float:
    return -unit[1] if not math.isnan(unit[1]) else 0.0
