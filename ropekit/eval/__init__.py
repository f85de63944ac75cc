"""Evaluation: per-token negative log-likelihood and perplexity."""

from .nll import token_nll

__all__ = ["token_nll"]
