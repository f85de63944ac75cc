"""Perplexity at a length in the four published conventions (``MODES``), each proven against its
source in tests/eval, with one forward pass serving every length whose rope frequencies are the same.

A document's ids depend on the mode (``document_ids``). Scoring it is planned first
(``plan_document``: the passes that will run, their tokens, the lengths each serves, what the memo
already holds) and then run (``score_plan``), so a caller's cost estimate is the plan's ``tokens``
and can never differ from what runs. ``aggregate`` makes a cell's figure from its documents' scores
as the mode's source does (``WEIGHTING``).

* ``first`` (the YaRN-table quantity, ARCHITECTURE.md): ids ``tokenizer.encode(text)`` (default special
  tokens); a document with >= L tokens is cut to its first L and all L-1 next-token predictions
  count. Cell: token-weighted, exp(total NLL / total predictions).
* ``strided`` (transformers' guide "Perplexity of fixed-length models"): ids as ``first``; windows of
  L tokens every ``stride`` tokens over the whole document, each scoring the tokens no earlier window
  scored (with ``stride == L`` a window's first token has no context and is not predicted). Cell:
  token-weighted. The guide's own sum weights each later window's mean loss by one token fewer than
  the loss averaged (``num_valid_tokens - batch_size``), so with ``stride < L`` its printed figure is
  off from this one by about 1/stride relative.
* ``yarn`` (jquesnelle/yarn ``eval/perplexity.py``, ``compute_perplexity`` with ``--truncate``, as its
  ``eval.sh`` runs the paper's proof-pile curves): ids BOS + ``tokenizer.encode(text,
  add_special_tokens=False)`` (no BOS when the tokenizer has none); the first L of them in one
  forward, the L-1 predictions after the first token count (the labels shift in transformers' loss).
  Per document its mean NLL; the cell is exp(mean over documents of those means): the geometric mean
  of the per-document perplexities, token-weighted when all documents have L tokens. (The first
  version of that file, an ``evaluate.Metric``, took their arithmetic mean, ``np.mean(ppls)``.)
* ``rolling`` (lm-evaluation-harness ``HFLM.loglikelihood_rolling``: ``get_rolling_token_windows``
  with ``context_len=1``, then ``make_disjoint_window``): ids ``prefix_token_id`` (BOS, else EOS; older
  versions used EOS always) + ``tokenizer.encode(text, add_special_tokens=False)``. Every text
  token is predicted once, in disjoint runs of up to L: the first run reads the prefix and its first
  L-1 tokens; each later run reads the L tokens before its last target, one token of context for a
  full run and more for a shorter last run. Per document the total NLL; the cell is token-weighted,
  and lm-eval's own figures are total NLL over total words or bytes (``text_metrics``).

Every score also keeps ``blocks``, the NLL of consecutive blocks of ``BLOCK`` predictions, for
intervals (``ropekit.stats``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..models import ModelConfig
from ..modes import BLOCK, MODES, SHARED, WEIGHTING
from ..rope import position_key, spec_frequencies
from .nll import token_nll


def _checked(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; expected one of {', '.join(MODES)}")
    return mode


def prefix_id(tokenizer, mode: str) -> int | None:
    """The token ``mode`` puts before a document's text tokens: yarn BOS (none when the tokenizer has
    no BOS, as yarn's ``add_start_token``); rolling lm-eval's ``prefix_token_id``, BOS else EOS; first
    and strided none (they read ``tokenizer.encode(text)`` as it is)."""
    if _checked(mode) == "yarn":
        return tokenizer.bos_token_id
    if mode == "rolling":
        token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if token is None:
            raise ValueError("mode 'rolling' puts BOS or EOS before the text; this tokenizer has neither")
        return token
    return None


def encoding(tokenizer, mode: str) -> tuple[int | None, bool]:
    """How ``mode`` makes a document's ids, as plain data (a token cache keys on it): the token put
    before the text (``prefix_id``) and whether ``tokenizer.encode`` adds the tokenizer's default
    special tokens. first and strided: (None, True); yarn and rolling: (``prefix_id``, False)."""
    if _checked(mode) in ("first", "strided"):
        return None, True
    return prefix_id(tokenizer, mode), False


def document_ids(tokenizer, text: str, mode: str = "first") -> list[int]:
    """A document's token ids as ``mode`` reads them, for ``plan_document`` and ``score_plan``: first
    and strided ``tokenizer.encode(text)``; yarn and rolling ``prefix_id`` then the text's tokens
    without special tokens (``encoding``)."""
    prefix, special_tokens = encoding(tokenizer, mode)
    return ([] if prefix is None else [prefix]) + list(tokenizer.encode(text, add_special_tokens=special_tokens))


@dataclass(frozen=True)
class Score:
    """Summed NLL over ``n_tokens`` predictions (float64 sum of the float32 per-token values), and the
    NLL of consecutive blocks of ``BLOCK`` of those predictions in the order they are predicted (the
    last block may be shorter; empty where not computed, as in a score read back from a file)."""

    nll_sum: float
    n_tokens: int
    blocks: tuple[float, ...] = ()

    @property
    def nll(self) -> float:
        return self.nll_sum / self.n_tokens if self.n_tokens else math.nan

    @property
    def ppl(self) -> float:
        return math.exp(self.nll) if self.n_tokens else math.nan


def combine(scores: Sequence[Score]) -> Score:
    """Token-weighted total of several documents' scores, their blocks one after another in document
    order (none when a document with predictions lacks them)."""
    blocks = () if any(s.n_tokens and not s.blocks for s in scores) else tuple(b for s in scores for b in s.blocks)
    return Score(sum(s.nll_sum for s in scores), sum(s.n_tokens for s in scores), blocks)


def aggregate(mode: str, scores: Sequence[Score]) -> float:
    """A cell's perplexity from its documents' scores, weighed as ``mode``'s source does: by tokens,
    exp(total NLL / total predictions); yarn by documents, exp(mean over documents of each one's mean
    NLL) (``torch.exp(torch.stack(nlls).mean())`` over one loss per document)."""
    if WEIGHTING[_checked(mode)] == "documents":
        return math.exp(sum(s.nll for s in scores) / len(scores)) if scores else math.nan
    return combine(scores).ppl


def text_metrics(scores: Sequence[Score], texts: Sequence[str]) -> dict[str, float]:
    """lm-eval's figures for loglikelihood_rolling tasks, from the scores of whole texts (mode rolling
    predicts every token) and the texts: ``word_perplexity`` and ``byte_perplexity``, exp(total NLL /
    total words or UTF-8 bytes), and ``bits_per_byte``, total NLL / total bytes / ln 2 (its
    ``weighted_perplexity`` and ``bits_per_byte`` aggregations; words counted as its ``count_words``)."""
    nll = sum(s.nll_sum for s in scores)
    counts = [text_counts(text) for text in texts]
    n_bytes, words = sum(b for b, _ in counts), sum(w for _, w in counts)
    return {
        "word_perplexity": math.exp(nll / words),
        "byte_perplexity": math.exp(nll / n_bytes),
        "bits_per_byte": nll / n_bytes / math.log(2),
    }


def text_counts(text: str) -> tuple[int, int]:
    r"""(UTF-8 bytes, words) of a text as lm-eval counts them for its byte and word perplexities:
    ``len(text.encode("utf-8"))`` and ``len(re.split(r"\s+", text))`` (its ``count_words``; a leading or
    trailing whitespace run adds an empty word, as there)."""
    return len(text.encode("utf-8")), len(re.split(r"\s+", text))


def frequency_signature(model, length: int) -> tuple:
    """Everything about the model's plan that can change with the evaluated length, layer by
    layer: attention kind and window, the rope's frequencies and scale at ``length``, and what else
    decides its positions and query scales (an attention-level rope's parameters, log-n, a NoPE
    layer's temperature: equal frequencies do not make ReRoPE the default rope). ``model``:
    a model or its resolved :class:`ModelConfig` (planning reads the layer plan and nothing else, so
    ``shared_passes`` and ``plan_document`` plan from a config alone, as a sweep's dry run does)."""
    config = model if isinstance(model, ModelConfig) else model.config
    ropes: dict = {}
    signature = []
    for layer in config.layers:
        if layer.rope is not None and layer.rope not in ropes:
            inv_freq, scale = spec_frequencies(layer.rope, length)
            ropes[layer.rope] = (inv_freq.numpy().tobytes(), scale, position_key(layer.rope))
        signature.append((layer.attention, layer.window, ropes.get(layer.rope), layer.temperature))
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
    """Tokens ``begin:end`` of a document through the model once, predicting tokens ``begin+1:end``
    and, with ``predicts_end``, token ``end`` as well (rolling: a window predicts as many tokens as it
    reads). For each ``(length, first, stop)`` it serves, the predictions of tokens ``first:stop``
    count towards that length."""

    begin: int
    end: int
    serves: tuple[tuple[int, int, int], ...]
    signature: tuple | None = None  # first, yarn: its running sums are kept in the memo under this key
    cached: bool = False  # the memo held them when planned: nothing runs
    predicts_end: bool = False

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
    """The passes that score a document of ``n_tokens`` tokens (``document_ids``) at ``lengths``.

    ``first`` and ``yarn`` (the same passes over other ids): one pass per group of lengths sharing
    their frequencies (``shared_passes``), at the largest; a group whose running sums ``computed``
    (signature -> tokens covered, as in ``memo_lengths``) already covers is read from the memo
    instead. ``strided``: for each length, its windows every ``stride`` tokens; ``rolling``: for each
    length, lm-eval's windows (neither kept in the memo).
    """
    if min(lengths) < 2:
        raise ValueError(f"length {min(lengths)} is too short; a length reads at least 2 tokens")
    if _checked(mode) in SHARED:
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
        if n_tokens < 2:
            raise ValueError(f"the document has {n_tokens} token(s); mode 'rolling' reads the prefix and one more")
        passes = [window for length in sorted(set(lengths)) for window in _rolling_windows(n_tokens, length)]
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
        end, first = min(begin + length, n_tokens), max(scored_until, begin + 1)
        if end <= first:  # nothing left to predict (a last window of one token with stride == length)
            break
        windows.append(Pass(begin, end, ((length, first, end),)))
        scored_until = end
        if end == n_tokens:
            break
    return windows


def _rolling_windows(n_tokens: int, length: int) -> list[Pass]:
    """lm-eval's disjoint windows over ``[prefix] + text``: tokens 1.. predicted in runs of ``length``,
    each run reading the ``length`` tokens before its last target (fewer at the start: the first run
    reads the prefix and ``length - 1`` text tokens; a later full run has one token of context, a
    shorter last run more)."""
    windows = []
    for first in range(1, n_tokens, length):
        stop = min(first + length, n_tokens)
        windows.append(Pass(max(0, stop - 1 - length), stop - 1, ((length, first, stop),), predicts_end=True))
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
    edges: dict[int, list[float]] = {length: [] for length in plan.lengths}  # the sum at every BLOCK-th prediction
    for p in plan.passes:
        if p.cached:
            running = memo[p.signature]
        else:
            fed = ids[p.begin : p.end]
            # predictions for tokens begin+1 .. end-1, and end with predicts_end
            nll = (nll_fn(model, fed, next_id=int(ids[p.end])) if p.predicts_end else nll_fn(model, fed)).double()
            running = torch.cat((nll.new_zeros(1), nll.cumsum(0)))  # running[k]: the first k predictions
            if p.signature is not None:
                memo[p.signature] = running
        for length, first, stop in p.serves:
            before = first - p.begin - 1  # running[before]: the predictions before token ``first``
            ends = [before + k for k in range(-counts[length] % BLOCK or BLOCK, stop - first + 1, BLOCK)]
            edges[length] += (sums[length] + (running[ends] - running[before])).tolist()
            sums[length] += float(running[stop - p.begin - 1] - running[before])
            counts[length] += stop - first
    return {
        length: Score(sums[length], counts[length], _blocks(edges[length], sums[length], counts[length]))
        for length in plan.lengths
    }


def _blocks(edges: list[float], total: float, count: int) -> tuple[float, ...]:
    """Block sums from the running sum at each block's end (and at the end of a shorter last block)."""
    points = [0.0, *edges, *([total] if count % BLOCK else [])]
    return tuple(b - a for a, b in zip(points[:-1], points[1:], strict=True))


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
