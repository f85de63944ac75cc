"""Executors: how a sweep's workers run, one record each (``registry.py``; ropekit's own ``inline.py``,
``local.py`` and ``slurm.py``; plugins through the ``ropekit.executors`` entry-point group)."""

from .registry import (
    Executor,
    Launch,
    Option,
    executors,
    finish_workers,
    get_executor,
    register_executor,
    start_workers,
)

__all__ = [
    "Executor",
    "Launch",
    "Option",
    "executors",
    "finish_workers",
    "get_executor",
    "register_executor",
    "start_workers",
]
