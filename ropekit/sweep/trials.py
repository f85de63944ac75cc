"""The retrieval cells of a sweep: one per (model, layer mix, rope, task, length, depth), each the
scores of its ``trials`` prompts (``ropekit.eval.retrieval``), every trial scored by ``score_answer``
in one forward pass (a task scored on what it writes: ``score_and_generate``, one forward of the prompt
for the teacher-forced answer and the decoding) on the weights already loaded and stored at once in
DIR/trials.csv, so a stopped sweep resumes at the next trial.

A cell's row (results.csv): ``accuracy`` the fraction of trials whose answer is ``exact`` (what greedy
decoding produces), with its Wilson 95 % interval (``ropekit.stats.wilson``: trials are independent
draws, and it stays inside [0, 1] and honest at 0 or n of n, where the normal interval collapses);
for a task scored on what the model writes (its record's ``match``: RULER's), the mean of the trials'
``match`` scores of the text greedy decoding generated (stored in ``output``, as JSON), with
``stats.score_interval`` (Wilson's, or a bootstrap over 16 or more trials of partial credit);
``mean_logprob`` the mean over trials of the answer's total log-probability (nats); ``n_tokens``
the tokens read. A trial that runs out of memory or scores a non-finite log-probability is stored as
failed; the cell's row then records the failure and the sweep goes on with the next cell.

The prompts of a cell depend on the task's settings and the cell's length and depth only, never on
the model's plan, so every rope and layer mix of a model reads the same prompts (paired trials).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from .. import stats
from ..eval import score_answer
from ..eval.generate import score_and_generate
from ..tasks import get_task
from .cost import pass_seconds
from .rows import depth_text, named, write_row
from .spec import SpecError, SweepSpec


@dataclass
class TrialGroup:
    """One (model, layer mix, rope)'s retrieval cells and, per cell, the trials still to score."""

    cells: list  # of run.Cell
    todo: dict[str, list[int]]


# Answer tokens a trial's cost is predicted with: a space and five digits, as both embedded tokenizers
# split a passkey (a prediction only: the trials read their own).
TRIAL_ANSWER_TOKENS = 6


def trial_tokens(length: int) -> int:
    """Tokens the forward of a trial with a ``length``-token prompt is predicted to read."""
    return length + TRIAL_ANSWER_TOKENS - 1


def trial_seconds(config, cell, rates, shared: bool = True) -> float:
    """Predicted seconds of one trial of ``cell`` (``ropekit.sweep.cost``): the teacher-forced forward of its
    prompt and answer, the LM head on the answer only; for a task that writes its answer (its record's
    ``generates`` tokens), a forward of the prompt, its answer's tokens read after it and a one-token pass per
    token written (a lower bound: those tokens' attention over the cached context is left out). ``shared``: with
    the forwards every rope and layer mix of the model reads alike (a task's ``shared_passes``)."""
    task = get_task(cell.task)
    if task.passes is not None:  # a task that scores its own way: the forwards it says a trial runs
        lengths = task.passes(config, cell.settings, cell.length)
        if shared and task.shared_passes is not None:
            lengths = [*lengths, *task.shared_passes(config, cell.settings, cell.length)]
        return sum(pass_seconds(config, n, rates) for n in lengths)
    if not (generates := task.generates):
        return pass_seconds(config, trial_tokens(cell.length), rates, head_rows=TRIAL_ANSWER_TOKENS)
    seconds = pass_seconds(config, cell.length, rates, head_rows=1)
    seconds += pass_seconds(config, TRIAL_ANSWER_TOKENS - 1, rates, head_rows=TRIAL_ANSWER_TOKENS - 1)
    return seconds + generates * pass_seconds(config, 1, rates, head_rows=1)


def trial_groups(cells: list, store) -> list[TrialGroup]:
    """The pending retrieval cells by (layer mix, rope), each with the trials DIR does not hold."""
    groups: dict[tuple, TrialGroup] = {}
    for c in cells:
        group = groups.setdefault((c.layer_mix, c.rope), TrialGroup([], {}))
        group.cells.append(c)
        group.todo[c.key] = [t for t in range(c.settings.trials) if not store.trial_done(c.key, t)]
    return list(groups.values())


def check_lengths(spec: SweepSpec, tokenizer, documents) -> None:
    """Refuse, before any weights load, a length too short for a task's intro, needle and question."""
    for task, settings in spec.retrieval_tasks.items():
        for length in spec.lengths:
            try:
                _trial(tokenizer, task, settings, length, settings.cell_depths[0], 0, documents)
            except ValueError as err:
                raise SpecError(f"lengths: {err}") from None


def _trial(tokenizer, task: str, settings, length: int, depth: float | None, trial: int, documents):
    """One trial of ``task`` as its record builds it (``ropekit/tasks/``)."""
    return get_task(task).build(tokenizer, settings, length, depth, trial, documents)


