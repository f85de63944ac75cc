"""Tasks: what a sweep asks of a model at each length, one record each (``registry.py``; ropekit's own
``perplexity.py``, ``passkey.py``, ``needle.py``, RULER's and LongPPL; plugins through the ``ropekit.tasks``
entry-point group)."""

from __future__ import annotations

from collections.abc import Sequence

from .registry import (
    DEPTHS,
    DocumentTask,
    OwnColumns,
    Task,
    TaskSettingsError,
    TrialSettings,
    TrialTask,
    default_tasks,
    get_task,
    is_trial,
    register_task,
    tasks,
    trial_tasks,
)

__all__ = [
    "DEPTHS",
    "DocumentTask",
    "OwnColumns",
    "Task",
    "TaskSettingsError",
    "TrialSettings",
    "TrialTask",
    "build_trial",
    "default_tasks",
    "get_task",
    "is_trial",
    "register_task",
    "tasks",
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
    if not isinstance(record, TrialTask):
        raise ValueError(f"task={task!r} is not a retrieval task; expected one of {', '.join(trial_tasks())}")
    return record.build(tokenizer, record.table({"seed": seed, **settings}), length, depth, trial, documents)
