"""Greedy decoding with a KV cache: what ``generate(do_sample=False)`` produces, on ropekit's decoder."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from ..models.decoder import KVCache
from .answer import AnswerScore, answer_score
from .nll import _as_ids, head_logits


@torch.inference_mode()
def greedy_generate(
    model,
    prompt_ids,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int] = (),
    stop: Callable[[list[int]], bool] | None = None,
) -> list[int]:
    """The tokens greedy decoding appends to ``prompt_ids``: one forward over the prompt, then one token at
    a time against the cached keys and values (sliding layers keep only their window, chunked ones their chunk;
    each new token rotated as the plan says at its position, stateless ``dynamic`` at the length read so far).
    The cache is sized for prompt and generation once, so a token costs no rope table or key copy of the
    context's length. Ends after ``max_new_tokens``, on a token of ``eos_ids`` (kept, as ``generate`` keeps it),
    or when ``stop`` (given the tokens so far) says so. Argmax ties go to the lower id, as in ``generate``."""
    prompt = _as_ids(model, prompt_ids, at_least=1, name="prompt_ids")
    cache = KVCache(len(model.config.layers), capacity=len(prompt) + max_new_tokens)
    logits = head_logits(model, model(prompt[None], cache=cache)[0, -1:])  # (1, V)
    return _decode(model, cache, logits, max_new_tokens, eos_ids, stop)


def _decode(model, cache: KVCache, logits: torch.Tensor, max_new_tokens: int, eos_ids, stop=None) -> list[int]:
    """Greedy decoding on from ``cache``, ``logits`` (1, V) those of its last token."""
    out: list[int] = []
    while len(out) < max_new_tokens:
        if out:  # the last token is never read: nothing follows it
            hidden = model(torch.tensor([out[-1:]], device=logits.device), cache=cache)[0, -1:]
            logits = head_logits(model, hidden)
        token = int(logits.argmax(-1))
        out.append(token)
        if token in eos_ids or (stop is not None and stop(out)):
            break
    return out


@torch.inference_mode()
def score_and_generate(model, prompt_ids, answer_ids, max_new_tokens: int) -> tuple[AnswerScore, str]:
    """A trial scored both ways from one forward over its prompt: the reference ``answer_ids`` teacher-forced
    (:func:`ropekit.score_answer`'s score) from a fork of the prompt's cache, and what greedy decoding writes
    after the prompt (:func:`generate_text`) from the cache itself; a trial's prompt is read once, not twice.

    Through the cache the prompt is rotated as a sequence of its own length, the answer's tokens at the length
    read with them, as ``generate`` reads them: equal to ``score_answer``'s one forward over prompt and answer
    for every rope but ``dynamic`` (and ``longrope`` switching its factors) across its trained length, where the
    prompt's frequencies are those of the prompt's length."""
    prompt = _as_ids(model, prompt_ids, at_least=1, name="prompt_ids")
    answer = _as_ids(model, answer_ids, at_least=1, name="answer_ids")
    cache = KVCache(len(model.config.layers), capacity=len(prompt) + max(max_new_tokens, len(answer) - 1))
    first = head_logits(model, model(prompt[None], cache=cache)[0, -1:])  # (1, V): predicts the answer's first
    logits = first
    if len(answer) > 1:
        rest = model(answer[None, :-1], cache=cache.fork())[0]  # (A - 1, C)
        logits = torch.cat((first, head_logits(model, rest)))
    tokens = _decode(model, cache, first, max_new_tokens, stop_ids(model))
    return answer_score(logits, answer), model.tokenizer.decode(tokens, skip_special_tokens=True)


def stop_ids(model) -> set[int]:
    """The tokens generation ends on: the tokenizer's EOS and the checkpoint config's ``eos_token_id`` (one
    or a list), as ``generate`` stops on both."""
    ids = {model.tokenizer.eos_token_id} - {None}
    config = model.config.checkpoint.get("eos_token_id")
    ids.update(config if isinstance(config, list) else [config] if config is not None else [])
    return ids


def generate_text(model, prompt_ids, max_new_tokens: int) -> str:
    """What greedy decoding writes after ``prompt_ids``: at most ``max_new_tokens`` tokens, ending at an EOS
    (``stop_ids``), decoded without special tokens; lm-evaluation-harness's ``generate_until`` with no stop
    sequence, as ropekit's backend runs it (``ropekit/lmeval/__init__.py``)."""
    tokens = greedy_generate(model, prompt_ids, max_new_tokens=max_new_tokens, eos_ids=stop_ids(model))
    return model.tokenizer.decode(tokens, skip_special_tokens=True)
