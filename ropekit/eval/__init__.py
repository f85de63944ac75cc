"""Evaluation: per-token negative log-likelihood, perplexity, and answers scored after a prompt.

Names load on first use (``ropekit/lazy.py``): the prompt builders of ``retrieval.py`` need no torch."""

from ..lazy import exports

__all__ = ["AnswerScore", "score_answer", "token_nll"]

__getattr__, __dir__ = exports(__name__, {".answer": ("AnswerScore", "score_answer"), ".nll": ("token_nll",)})
