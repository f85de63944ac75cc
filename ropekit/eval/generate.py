"""Greedy decoding with a KV cache: what ``generate(do_sample=False)`` produces, on ropekit's decoder."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from ..models.decoder import KVCache
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
    a time against the cached keys and values (sliding layers keep only their window; each new token rotated
    as the plan says at its position, stateless ``dynamic`` at the length read so far). The cache is sized for
    prompt and generation once, so a token costs no rope table or key copy of the context's length. Ends after
    ``max_new_tokens``, on a token of ``eos_ids`` (kept, as ``generate`` keeps it), or when ``stop`` (given
    the tokens so far) says so. Argmax ties go to the lower id, as in ``generate``."""
    prompt = _as_ids(model, prompt_ids, at_least=1, name="prompt_ids")
    cache = KVCache(len(model.config.layers), capacity=len(prompt) + max_new_tokens)
    hidden = model(prompt[None], cache=cache)[0, -1:]  # (1, C)
    out: list[int] = []
    while len(out) < max_new_tokens:
        if out:  # the last token is never read: nothing follows it
            hidden = model(torch.tensor([out[-1:]], device=prompt.device), cache=cache)[0, -1:]
        token = int(head_logits(model, hidden).argmax(-1))
        out.append(token)
        if token in eos_ids or (stop is not None and stop(out)):
            break
    return out


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
