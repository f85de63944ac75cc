"""Attention kernels: one layer's rotated queries against its keys and values, as the plan says the layer attends.

Full causal layers take SDPA's fused kernel (:func:`sdpa`); sliding layers the band only (:func:`sliding_attention`,
query blocks against the keys of their band); chunked layers (Llama 4's) each chunk as a sequence of its own; an
attention-level rope's two regions (ReRoPE, Self-Extend:
ropekit/rope/positions.py), Gemma 2's soft-capped scores and gpt-oss's sinks a float32 softmax block by block
(:func:`two_region_attention`); on CUDA the last three go through FlexAttention's fused kernel
(ropekit/models/flex.py). :func:`attend` picks for a forward, :func:`attend_cached` for queries after a KV cache's keys.
Nothing ``T x T`` is ever held (the caller's tensors are (B, H, T, D) queries, (B, H_kv, T, D) keys and values of
their own width Dv).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .config import LayerSpec
from .flex import flex_two_region_attention

WHOLE = LayerSpec("full_attention", None, None)  # how each chunk of a chunked layer attends within itself

# Float32 scores one query block of ``two_region_attention`` may hold (all heads): 2**24 = 64 MiB,
# as much again for the probabilities. The block is at least 16 queries.
SCORE_BUDGET = 1 << 24


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, with values narrower than q.k's heads (MLA's) zero-padded to their width
    and the output's padding dropped: the fused kernels take one head size, and for two torch 2.13's CPU falls back
    to its math kernel, which holds the T x T scores (67 MB against 1 MB for 4 heads of 2048 tokens)."""
    width = v.shape[-1]
    if width == q.shape[-1]:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    return F.scaled_dot_product_attention(q, k, F.pad(v, (0, q.shape[-1] - width)), **kwargs)[..., :width]


def sliding_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, scale: float, block: int | None = None
) -> torch.Tensor:
    """Causal attention where query i sees keys i-window+1 .. i (transformers' sliding window:
    ``kv_idx > q_idx - window``), computed for blocks of queries against only the keys of their
    band, so memory and work grow as T x window, not T x T."""
    T = q.shape[-2]
    block = block or max(64, min(window, 1024))
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    gqa = q.shape[1] != k.shape[1]
    for start in range(0, T, block):
        end = min(T, start + block)
        first = max(0, start - window + 1)
        q_pos = torch.arange(start, end, device=q.device)[:, None]
        k_pos = torch.arange(first, end, device=q.device)[None, :]
        allowed = (k_pos <= q_pos) & (k_pos > q_pos - window)  # (block, keys)
        out[:, :, start:end] = sdpa(
            q[:, :, start:end],
            k[:, :, first:end],
            v[:, :, first:end],
            attn_mask=allowed,
            scale=scale,
            enable_gqa=gqa,
        )
    return out


