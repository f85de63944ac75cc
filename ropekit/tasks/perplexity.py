"""The perplexity task's record: the corpus's documents scored at each length, what a spec that names no
``tasks`` runs. Its settings are the spec's own ``mode``, ``stride`` and ``n_docs`` (each mode's meaning:
``ropekit/modes.py``); its planning, passes, running and rows are ``ropekit/sweep/perplexity.py``'s; its
numbers are ``ropekit/eval/perplexity.py``'s."""

from __future__ import annotations

from ..modes import PERPLEXITY
from .registry import TASKS, DocumentTask

COLUMNS = ("nll", "ppl", "ppl_lo", "ppl_hi", "interval", "bits_per_byte", "word_ppl")

TASK = TASKS.register(
    DocumentTask(
        PERPLEXITY,
        description="the perplexity of the corpus's documents at each length (mode, stride, n_docs)",
        columns=COLUMNS,
        progress="ppl",
        default=True,
    )
)
