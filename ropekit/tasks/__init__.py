"""Tasks: what a sweep asks of a model at each length besides perplexity, one record each
(``registry.py``; ropekit's own ``passkey.py`` and ``needle.py``; plugins through the ``ropekit.tasks``
entry-point group)."""

from __future__ import annotations

from collections.abc import Sequence

from .registry import (
    DEPTHS,
    TaskSettingsError,
    TrialSettings,
    TrialTask,
    get_task,
    register_task,
    trial_tasks,
)

__all__ = [
    "DEPTHS",
    "TaskSettingsError",
    "TrialSettings",
    "TrialTask",
    "build_trial",
    "get_task",
    "register_task",
    "trial_tasks",
]


def build_trial(
    tokenizer,
    task: str,
    length: int,
    depth: float,
    trial: int,
    *,
    seed: int = 0,
    documents: Sequence[Sequence[int]] | None = None,
    **settings,
):
    """One trial of the task named ``task`` with its table's ``settings`` (``digits=5``, ...), as a sweep
    builds it; ``documents``: the corpus's token ids, for a task that reads the corpus."""
    record = get_task(task)
    if record is None:
        raise ValueError(f"task={task!r} is not a retrieval task; expected one of {', '.join(trial_tasks())}")
    return record.build(tokenizer, record.table({"seed": seed, **settings}), length, depth, trial, documents)
