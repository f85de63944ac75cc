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

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..cache import Notice
from ..data import tokenize
from ..eval.perplexity import Plan, Score, encoding, memo_lengths, plan_document, score_plan, text_counts
from ..models import load_tokenizer
from ..modes import WHOLE_DOCUMENTS
from ..tasks import get_task
from .cells import Cell
from .rows import cell_row
from .spec import SweepSpec
from .store import ResultStore, StoredResults, format_blocks
from .trials import TrialGroup, check_lengths, failure_status, run_trials, trial_groups

if TYPE_CHECKING:
    from .progress import Progress


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
        perplexity = [c for c in cells if c.task == "perplexity"]
        chosen = choose_documents(tokens, spec.lengths, spec.mode, spec.n_docs) if perplexity else {}
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
    and a note says so (that lengths then read different text; that a length no document reaches has
    nothing to score)."""
    if mode in WHOLE_DOCUMENTS:
        whole = [doc for doc, ids in tokens.items() if len(ids) >= 2][:n_docs]
        return {length: whole for length in lengths}
    longest = [doc for doc, ids in tokens.items() if len(ids) >= max(lengths)][:n_docs]
    if len(longest) == n_docs:
        return {length: longest for length in lengths}
    chosen = {length: [doc for doc, ids in tokens.items() if len(ids) >= length][:n_docs] for length in lengths}
    if empty := [length for length in lengths if not chosen[length]]:
        most = max((len(ids) for ids in tokens.values()), default=0)
        lengths_text = ", ".join(map(str, empty))
        warnings.warn(
            f"no document has {min(empty)} ids (the longest has {most}): cells of length {lengths_text} have "
            "nothing to score",
            Notice,
            stacklevel=2,
        )
    read = [length for length in lengths if chosen[length]]
    if len({tuple(chosen[length]) for length in read}) > 1:
        warnings.warn(
            f"only {len(chosen[max(read)])} of the {n_docs} documents asked for have {max(read)} ids: each length "
            "takes the first documents with at least its own length, so lengths read different text",
            Notice,
            stacklevel=2,
        )
    elif read and len(chosen[read[0]]) < n_docs:
        warnings.warn(
            f"only {len(chosen[read[0]])} of the {n_docs} documents asked for have {max(read)} ids: the cells score "
            "those",
            Notice,
            stacklevel=2,
        )
    return chosen


def ids_key(ids: np.ndarray) -> str:
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
                held = computed.setdefault(ids_key(tokens[doc]), {})
                lengths = [n for n in spec.lengths if doc in chosen[n]]  # done or not (``chosen``: every length's)
                plan = _plan(cells[0].config, lengths, len(tokens[doc]), spec, held)
                held.update(plan.kept())
                work[doc] = (todo, plan)
        plans.append(work)
    return plans


def _plan(model, lengths: list[int], n_tokens: int, spec: SweepSpec, computed: dict) -> Plan:
    """``plan_document`` for a model or its resolved config."""
    return plan_document(model, n_tokens, lengths, mode=spec.mode, stride=spec.stride, computed=computed)


def run_unit(base, work: ModelWork, corpus, spec: SweepSpec, store: ResultStore, progress, stop) -> list:
    """One unit's pending cells as planned, on the weights already loaded: its (layer mix, rope) a plan
    over them. Returns the failed rows."""
    texts = Texts(work.tokenizer, {d.name: d.text for d in corpus.documents})
    memos: dict[str, dict] = {}  # per document's ids (a digest: other ids never share a pass): passes by signature
    failed = []
    for group, plans in work.groups:
        model = base.with_config(group[0].config) if plans else None  # cells without documents need no weights
        failed += _run_group(model, group, plans, work.tokens, texts, spec, store, progress, memos, stop)
    for trials in work.trials:
        model = base.with_config(trials.cells[0].config)
        failed += run_trials(model, trials, work.tokenizer, work.haystack, store, progress, stop)
    return failed


def _run_group(
    model,
    cells: list[Cell],
    work: dict[str, tuple[list[Cell], Plan]],
    tokens: dict,
    texts: Texts,
    spec: SweepSpec,
    store: ResultStore,
    progress: Progress,
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
        row = cell_row(c, store, spec.mode, failure)
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
        memo = memos.setdefault(ids_key(tokens[doc]), {})
        if len(todo) < len(planned) or not plan.ready(memo):  # a failure changed what is left to run
            progress.drop(model.config, plan)
            if not todo:
                continue
            plan = _plan(model, [c.length for c in todo], plan.n_tokens, spec, memo_lengths(memo))
            progress.add_plan(model.config, plan)
        begun = time.perf_counter()
        with progress.running(model, plan):
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
