"""Perplexity at a length, token-weighted, with one forward pass serving every length whose
rope frequencies are the same.

* First-L mode (the YaRN-table quantity): a document with >= L tokens is cut to its first L
  tokens and all L-1 next-token predictions count.
* Strided mode (the transformers perplexity guide): windows of L tokens every ``stride`` tokens
  over the whole document; each window scores only the tokens no earlier window scored.

Scoring a document is planned first (``plan_document``: the passes that will run, their tokens,
the lengths each serves, what the memo already holds) and then run (``score_plan``), so a caller's
cost estimate is the plan's ``tokens`` and can never differ from what runs.

Perplexity over many documents is exp(total NLL / total predicted tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True)
class Pass:
    """Tokens ``begin:end`` of a document through the model once. For each ``(length, first, stop)``
    it serves, the predictions of tokens ``first:stop`` count towards that length."""

    begin: int
    end: int
    serves: tuple[tuple[int, int, int], ...]
    signature: tuple | None = None  # first mode: its running sums are kept in the memo under this key
    cached: bool = False  # the memo held them when planned: nothing runs

    @property
    def tokens(self) -> int:
        return 0 if self.cached else self.end - self.begin


@dataclass(frozen=True)
class Plan:
    """The passes that score one document of ``n_tokens`` tokens at ``lengths``, in the order they run."""

    n_tokens: int
    lengths: tuple[int, ...]
    passes: tuple[Pass, ...]

    @property
    def tokens(self) -> int:
        """Tokens pushed through the model: the estimate, and exactly what ``score_plan`` runs."""
        return sum(p.tokens for p in self.passes)

    def kept(self) -> dict[tuple, int]:
        """Tokens of running sums each signature will hold in the memo once this plan has run."""
        return {p.signature: p.end for p in self.passes if p.signature is not None and not p.cached}

    def ready(self, memo: dict) -> bool:
        """Whether the memo holds every pass this plan counts on (false after one of them failed)."""
        return all(len(memo.get(p.signature, ())) >= p.end for p in self.passes if p.cached)


def memo_lengths(memo: dict) -> dict[tuple, int]:
    """Tokens covered by the running sums of each signature in a memo (what ``plan_document`` calls computed)."""
    return {signature: len(running) for signature, running in memo.items()}


def plan_document(
    model,
    n_tokens: int,
    lengths: Sequence[int],
    *,
    mode: str = "first",
    stride: int | None = None,
    computed: Mapping[tuple, int] | None = None,
) -> Plan:
    """The passes that score a document of ``n_tokens`` tokens at ``lengths``.

    ``first``: one pass per group of lengths sharing their frequencies (``shared_passes``), at the
    largest; a group whose running sums ``computed`` (signature -> tokens covered, as in
    ``memo_lengths``) already covers is read from the memo instead. ``strided``: for each length,
    its windows every ``stride`` tokens (never kept in the memo).
    """
    if mode == "first":
        if n_tokens < max(lengths):
            raise ValueError(f"the document has {n_tokens} tokens, fewer than the length {max(lengths)}")
        computed = computed or {}
        passes = [
            Pass(0, end, tuple((length, 1, length) for length in served), signature, computed.get(signature, 0) >= end)
            for signature, end, served in shared_passes(model, lengths)
        ]
    elif mode == "strided":
        passes = [window for length in sorted(set(lengths)) for window in _windows(n_tokens, length, stride)]
    else:
        raise ValueError(f"mode={mode!r} is not allowed; expected 'first' or 'strided'")
    return Plan(n_tokens, tuple(sorted(set(lengths))), tuple(passes))


def _windows(n_tokens: int, length: int, stride: int | None) -> list[Pass]:
    """Windows of ``length`` tokens starting every ``stride`` tokens, each scoring the tokens no
    earlier window scored (the transformers perplexity guide). With ``stride < length`` every token
    after the first is predicted exactly once; with ``stride == length`` (no overlap) the first
    token of each window has no context and is skipped."""
    if stride is None or not 0 < stride <= length:
        raise ValueError(f"stride={stride} is not allowed; expected 0 < stride <= length ({length})")
    windows, scored_until = [], 1  # token 0 is never predicted
    for begin in range(0, n_tokens, stride):
        end = min(begin + length, n_tokens)
        if end <= scored_until:
            break
        windows.append(Pass(begin, end, ((length, max(scored_until, begin + 1), end),)))
        scored_until = end
        if end == n_tokens:
            break
    return windows


def score_plan(
    model, ids: torch.Tensor, plan: Plan, *, nll_fn: Callable = token_nll, memo: dict | None = None
) -> dict[int, Score]:
    """Run ``plan`` on the document ``ids``: a score per length.

    ``memo`` (one dict per document and set of weights) keeps each kept pass's running NLL sums by
    signature, so another rope of the same sweep with identical frequencies at these lengths (dynamic
    below its trained length is the default rope) reads them instead of running the pass again.
    """
    if len(ids) != plan.n_tokens:
        raise ValueError(f"the plan is for a document of {plan.n_tokens} tokens, not {len(ids)}")
    memo = {} if memo is None else memo
    if not plan.ready(memo):
        raise ValueError("the memo lacks running sums the plan counts on; plan again from this memo")
    sums = dict.fromkeys(plan.lengths, 0.0)
    counts = dict.fromkeys(plan.lengths, 0)
    for p in plan.passes:
        if p.cached:
            running = memo[p.signature]
        else:
            nll = nll_fn(model, ids[p.begin : p.end]).double()  # predictions for tokens begin+1 .. end-1
            running = torch.cat((nll.new_zeros(1), nll.cumsum(0)))  # running[k]: the first k predictions
            if p.signature is not None:
                memo[p.signature] = running
        for length, first, stop in p.serves:
            total = running[stop - p.begin - 1] - running[first - p.begin - 1]
            sums[length] += float(total)
            counts[length] += stop - first
    return {length: Score(sums[length], counts[length]) for length in plan.lengths}


def first_tokens_scores(
    model, ids: torch.Tensor, lengths: Sequence[int], *, nll_fn: Callable = token_nll, memo: dict | None = None
) -> dict[int, Score]:
    """First-L scores of one document for each length (the document must have >= max(lengths)
    tokens), reusing the passes ``memo`` holds (see ``score_plan``)."""
    memo = {} if memo is None else memo
    plan = plan_document(model, len(ids), lengths, computed=memo_lengths(memo))
    return score_plan(model, ids, plan, nll_fn=nll_fn, memo=memo)


def strided_score(model, ids: torch.Tensor, length: int, stride: int, *, nll_fn: Callable = token_nll) -> Score:
    """Strided score of one document at ``length`` (see ``_windows``)."""
    plan = plan_document(model, len(ids), [length], mode="strided", stride=stride)
    return score_plan(model, ids, plan, nll_fn=nll_fn)[length]
