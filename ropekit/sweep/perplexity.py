"""The sweep's perplexity task, all of it: the documents each cell scores, its passes (shared across lengths
and ropes), running them on the weights loaded, and its rows (the cells themselves: ``cells.py``).

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
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import stats
from ..cache import Notice
from ..eval.perplexity import (
    BLOCK,
    WEIGHTING,
    Plan,
    Score,
    aggregate,
    combine,
    memo_lengths,
    plan_document,
    score_plan,
    text_counts,
)
from ..modes import WHOLE_DOCUMENTS
from .cells import Cell
from .rows import named, write_row
from .spec import SweepSpec
from .store import ResultStore, StoredResults, format_blocks, parse_blocks
from .trials import failure_status

if TYPE_CHECKING:
    from .progress import Progress


def plan_documents(
    spec: SweepSpec, tokens: dict[str, np.ndarray], cells: list[Cell], store: StoredResults
) -> tuple[list[tuple[list[Cell], dict[str, tuple[list[Cell], Plan]]]], dict[int, list[str]]]:
    """One model's perplexity cells planned: per (layer mix, rope), its cells and each document still to
    score with the cells that want it and its plan (``_plans``, against what ``store`` holds), and the
    documents each length scores (``choose_documents``; {} without perplexity cells)."""
    chosen = choose_documents(tokens, spec.lengths, spec.mode, spec.n_docs) if cells else {}
    groups = _groups(cells)
    return list(zip(groups, _plans(groups, tokens, chosen, spec, store), strict=True)), chosen


def run_groups(base, work, texts: Texts, spec: SweepSpec, store: ResultStore, progress, memos, stop) -> list:
    """One unit's perplexity groups as planned (``work``: its ``ModelWork``), on the weights already loaded:
    each (layer mix, rope) a plan over them (cells without documents need no weights). Returns the failed
    rows."""
    failed = []
    for group, plans in work.groups:
        model = base.with_config(group[0].config) if plans else None
        failed += _run_group(model, group, plans, work, texts, spec, store, progress, memos, stop)
    return failed


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
        for doc in dict.fromkeys(d for c in cells for d in chosen[c.length]):
            if todo := [c for c in cells if doc in chosen[c.length] and store.doc_score(c.key, doc) is None]:
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


def _run_group(
    model,
    cells: list[Cell],
    work: dict[str, tuple[list[Cell], Plan]],
    model_work,
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
    document) ends the unit early by raising. ``model_work``: the model's ids and the documents each length
    scores. Returns the failed rows."""
    tokens, chosen = model_work.tokens, model_work.documents
    left = {c.key: [doc for doc, (todo, _) in work.items() if c in todo] for c in cells}  # documents to score
    failed: list[dict[str, Any]] = []
    started = time.perf_counter()

    def finish(c: Cell, failure: tuple[str, str] | None = None) -> None:
        left[c.key] = []
        failed.extend(write_row(cell_row(c, chosen[c.length], store, spec.mode, failure), store, progress, started))

    def complete(c: Cell) -> bool:  # every document stored (units of one document: by others too)
        return not left[c.key] and all((c.key, doc) in store.docs for doc in chosen[c.length])

    for c in cells:
        if not chosen[c.length]:
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


def cell_row(c: Cell, docs: list[str], store: ResultStore, mode: str, failure: tuple[str, str] | None) -> dict:
    """A cell's results.csv row, computed from its documents (``docs``) as stored in documents.csv (so a
    resumed sweep writes the row an uninterrupted one would, to the bit)."""
    row = {**named(c), "n_docs": len(docs)}
    if failure is not None:
        return {**row, "n_tokens": 0, "status": failure[0], "detail": failure[1], "cell": c.key}
    docs = [store.docs[c.key, d] for d in docs]
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
