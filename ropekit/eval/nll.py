"""Per-token negative log-likelihood without ``[T, vocab]`` logits."""

from __future__ import annotations

import torch

# Logits are made for this many (token, vocab) entries at a time: 2**26 float32 = 256 MiB (and
# 128 MiB more for the bf16 matmul's output when the model runs in bf16).
LOGIT_BUDGET = 1 << 26


def _as_ids(model, input_ids, *, at_least: int = 2, name: str = "input_ids") -> torch.Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"{name} has shape {tuple(ids.shape)}; expected [T] or [1, T]")
    if ids.numel() < at_least:
        raise ValueError(f"{name} has {ids.numel()} token(s); at least {at_least} are needed")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {ids.dtype}; expected integer token ids")
    vocab = model.config.vocab_size
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} in {name} is outside the vocabulary; ids must be in [0, {vocab})")
    return ids.long().to(model.device)


@torch.inference_mode()
def token_nll(model, input_ids, *, next_id: int | None = None) -> torch.Tensor:
    """NLL of each next-token prediction: float32 ``[T-1]`` (entry t is -log p(x[t+1] | x[:t+1])).
    With ``next_id``, ``[T]``: the last entry is -log p(next_id | x), the token after the T the model
    reads (lm-evaluation-harness windows predict as many tokens as they read, and a rope whose
    frequencies depend on the length must see T tokens, not T+1).

    The final hidden states are projected onto the vocabulary in chunks of tokens, in the model's
    dtype, and the cross-entropy is taken in float32 per chunk, so peak memory stays at one chunk
    of logits.
    """
    ids = _as_ids(model, input_ids, at_least=2 if next_id is None else 1)
    targets = ids[1:] if next_id is None else torch.cat((ids[1:], _as_ids(model, [next_id], at_least=1)))
    hidden = model(ids[None])[0]  # (T, C)
    weight = model.output_weight  # (V, C)
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=ids.device)
    chunk = min(targets.shape[0], max(1, LOGIT_BUDGET // weight.shape[0]))
    # One buffer for every chunk: a fresh one this large is mapped and page-faulted anew each time,
    # which cost more than the bf16 -> float32 conversion itself (SmolLM2 in bf16, 4096 tokens).
    logits = hidden.new_empty(chunk, weight.shape[0])
    logits32 = logits if logits.dtype == torch.float32 else torch.empty_like(logits, dtype=torch.float32)
    logp = torch.empty_like(logits32)
    for start in range(0, targets.shape[0], chunk):
        end = min(targets.shape[0], start + chunk)
        z = torch.mm(hidden[start:end], weight.T, out=logits[: end - start])  # (chunk, V)
        z32 = z if logits32 is logits else logits32[: end - start].copy_(z)
        if model.config.logit_scale != 1.0:  # Granite's 1 / logits_scaling
            z32.mul_(model.config.logit_scale)
        cap = model.config.final_logit_softcapping
        out[start:end] = _cross_entropy(z32, targets[start:end], cap, scratch=logp[: end - start])
    return out


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """float32 logits of a few final hidden states ``(N, C)``: the projection in the model's dtype (as
    transformers computes its logits), times Granite's 1 / logits_scaling, then Gemma 2's final soft-capping.
    For few rows only: ``token_nll`` does the same in chunks for long sequences."""
    logits = torch.mm(hidden, model.output_weight.T).float()
    if model.config.logit_scale != 1.0:
        logits.mul_(model.config.logit_scale)
    cap = model.config.final_logit_softcapping
    return logits.div_(cap).tanh_().mul_(cap) if cap else logits


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, cap: float | None, *, scratch) -> torch.Tensor:
    """``F.cross_entropy(logits, targets, reduction="none")`` of float32 logits, after Gemma 2's final
    soft-capping ``tanh(z / cap) * cap`` (in place in ``logits``): the same log-softmax kernel, so the
    same bits as transformers' loss, written into ``scratch`` rather than a fresh buffer."""
    if cap:
        logits.div_(cap).tanh_().mul_(cap)
    return torch.log_softmax(logits, 1, out=scratch).gather(1, targets[:, None])[:, 0].neg()
