"""Perplexity at a length, token-weighted, with one forward pass serving every length whose
rope frequencies are the same.

* First-L mode (the YaRN-table quantity): a document with >= L tokens is cut to its first L
  tokens and all L-1 next-token predictions count.
* Strided mode (the transformers perplexity guide): windows of L tokens every ``stride`` tokens
  over the whole document; each window scores only the tokens no earlier window scored.

Perplexity over many documents is exp(total NLL / total predicted tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..rope import spec_frequencies
from .nll import token_nll


@dataclass(frozen=True)
class Score:
    """Summed NLL over ``n_tokens`` predictions (float64 sum of the float32 per-token values)."""

    nll_sum: float
    n_tokens: int

    @property
    def nll(self) -> float:
        return self.nll_sum / self.n_tokens if self.n_tokens else math.nan

    @property
    def ppl(self) -> float:
        return math.exp(self.nll) if self.n_tokens else math.nan


def combine(scores: Sequence[Score]) -> Score:
    """Token-weighted total of several documents' scores."""
    return Score(sum(s.nll_sum for s in scores), sum(s.n_tokens for s in scores))


def frequency_signature(model, length: int) -> tuple:
    """Everything about the model's plan that can change with the evaluated length, layer by
    layer: attention kind and window, and the rope's frequencies and scale at ``length``."""
    ropes: dict = {}
    signature = []
    for layer in model.config.layers:
        if layer.rope is not None and layer.rope not in ropes:
            inv_freq, scale = spec_frequencies(layer.rope, length)
            ropes[layer.rope] = (inv_freq.numpy().tobytes(), scale)
        signature.append((layer.attention, layer.window, ropes.get(layer.rope)))
    return tuple(signature)


def shared_passes(model, lengths: Sequence[int]) -> list[tuple[tuple, int, list[int]]]:
    """Group lengths whose plan and rope frequencies are identical: one pass at the largest of a
    group gives every other by prefix (causal attention never looks ahead). Static ropes give one
    group; dynamic one per length past its trained length; longrope one per regime. Returns
    (signature, pass length, lengths served) per group."""
    groups: dict[tuple, list[int]] = {}
    for length in sorted(set(lengths)):
        groups.setdefault(frequency_signature(model, length), []).append(length)
    return [(signature, max(group), group) for signature, group in groups.items()]


def first_tokens_scores(
    model, ids: torch.Tensor, lengths: Sequence[int], *, nll_fn: Callable = token_nll, memo: dict | None = None
) -> dict[int, Score]:
    """First-L scores of one document for each length (the document must have >= max(lengths) tokens).

    ``memo`` (one dict per document and set of weights) keeps each pass's running NLL sums by
    signature, so another rope of the same sweep with identical frequencies at these lengths (dynamic
    below its trained length is the default rope) reuses the pass instead of running it again.
    """
    if len(ids) < max(lengths):
        raise ValueError(f"the document has {len(ids)} tokens, fewer than the length {max(lengths)}")
    memo = {} if memo is None else memo
    scores = {}
    for signature, pass_length, served in shared_passes(model, lengths):
        running = memo.get(signature)
        if running is None or len(running) < pass_length:
            nll = nll_fn(model, ids[:pass_length]).double()
            running = memo[signature] = torch.cat((nll.new_zeros(1), nll.cumsum(0)))  # running[k]: first k
        for length in served:
            scores[length] = Score(float(running[length - 1]), length - 1)
    return scores


def strided_score(model, ids: torch.Tensor, length: int, stride: int, *, nll_fn: Callable = token_nll) -> Score:
    """Windows of ``length`` tokens starting every ``stride`` tokens over the whole document, each
    scoring the tokens no earlier window scored (the transformers perplexity guide). With
    ``stride < length`` every token after the first is predicted exactly once; with
    ``stride == length`` (no overlap) the first token of each window has no context and is skipped."""
    if not 0 < stride <= length:
        raise ValueError(f"stride={stride} is not allowed; expected 0 < stride <= length ({length})")
    total, count, scored_until = 0.0, 0, 1  # token 0 is never predicted
    for begin in range(0, len(ids), stride):
        end = min(begin + length, len(ids))
        if end <= scored_until:
            break
        nll = nll_fn(model, ids[begin:end]).double()  # predictions for tokens begin+1 .. end-1
        new = nll[max(0, scored_until - begin - 1) :]
        total += float(new.sum())
        count += new.numel()
        scored_until = end
        if end == len(ids):
            break
    return Score(total, count)