def _grouped_scores(q: torch.Tensor, k: torch.Tensor, scale: float, softcap: float | None = None) -> torch.Tensor:
    """float32 scores of (B, H, n, D) queries against (B, H_kv, K, D) keys as (B, H_kv, H / H_kv, n, K):
    query head h reads key head h // (H / H_kv), as SDPA's enable_gqa and transformers' repeat_kv. With
    ``softcap`` the scaled scores become ``softcap * tanh(scores / softcap)`` (Gemma 2's attention soft-capping,
    before the mask, as its eager attention)."""
    B, H, n, D = q.shape
    H_kv = k.shape[1]
    grouped = q.reshape(B, H_kv, (H // H_kv) * n, D)
    scores = torch.matmul(grouped, k.transpose(-1, -2)).float().mul_(scale)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    return scores.view(B, H_kv, H // H_kv, n, -1)


def _softmax(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """The float32 softmax of (B, H_kv, rep, n, K) scores over their keys, with ``sinks`` (H,) one more logit per
    query head in each row's denominator (gpt-oss's attention sinks: a share of the attention that goes nowhere)."""
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    sink = _grouped_sinks(sinks, scores)
    top = torch.maximum(scores.amax(-1, keepdim=True), sink)
    weights = scores.sub(top).exp_()
    return weights.div_(weights.sum(-1, keepdim=True) + (sink - top).exp_())


def _grouped_sinks(sinks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(H,) sinks as float32 (1, H_kv, rep, 1, 1), beside :func:`_grouped_scores`' scores (query head h is
    key head h // rep's ``h % rep``-th)."""
    return sinks.float().view(1, scores.shape[1], scores.shape[2], 1, 1)


def two_region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    q_far: torch.Tensor,
    k_far: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    layer_window: int | None,
    scale: float,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention with two rotations: query i and key j with ``i - j < window`` (near) score
    ``q[i] . k[j]``, farther ones ``q_far[i] . k_far[j]`` (an attention-level rope's far region,
    ropekit/rope/positions.py); ``layer_window`` (a sliding layer's) bounds both. For each block of
    queries, the scores against its near band and against its far keys take one float32 softmax over
    both (a shared row maximum and denominator: what bojone's and LongLM's ``torch.where`` of two
    ``T x T`` score matrices gives row by row), so memory grows as block x T, never T x T. ``softcap``:
    Gemma 2's soft-capping of the scores (:func:`_grouped_scores`); ``sinks``: gpt-oss's sink per head in the
    denominator (:func:`_softmax`); with ``q_far is q`` and a ``window`` of at least T there is no far region, and
    this is plain causal attention with capped scores or sinks."""
    B, H, T, _ = q.shape
    reach = T if layer_window is None else min(layer_window, T)  # keys closer than this are visible
    near = min(window, reach)
    block = max(16, min(T, SCORE_BUDGET // (B * H * (reach + 16))))
    out = q.new_empty(B, H, T, v.shape[-1])  # values may be narrower than q.k's heads (MLA)
    for start in range(0, T, block):
        end = min(T, start + block)
        queries = torch.arange(start, end, device=q.device)[:, None]
        first = max(0, start - near + 1)  # the near band: keys first..end-1
        distance = queries - torch.arange(first, end, device=q.device)[None, :]  # (block, keys)
        scores = _grouped_scores(q[:, :, start:end], k[:, :, first:end], scale, softcap)  # (B, H_kv, rep, block, keys)
        scores.masked_fill_((distance < 0) | (distance >= near), -torch.inf)  # the diagonal stays: no empty row
        far_first, far_end = max(0, start - reach + 1), end - window  # the keys some query of the block sees as far
        if reach <= window or far_end <= far_first:
            mixed = _weighted(_softmax(scores, sinks), v[:, :, first:end])
        else:
            distance = queries - torch.arange(far_first, far_end, device=q.device)[None, :]
            far = _grouped_scores(q_far[:, :, start:end], k_far[:, :, far_first:far_end], scale, softcap)
            far.masked_fill_((distance < window) | (distance >= reach), -torch.inf)
            top = torch.maximum(scores.amax(-1, keepdim=True), far.amax(-1, keepdim=True))
            if sinks is not None:
                top = torch.maximum(top, _grouped_sinks(sinks, scores))
            scores, far = scores.sub_(top).exp_(), far.sub_(top).exp_()
            total = scores.sum(-1, keepdim=True) + far.sum(-1, keepdim=True)
            if sinks is not None:
                total += (_grouped_sinks(sinks, scores) - top).exp_()
            mixed = _weighted(scores.div_(total), v[:, :, first:end])
            mixed += _weighted(far.div_(total), v[:, :, far_first:far_end])
        out[:, :, start:end] = mixed.view(B, H, end - start, -1)
    return out


def indexed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: LayerSpec,
    scale: float,
    index: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
) -> torch.Tensor:
    """DeepSeek Sparse Attention (DeepSeek-V3.2's): (B, H, T, D) queries, the last T positions of (B, H_kv, K, D)
    keys and values (query i sits at key index K - T + i), each query attending only to the ``top_k`` keys its indexer
    scores best among those the layer lets it see. ``index``: the indexer's rotated queries (B, Hi, T, Di), their
    float32 weights per head (B, T, Hi), its rotated keys (B, 1, K, Di) and ``top_k``; a key's score is
    ``sum_h w_h relu(q_h . k / sqrt(Di))`` (DeepseekV32Indexer: its Hadamard rotation and FP8 scores are precision
    choices, which transformers leaves out too). Block by block of queries, in float32, so memory grows as
    block x K."""
    iq, weights, ik, top_k = index
    B, H, T, _ = q.shape
    K, Hi, Di = k.shape[-2], iq.shape[1], iq.shape[-1]
    block = max(1, min(T, SCORE_BUDGET // (B * (H + Hi) * K)))
    k_pos = torch.arange(K, device=q.device)[None, :]
    out = q.new_empty(B, H, T, v.shape[-1])
    for start in range(0, T, block):
        end = min(T, start + block)
        q_pos = torch.arange(K - T + start, K - T + end, device=q.device)[:, None]
        allowed = k_pos <= q_pos  # (n, K)
        if layer.window is not None:
            allowed &= k_pos > q_pos - layer.window
        if layer.chunk is not None:
            allowed &= k_pos >= q_pos // layer.chunk * layer.chunk
        scores = torch.matmul(iq[:, :, start:end].float(), ik.float().transpose(-1, -2)).mul_(Di**-0.5).relu_()
        scored = torch.einsum("bhnk,bnh->bnk", scores, weights[:, start:end])  # (B, n, K)
        scored.masked_fill_(~allowed, -torch.inf)
        best = scored.topk(min(top_k, K), dim=-1).indices
        chosen = torch.zeros_like(scored, dtype=torch.bool).scatter_(-1, best, True) & allowed  # (B, n, K)
        attention = _grouped_scores(q[:, :, start:end], k, scale)  # (B, H_kv, rep, n, K)
        attention.masked_fill_(~chosen[:, None, None], -torch.inf)
        out[:, :, start:end] = _weighted(torch.softmax(attention, dim=-1), v).view(B, H, end - start, -1)
    return out


def _weighted(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float32 (B, H_kv, rep, n, K) probabilities times (B, H_kv, K, D) values, in the values' dtype:
    (B, H_kv, rep * n, D)."""
    return torch.matmul(probs.to(v.dtype).flatten(2, 3), v)


def fused(q: torch.Tensor) -> bool:
    """Whether sliding layers, capped scores and two-region attention take FlexAttention's fused kernel: where
    torch compiles it with its log-sum-exp (CUDA)."""
    return q.is_cuda


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: LayerSpec,
    scale: float,
    softcap: float | None = None,
    far: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, T, D) queries against (B, H_kv, T, D) keys/values for one layer of the plan. Full causal layers take
    SDPA's fused kernel; sliding layers, soft-capped scores (Gemma 2) and sinks (gpt-oss) FlexAttention's on CUDA
    (only the band, the cap in the kernel, the sinks by its log-sum-exp), and on the CPU the band by SDPA, and
    capped scores and sinks block by block with their float32 softmax (FlexAttention's compiled CPU kernel runs a
    sliding layer about 2x faster, but compiles for 7-11 s in each process and again at a second length:
    BENCHMARKS.md, "GPU suite"). ``far``: an attention-level rope's far queries, far keys and window, both regions
    in one softmax (FlexAttention's two fused calls merged by their log-sum-exps on CUDA, blockwise on the CPU,
    where torch 2.13 compiles no log-sum-exp). A chunked layer (Llama 4's) attends chunk by chunk, each chunk's
    queries to its own keys alone, as a sequence of its own: q and k were rotated at their positions in the whole,
    so every kernel above runs on a chunk as it is (the forward starts at position 0: the chunks are its
    ``layer.chunk`` first positions, the next ones, ...)."""
    T = q.shape[-2]
    if layer.chunk is not None and layer.chunk < T:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        for start in range(0, T, layer.chunk):
            c = slice(start, start + layer.chunk)
            near = None if far is None else (far[0][:, :, c], far[1][:, :, c], far[2])
            out[:, :, c] = attend(q[:, :, c], k[:, :, c], v[:, :, c], WHOLE, scale, softcap, near, sinks)
        return out
    if far is not None:
        q_far, k_far, window = far
        regions = flex_two_region_attention if fused(q) else two_region_attention
        return regions(
            q, k, q_far, k_far, v, window=window, layer_window=layer.window, scale=scale, softcap=softcap, sinks=sinks
        )
    sliding = layer.window is not None and layer.window < T
    if softcap is None and sinks is None and not sliding:
        return sdpa(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    regions = {"window": T, "layer_window": layer.window, "scale": scale, "softcap": softcap, "sinks": sinks}
    if fused(q):
        return flex_two_region_attention(q, k, q, k, v, **regions)
    if softcap is not None or sinks is not None:
        return two_region_attention(q, k, q, k, v, **regions)
    return sliding_attention(q, k, v, window=layer.window, scale=scale)


# Queries a cached forward on the CPU attends with float32 matmuls of the grouped heads rather than SDPA, whose CPU
# kernel is several times slower for one query (BENCHMARKS.md, "RULER samples per second")
DECODE_ROWS = 16


def attend_cached(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer: LayerSpec,
    scale: float,
    softcap: float | None = None,
    far: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, T, D) queries, the last T positions of (B, H_kv, K, D) keys/values (those of a KV cache, then
    the queries' own): query i sits at key index K - T + i and sees the keys a full, sliding or chunked layer lets
    it (a chunked layer's cache holds the keys of the current chunk from its first, whose index is a multiple of
    the chunk, as its position is: their chunks are told apart by index).
    ``far``: an attention-level rope's far queries, far keys and window; keys at least ``window`` before a query
    score ``q_far . k_far`` in the same float32 softmax (:func:`two_region_attention`, row by row), with the
    ``sinks`` (gpt-oss's) in its denominator."""
    T, K = q.shape[-2], k.shape[-2]
    q_pos = torch.arange(K - T, K, device=q.device)[:, None]
    k_pos = torch.arange(K, device=q.device)[None, :]
    allowed = k_pos <= q_pos  # (T, K)
    if layer.window is not None:
        allowed &= k_pos > q_pos - layer.window
    if layer.chunk is not None:  # key index = position - a multiple of the chunk
        allowed &= k_pos >= q_pos // layer.chunk * layer.chunk
    few = not q.is_cuda and T <= DECODE_ROWS  # decoding on the CPU: float32 matmuls beat SDPA's kernel
    if softcap is None and far is None and sinks is None and not few:
        return sdpa(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    dtype = q.dtype
    if few:  # scores and weights in float32, as SDPA's CPU kernel accumulates them
        q, k, v = q.float(), k.float(), v.float()
        far = None if far is None else (far[0].float(), far[1].float(), far[2])
    scores = _grouped_scores(q, k, scale, softcap)  # (B, H_kv, rep, T, K) float32, capped where the layer caps
    if far is not None:
        q_far, k_far, window = far
        scores = torch.where(k_pos <= q_pos - window, _grouped_scores(q_far, k_far, scale, softcap), scores)
    scores = scores.masked_fill_(~allowed, -torch.inf)
    out = _weighted(_softmax(scores, sinks), v).view(*q.shape[:-1], v.shape[-1])
    return out.to(dtype)
