"""``longppl``: LongPPL and LongCE (Fang et al., ICLR 2025; PKU-ML/LongPPL ``longppl/longppl.py``), the
perplexity of only the tokens that need the long context, which tracks long-context benchmarks where
plain perplexity does not.

A cell (model, layer mix, rope, length L) scores ``trials`` documents: the first ``trials`` of the corpus
with at least L - 1 tokens, each cut to its first L - 1 tokens (``encode`` without special tokens) and
decoded to text, as the source's ``perplexity/perplexity.py`` cuts GovReport to ``max_length - 1``
tokens: the evaluator, which adds the tokenizer's BOS, then reads L tokens. On that text, as
``compute_longppl`` does:

* the **evaluator** (``find_key_token``) reads the text (its tokenizer's special tokens added) once
  whole and once per window: the tokens from ``start + trunc_len`` to ``start + trunc_len + trunc_stride``
  read after only the ``trunc_len`` tokens before them, for ``start`` in ``range(0, n - trunc_len,
  trunc_stride)`` (the last window cut at the end). A token is a **key token** where the truncated
  context costs more than ``alpha`` nats (``loss_short - loss_full > alpha``) and the long context
  predicts it well (``loss_full < -beta``). Its characters (the tokenizer's offsets, runs merged) mark
  the key text;
* the **evaluated model** (the cell's model, layer mix and rope) reads the text without special tokens
  (the source's ``add_special_tokens=False``); a token whose characters lie inside a key slice is a
  key token of it (``cal_overlap``), and its NLL (predicting it from everything before) counts.

The evaluator is by default the cell's own model (the source's self-evaluation:
``compute_longppl(text, model, evaluator_model=model)``), so each rope picks its own key tokens; with
``evaluator_rope`` it is the same weights under that rope and the checkpoint's own layer mix, one
evaluator for every rope and layer mix of the sweep, so they are all scored on the same key tokens; with
``evaluator`` it is another model (any a sweep can load; under ``evaluator_rope`` when given), with its
own tokenizer, loaded once per worker in the evaluated model's dtype and device, as the source's
``--evaluator-model`` (Llama 3.1 8B, Qwen2 72B). Its name, not its bytes, is part of the cells' keys, and
the dry run prices its passes at the evaluated model's size. A shared evaluator (either key) finds a text's
key tokens once per worker: the model's other ropes and layer mixes read them back, and the dry run prices
its passes once per (length, document).

``trunc_len`` defaults to ``min(4096, trained // 4)``, ``trained`` the evaluator's trained context: the
source's 4096 for the models it was made for (Llama 3.1 8B, 128k; Qwen2: 32k), and a quarter of the
trained context for a smaller one (SmolLM2-135M, 8192: 2048), so the truncated context lies well inside
what the model was trained on, and a length of a few times the trained one still leaves most of its
tokens past it; ``trunc_stride`` defaults to a quarter of ``trunc_len`` (the source's 1024 of 4096). A
length of at most ``trunc_len + 1`` leaves no token to test: its cell has no key token, and says so.

A trial's numbers (trials.csv ``scores``): its predictions' NLL sum and count, its key tokens' NLL sum
and count, and per block of ``BLOCK`` predictions both again (the intervals' units). A cell's row:
``longce`` the mean NLL of the key tokens over its documents (key-token weighted, as the source's
script averages texts), ``longppl`` = exp(longce), ``n_key_tokens``; beside them the plain perplexity
of the same predictions (``ppl``, token-weighted as ropekit's perplexity); both with the percentile
bootstrap of perplexity's unit rule (``ropekit.stats.ppl_interval``, ``subset_interval``), LongPPL's units
those blocks (or documents) that hold key tokens: no interval from fewer than 16 of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from ..rope.checks import is_count
from .registry import OwnColumns, TaskSettingsError, TrialSettings, TrialTask, register_task

COLUMNS = ("longppl", "longppl_lo", "longppl_hi", "longce", "n_key_tokens")
REPORT_TEXT = (  # what the report's LongPPL section states
    "LongPPL (Fang et al., ICLR 2025; PKU-ML/LongPPL) is the perplexity of the key tokens only: those that an "
    "evaluator predicts more than alpha nats better from the whole context than from a truncated one and, with "
    "the whole context, with log-probability above beta (the source's alpha 2, beta -2 by default; the truncated "
    "context min(4096, a quarter of the evaluator's trained context), sliding by a quarter of it). The evaluator "
    "is each cell's own model and rope unless the spec's evaluator_rope names one for them all. A cell scores "
    "its documents' first L - 1 tokens (the evaluator, with BOS, reads L): LongPPL = exp(LongCE), LongCE the mean "
    "NLL over the key tokens of all its documents; beside it, dashed, the perplexity of every token of the same "
    "text. Intervals: the 95 % percentile bootstrap of ropekit.stats' unit rule over the units that hold key "
    "tokens (documents from 16 on, else each document's 64-prediction blocks, a block's key tokens with it); none "
    "from fewer than 16 units."
)
BLOCK = 64  # predictions per block: perplexity's (ropekit/eval/perplexity.py BLOCK; a test holds them equal)


@dataclass(frozen=True)
class LongPPLSettings(TrialSettings):
    """The ``[longppl]`` table: ``trials`` documents per cell and the source's parameters."""

    trials: int = 4
    trunc_len: int | None = field(
        default=None, metadata={"help": "tokens of the truncated context (the source's trunc_len; default scaled)"}
    )
    trunc_stride: int | None = field(
        default=None, metadata={"help": "tokens sharing one truncated context (sliding_window; trunc_len / 4)"}
    )
    alpha: float = field(default=2.0, metadata={"help": "nats the long context must gain on a key token"})
    beta: float = field(default=-2.0, metadata={"help": "log-probability a key token must exceed in long context"})
    evaluator: str | None = field(
        default=None, metadata={"help": "the model that picks key tokens: a name or path (default: each cell's)"}
    )
    evaluator_rope: str | None = field(
        default=None, metadata={"help": "the evaluator's rope, 'native' or TYPE[:FACTOR] (default: each cell's)"}
    )

    placed = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("trunc_len", "trunc_stride"):
            if (value := getattr(self, key)) is not None and not is_count(value):
                raise TaskSettingsError(f"longppl.{key} = {value!r} is not allowed; expected an integer >= 1")
        for key in ("alpha", "beta"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TaskSettingsError(f"longppl.{key} = {value!r} is not allowed; expected a finite number")
        if self.evaluator_rope not in (None, "native"):
            from ..rope.presets import parse_preset

            try:
                parse_preset(self.evaluator_rope if isinstance(self.evaluator_rope, str) else "")
            except ValueError:
                raise TaskSettingsError(
                    f"longppl.evaluator_rope = {self.evaluator_rope!r} is not allowed; expected 'native' or "
                    "TYPE[:FACTOR] (e.g. 'yarn:2')"
                ) from None

        if self.evaluator is not None:
            from ..models import read_model_config

            try:
                if not isinstance(self.evaluator, str) or not self.evaluator:
                    raise ValueError("expected a model name or path")
                read_model_config(self.evaluator)
            except (ValueError, OSError) as err:
                raise TaskSettingsError(
                    f"longppl.evaluator = {self.evaluator!r} cannot be read ({str(err).splitlines()[0]}); expected a "
                    "model a sweep can load: a local folder or GGUF file, an embedded name or a hub id"
                ) from None

    def definition(self) -> dict[str, Any]:
        return {**super().definition(), "settings": {k: v for k, v in self.to_dict().items() if k != "seed"}}

    def windows(self, trained: int) -> tuple[int, int]:
        """``(trunc_len, trunc_stride)`` for an evaluator trained on ``trained`` tokens (module docstring)."""
        trunc = self.trunc_len if self.trunc_len is not None else min(4096, max(1, trained // 4))
        return trunc, self.trunc_stride if self.trunc_stride is not None else max(1, trunc // 4)


def build(tokenizer, settings: LongPPLSettings, length: int, depth, trial: int, documents=None):
    """The ``trial``-th document of the corpus with at least ``length - 1`` tokens, cut to that many."""
    from ..eval.retrieval import Trial

    n = length - 1
    long = [i for i, ids in enumerate(documents or ()) if len(ids) >= n]
    if len(long) < settings.trials:
        raise ValueError(
            f"length={length}: the corpus has {len(long)} document(s) of at least {n} tokens, and longppl.trials = "
            f"{settings.trials} scores that many; lower trials, drop the length, or give a corpus of longer documents"
        )
    ids = tuple(int(i) for i in documents[long[trial]][:n])
    return Trial("longppl", length, None, trial, str(long[trial]), "", ids, (), 0, 0, 0)


_LOADED: dict[tuple, Any] = {}  # the evaluator model a worker loaded, by (name, rope, dtype, device): one at a time
# A shared evaluator's key tokens a worker found, by evaluator and text: the other ropes and layer mixes of the model
# read them back (each a few hundred positions; at most FOUND_KEPT texts kept)
_FOUND: dict[tuple, list[int]] = {}
FOUND_KEPT = 1024


def shared(settings: LongPPLSettings) -> bool:
    """Whether the evaluator is the same for every rope and layer mix of a model (``evaluator``, ``evaluator_rope``)."""
    return settings.evaluator is not None or settings.evaluator_rope is not None


def evaluator_of(model, settings: LongPPLSettings):
    """The model that picks the key tokens: ``model`` itself, its weights under ``evaluator_rope``, or the
    ``evaluator`` model (under ``evaluator_rope``, else its own), loaded once per process in ``model``'s
    dtype and device."""
    if settings.evaluator is None:
        if settings.evaluator_rope is None:
            return model
        return model.with_config(model.config.with_plan(rope_scaling=settings.evaluator_rope))
    weight = model.output_weight
    key = (settings.evaluator, settings.evaluator_rope, weight.dtype, str(weight.device))
    if key not in _LOADED:
        from ..models import load_model

        _LOADED.clear()  # the last one's weights go first
        rope = settings.evaluator_rope if settings.evaluator_rope != "native" else None
        _LOADED[key] = load_model(settings.evaluator, rope_scaling=rope, dtype=weight.dtype, device=weight.device)
    return _LOADED[key]


def trained_context(model) -> int:
    return int(model.config.plan_record()["trained_context"])


def offsets_of(tokenizer, text: str, ids: list[int]) -> list[tuple[int, int]]:
    """Each token's characters in ``text``: the tokenizer's offsets, or, for a tokenizer without them,
    the source's ``compute_offsets`` (the lengths of successive decodes)."""
    offsets, pointer = [], 0
    for i in range(len(ids)):
        if i == 0:
            size = len(tokenizer.decode(ids[:1]))
        else:
            size = len(tokenizer.decode(ids[i - 1 : i + 1])) - len(tokenizer.decode(ids[i - 1 : i]))
        offsets.append((pointer, pointer + size))
        pointer += size
    return offsets


def encode(tokenizer, text: str, *, special: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """``text``'s ids and each one's characters, as the source tokenizes it."""
    try:
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer
        ids = tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids, offsets_of(tokenizer, text, ids)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def key_positions(evaluator, ids: list[int], trunc: int, stride: int, alpha: float, beta: float) -> list[int]:
    """The positions of the key tokens in ``ids`` (``find_key_token``): one full pass and one per window."""
    import torch

    from ..eval import token_nll

    tensor = torch.as_tensor(ids, dtype=torch.long)
    full = token_nll(evaluator, tensor)
    keys = []
    for start in range(0, len(ids) - trunc, stride):
        share = min(stride, len(ids) - start - trunc)
        short = token_nll(evaluator, tensor[start : start + trunc + share])[trunc - 1 : trunc + share - 1]
        long = full[start + trunc - 1 : start + trunc + share - 1]
        hit = ((short - long) > alpha) & (long < -beta)
        keys += [start + trunc + int(i) for i in torch.nonzero(hit).flatten()]
    return keys


def found_once(model, evaluator, settings: LongPPLSettings, ids: list[int], trunc: int, stride: int) -> list[int]:
    """:func:`key_positions` of ``ids``; a shared evaluator's found once per worker, for every rope and layer mix of
    ``model`` (keyed by the evaluator's weights, as every plan of the model shares them, and the text)."""
    if not shared(settings):
        return key_positions(evaluator, ids, trunc, stride, settings.alpha, settings.beta)
    weight = model.output_weight
    weights = settings.evaluator or (str(model.source), weight.data_ptr())
    text = hashlib.sha256(repr(ids).encode()).hexdigest()
    memo = (weights, settings.evaluator_rope, str(weight.dtype), str(weight.device), text, trunc, stride)
    memo += (settings.alpha, settings.beta)
    if memo not in _FOUND:
        if len(_FOUND) >= FOUND_KEPT:
            _FOUND.clear()
        _FOUND[memo] = key_positions(evaluator, ids, trunc, stride, settings.alpha, settings.beta)
    return _FOUND[memo]


def merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character intervals with each run of adjacent ones (one's end the next one's start) joined."""
    out: list[tuple[int, int]] = []
    for start, end in intervals:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def overlap(offsets: list[tuple[int, int]], slices: list[tuple[int, int]]) -> list[int]:
    """The predictions (index ``i - 1`` for token ``i``) of the tokens inside a key slice (``cal_overlap``)."""
    keys, i, j = [], 0, 0
    while i < len(offsets) and j < len(slices):
        (a_start, a_end), (b_start, b_end) = offsets[i], slices[j]
        if a_start >= b_start and a_end <= b_end:
            keys.append(i - 1)
            i += 1
        elif a_start < b_start:
            i += 1
        else:
            j += 1
    return keys


def score(model, tokenizer, settings: LongPPLSettings, trial) -> dict[str, Any]:
    """One document's numbers (module docstring)."""
    import torch

    from ..eval import token_nll

    text = tokenizer.decode(list(trial.prompt_ids))
    evaluator = evaluator_of(model, settings)
    trunc, stride = settings.windows(trained_context(evaluator))
    eval_ids, eval_offsets = encode(evaluator.tokenizer if settings.evaluator else tokenizer, text, special=True)
    found = found_once(model, evaluator, settings, eval_ids, trunc, stride)
    slices = merged([eval_offsets[p] for p in found])
    ids, offsets = encode(tokenizer, text, special=False)
    nll = token_nll(model, torch.as_tensor(ids, dtype=torch.long)).double()
    keys = overlap(offsets, slices)
    if -1 in keys:  # the source would read the last prediction there; a first token is never one (trunc >= 1)
        raise AssertionError("a key slice covers the text's first token")
    is_key = torch.zeros(len(nll), dtype=torch.bool)
    is_key[keys] = True
    starts = range(0, len(nll), BLOCK)
    return {
        "n_tokens": len(nll),
        "nll_sum": float(nll.sum()),
        "n_key": len(keys),
        "key_nll_sum": float(nll[is_key].sum()),
        "blocks": [float(nll[s : s + BLOCK].sum()) for s in starts],
        "key_blocks": [
            [float(nll[s : s + BLOCK][is_key[s : s + BLOCK]].sum()), int(is_key[s : s + BLOCK].sum())] for s in starts
        ],
        "trunc_len": trunc,
        "trunc_stride": stride,
    }


def summarize(trials: list[dict[str, Any]], seed: int) -> dict[str, str]:
    """A cell's columns from its documents' numbers (module docstring)."""
    from .. import stats

    n_tokens = sum(t["n_tokens"] for t in trials)
    nll = math.fsum(t["nll_sum"] for t in trials)
    lo, hi, method = stats.ppl_interval(
        [t["nll_sum"] for t in trials],
        [t["n_tokens"] for t in trials],
        [t["blocks"] for t in trials],
        block=BLOCK,
        seed=seed,
    )
    row = {
        "n_docs": len(trials),
        "n_tokens": n_tokens,
        "nll": f"{nll / n_tokens:.6f}",
        "ppl": f"{math.exp(nll / n_tokens):.4f}",
        "ppl_lo": "" if math.isnan(lo) else f"{lo:.4f}",
        "ppl_hi": "" if math.isnan(hi) else f"{hi:.4f}",
        "interval": method,
    }
    n_key = sum(t["n_key"] for t in trials)
    row["n_key_tokens"] = n_key
    if not n_key:
        return {**row, "longppl": "", "longppl_lo": "", "longppl_hi": "", "longce": ""}
    longce = math.fsum(t["key_nll_sum"] for t in trials) / n_key
    lo, hi, _ = stats.subset_interval([t["key_blocks"] for t in trials], block=BLOCK, seed=seed)
    return {
        **row,
        "longppl": f"{math.exp(longce):.4f}",
        "longppl_lo": "" if math.isnan(lo) else f"{lo:.4f}",
        "longppl_hi": "" if math.isnan(hi) else f"{hi:.4f}",
        "longce": f"{longce:.6f}",
    }


def passes(config, settings: LongPPLSettings, length: int) -> list[int]:
    """The forward lengths one document runs: the evaluated model's, and the evaluator's where it is the cell's
    own (:func:`evaluator_passes`; a shared evaluator's are ``shared_passes``)."""
    return [length - 1] + ([] if shared(settings) else evaluator_passes(config, settings, length))


def evaluator_passes(config, settings: LongPPLSettings, length: int) -> list[int]:
    """The evaluator's forwards on one document: its whole text and its windows (their count as ``find_key_token``
    makes them; ``length`` tokens with BOS)."""
    trunc, stride = settings.windows(int(config.plan_record()["trained_context"]))
    windows = [min(trunc + stride, length - start) for start in range(0, length - trunc, stride)]
    return [length, *windows]


def shared_passes(config, settings: LongPPLSettings, length: int) -> list[int]:
    """A shared evaluator's forwards on one document: a worker runs them once for every rope and layer mix."""
    return evaluator_passes(config, settings, length) if shared(settings) else []


TASK = register_task(
    TrialTask(
        "longppl",
        LongPPLSettings,
        build,
        reads_corpus=True,
        description="LongPPL: perplexity on the key tokens that need the long context (PKU-ML/LongPPL)",
        score=score,
        summarize=summarize,
        columns=COLUMNS,
        passes=passes,
        shared_passes=shared_passes,
        shown=OwnColumns(
            "LongPPL",
            "longppl",
            "LongPPL",
            beside="ppl",
            beside_label="ppl",
            more=(("longce", "LongCE"), ("n_key_tokens", "key tokens")),
            text=REPORT_TEXT,
        ),
    )
)
