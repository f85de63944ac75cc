"""A model's work in a sweep: its pending cells planned from its config and tokenizer alone (no weights),
each task's part by its own module (``perplexity.py``: documents and shared passes; ``trials.py``: trials),
and one unit of it run on the weights loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import tokenize
from ..eval.perplexity import Plan, encoding
from ..models import load_tokenizer
from ..tasks import get_task, is_trial
from . import perplexity
from .cells import Cell
from .spec import SweepSpec
from .store import ResultStore, StoredResults
from .trials import TrialGroup, check_lengths, run_trials, trial_groups


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
    documents: dict[int, list[str]] = field(default_factory=dict)  # the documents each length's perplexity scores


def plan_work(
    spec: SweepSpec, corpus, pending: list[Cell], store: StoredResults, inputs: dict | None = None
) -> list[ModelWork]:
    """The work of the pending cells, model by model: each model's tokenizer (no weights), the corpus
    tokenized in the mode's encoding (``document_ids``, cached on disk), its perplexity cells' documents
    and passes (``perplexity.plan_documents``, against what ``store`` holds) and its trials still to
    score. ``inputs`` keeps each model's tokenizer and ids for the next call."""
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
        groups, documents = perplexity.plan_documents(spec, tokens, [c for c in cells if not is_trial(c.task)], store)
        work.append(ModelWork(name, tokenizer, tokens, groups, documents=documents))
        if retrieval := [c for c in cells if is_trial(c.task)]:
            if any(get_task(task).reads_corpus for task in spec.retrieval_tasks):
                work[-1].haystack = list(tokenize(corpus, tokenizer, special_tokens=False).values())
            check_lengths(spec, tokenizer, work[-1].haystack)
            work[-1].trials = trial_groups(retrieval, store)
    return work


def run_unit(base, work: ModelWork, corpus, spec: SweepSpec, store: ResultStore, progress, stop) -> list:
    """One unit's pending cells as planned, on the weights already loaded: its (layer mix, rope) a plan
    over them. Returns the failed rows."""
    texts = perplexity.Texts(work.tokenizer, {d.name: d.text for d in corpus.documents})
    memos: dict[str, dict] = {}  # per document's ids (a digest: other ids never share a pass): passes by signature
    failed = perplexity.run_groups(base, work, texts, spec, store, progress, memos, stop)
    for trials in work.trials:
        model = base.with_config(trials.cells[0].config)
        failed += run_trials(model, trials, work.tokenizer, work.haystack, store, progress, stop)
    return failed