def run_trials(model, group: TrialGroup, tokenizer, documents, store, progress, stop=None) -> list[dict[str, Any]]:
    """Score one (model, layer mix, rope)'s pending trials, cell by cell; a cell's row is written once
    its trials are scored, or at its first failed trial. ``stop`` (checked before each trial) ends the
    unit early (its claim was lost). Returns the failed rows."""
    failed = []
    started = time.perf_counter()
    for c in group.cells:
        failure, match, own = None, get_task(c.task).match, get_task(c.task).score
        for t in group.todo[c.key]:
            if stop is not None:
                stop()
            trial = _trial(tokenizer, c.task, c.settings, c.length, c.depth, t, documents)
            begun = time.perf_counter()
            row = {
                "cell": c.key,
                "model": c.model,
                "rope": c.rope,
                "layer_mix": c.layer_mix,
                "task": c.task,
                "length": c.length,
                "depth": depth_text(c.depth),
                "trial": t,
                "key": trial.key,
                "value": trial.value,
                "position": trial.position,
                "n_answer": len(trial.answer_ids),
            }
            try:
                if own is not None:
                    numbers = own(model, tokenizer, c.settings, trial)
                elif match is None:
                    score, output = score_answer(model, trial.prompt_ids, trial.answer_ids), None
                else:  # one forward of the prompt serves the teacher-forced answer and the decoding
                    score, output = score_and_generate(model, trial.prompt_ids, trial.answer_ids, trial.max_new_tokens)
            except (RuntimeError, MemoryError) as err:
                if (status := failure_status(err)) is None:
                    raise
                failure = (status, f"trial {t}: {str(err).splitlines()[0][:200]}")
            else:
                if own is not None and not _finite(numbers):
                    failure = ("nan", f"trial {t}: a non-finite score")
                if own is None and not math.isfinite(score.logprob):
                    failure = ("nan", f"trial {t}: non-finite log-probability")
            if failure is not None:
                store.add_trial({**row, "status": failure[0], "detail": failure[1]})
                break
            if own is not None:
                store.add_trial({**row, "scores": json.dumps(numbers), "status": "ok", "detail": ""})
            else:
                store.add_trial(
                    {
                        **row,
                        "n_correct": score.n_correct,
                        "exact": int(score.exact),
                        "logprob": repr(score.logprob),
                        "match": "" if output is None else repr(float(match(output, trial.references))),
                        "output": "" if output is None else json.dumps(output),  # one line, whatever was written
                        "status": "ok",
                        "detail": "",
                    }
                )
            progress.trial_done(model.config, c, time.perf_counter() - begun)
        failed += write_row(retrieval_row(c, store, failure), store, progress, started)
    return failed


def retrieval_row(c, store, failure: tuple[str, str] | None = None) -> dict[str, Any]:
    """A retrieval cell's results.csv row from its trials as stored in trials.csv (so a resumed sweep
    writes the row an uninterrupted one would)."""
    row = {**named(c), "depth": depth_text(c.depth), "n_trials": c.settings.trials, "cell": c.key}
    if failure is not None:
        return {**row, "status": failure[0], "detail": failure[1]}
    trials = [store.trials[c.key, t] for t in range(c.settings.trials)]
    if (summarize := get_task(c.task).summarize) is not None:  # a task's own columns from its own numbers
        row = {**row, **summarize([json.loads(r["scores"]) for r in trials], stats.seed_of(c.key))}
        return {**row, "status": "ok", "detail": ""}
    if get_task(c.task).match is not None:  # scored on what the model wrote
        scores = [float(r["match"]) for r in trials]
    else:
        scores = [float(r["exact"]) for r in trials]
    lo, hi = stats.score_interval(scores, stats.seed_of(c.key))
    logprobs = [float(r["logprob"]) for r in trials]
    return {
        **row,
        "n_tokens": sum(c.length + int(r["n_answer"]) - 1 for r in trials),
        "accuracy": f"{math.fsum(scores) / len(scores):.4f}",
        "accuracy_lo": f"{lo:.4f}",
        "accuracy_hi": f"{hi:.4f}",
        "mean_logprob": f"{math.fsum(logprobs) / len(logprobs):.6f}",
        "status": "ok",
        "detail": "",
    }


def _finite(numbers) -> bool:
    """Whether a task's trial numbers are all finite: JSON, which trials.csv stores them as, has no NaN."""
    try:
        json.dumps(numbers, allow_nan=False)
    except ValueError:
        return False
    return True


def failure_status(err: BaseException) -> str | None:
    """'oom' for running out of memory (CPU or GPU), else None."""
    text = str(err).lower()
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text:
        return "oom"
    return None
