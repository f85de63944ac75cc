"""Per-token negative log-likelihood without ``[T, vocab]`` logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logits are made for this many (token, vocab) entries at a time: 2**26 float32 = 256 MiB.
LOGIT_BUDGET = 1 << 26


def _as_ids(model, input_ids, *, at_least: int = 2) -> torch.Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"input_ids has shape {tuple(ids.shape)}; expected [T] or [1, T]")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"input_ids has dtype {ids.dtype}; expected integer token ids")
    if ids.numel() < at_least:
        raise ValueError(f"input_ids has {ids.numel()} token(s); at least {at_least} are needed to predict one")
    vocab = model.config.vocab_size
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside the vocabulary; ids must be in [0, {vocab})")
    return ids.long().to(model.device)


@torch.inference_mode()
def token_nll(model, input_ids, *, next_id: int | None = None) -> torch.Tensor:
    """NLL of each next-token prediction: float32 ``[T-1]`` (entry t is -log p(x[t+1] | x[:t+1])).
    With ``next_id``, ``[T]``: the last entry is -log p(next_id | x), the token after the T the model
    reads (lm-evaluation-harness windows predict as many tokens as they read, and a rope whose
    frequencies depend on the length must see T tokens, not T+1).

    The final hidden states are projected onto the vocabulary in chunks of tokens, and the
    cross-entropy is taken in float32 per chunk, so peak memory stays at one chunk of logits.
    """
    ids = _as_ids(model, input_ids, at_least=2 if next_id is None else 1)
    targets = ids[1:] if next_id is None else torch.cat((ids[1:], _as_ids(model, [next_id], at_least=1)))
    hidden = model(ids[None])[0]  # (T, C)
    weight = model.output_weight  # (V, C)
    cap = model.config.final_logit_softcapping
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=ids.device)
    chunk = max(1, LOGIT_BUDGET // weight.shape[0])
    for start in range(0, targets.shape[0], chunk):
        end = min(targets.shape[0], start + chunk)
        logits = (hidden[start:end] @ weight.T).float()  # (chunk, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        out[start:end] = F.cross_entropy(logits, targets[start:end], reduction="none")
    return out
