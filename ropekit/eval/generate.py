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
