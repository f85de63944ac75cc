"""Attention over bands of distances through FlexAttention's fused kernel (torch.nn.attention.flex_attention):
the CUDA path of sliding layers, of soft-capped scores (Gemma 2), of attention sinks (gpt-oss) and of the
attention-level ropes' two regions.

A band is the keys ``k`` a query ``q`` sees with ``lo <= q - k < hi``: a sliding layer's window is the band
``[0, window)``, ReRoPE's near region ``[0, window)`` and its far region ``[window, reach)``. Each band is one
fused call that also returns its log-sum-exp; the two regions' outputs are merged by them, which is the one
softmax over both that ``two_region_attention`` takes block by block. The block mask is built from the grid
of 128 x 128 blocks directly (``create_block_mask`` first materialises the ``T x T`` mask unless compiled), its
bounds are tensors, so one compiled kernel serves every window and, once torch.compile has seen two lengths,
every length. On the CPU the same functions run eagerly (``compiled=False``): the tests compare them with the
blockwise path there.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, flex_attention

BLOCK = 128  # FlexAttention's block size, queries and keys


def band_mask(lo: int, hi: int, length: int, device: torch.device) -> BlockMask:
    """The keys ``k`` of each query ``q`` with ``lo <= q - k < hi`` among ``length`` queries and keys: blocks wholly
    inside the band are marked full (no mask evaluated in them), blocks it only crosses partial."""
    n = -(-length // BLOCK)
    offset = torch.arange(n, device=device)[:, None] - torch.arange(n, device=device)[None, :]  # query - key block
    nearest, farthest = offset * BLOCK - (BLOCK - 1), offset * BLOCK + (BLOCK - 1)  # the distances a block holds
    touched = (farthest >= lo) & (nearest < hi)
    whole = (nearest >= lo) & (farthest < hi)
    if length % BLOCK:  # the last row and column of blocks hold fewer distances: masked, never full
        whole[-1, :] = whole[:, -1] = False
    lo_at, hi_at = torch.tensor(lo, device=device), torch.tensor(hi, device=device)

    def inside(b, h, q_idx, kv_idx):
        distance = q_idx - kv_idx
        return (distance >= lo_at) & (distance < hi_at)

    return BlockMask.from_kv_blocks(
        *_ordered(touched & ~whole), *_ordered(whole), BLOCK, inside, seq_lengths=(length, length)
    )


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (query block, key block) grid of booleans as FlexAttention lists it: the count of each row's blocks
    ``(1, 1, n)`` and their indices first in each row ``(1, 1, n, n)``, int32."""
    counts = blocks.sum(-1, dtype=torch.int32)
    indices = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[None, None], indices[None, None]


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention)


def band_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: BlockMask,
    *,
    scale: float,
    softcap: float | None = None,
    compiled: bool,
    lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, T, D) queries against the (B, H_kv, T, D) keys of ``mask``: the output and, with ``lse``, the float32
    log-sum-exp (B, H, T) of the scaled (and, with ``softcap``, capped: Gemma 2's ``softcap * tanh(s / softcap)``)
    scores, else None (torch 2.13's compiled CPU kernel returns none). A query with no key in the band has the
    output 0 and the log-sum-exp -inf."""
    capped = None if softcap is None else lambda s, b, h, q_idx, kv_idx: softcap * torch.tanh(s / softcap)
    attend = _compiled_flex() if compiled else flex_attention
    found = attend(
        q, k, v, score_mod=capped, block_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
        **({"return_aux": AuxRequest(lse=True)} if lse else {}),
    )  # fmt: skip
    return (found[0], found[1].lse) if lse else (found, None)


def flex_two_region_attention(
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
    compiled: bool | None = None,
) -> torch.Tensor:
    """What ``ropekit.models.attention.two_region_attention`` computes, as two fused calls: the near band
    ``0 <= i - j < window`` with ``q . k`` and the far one ``window <= i - j < reach`` with ``q_far . k_far``
    (``reach``: ``layer_window``, else every earlier key), merged by their log-sum-exps in float32. With a
    ``window`` of at least T there is no far region: one call, causal attention within ``layer_window``.
    ``sinks`` (H,): gpt-oss's logit per head in the denominator, the output times ``sigmoid(lse - sink)``.
    ``compiled``: through torch.compile (default: on CUDA), else FlexAttention's eager reference."""
    T = q.shape[-2]
    reach = T if layer_window is None else min(layer_window, T)
    compiled = q.is_cuda if compiled is None else compiled
    bands = {"scale": scale, "softcap": softcap, "compiled": compiled}
    near = band_mask(0, min(window, reach), T, q.device)
    if reach <= window and sinks is None:
        return band_attention(q, k, v, near, **bands, lse=False)[0]
    out, lse = band_attention(q, k, v, near, **bands)
    if reach <= window:
        mixed, total = out.float(), lse
    else:
        far, far_lse = band_attention(q_far, k_far, v, band_mask(window, reach, T, q.device), **bands)
        total = torch.logaddexp(lse, far_lse)  # (B, H, T); the near band always holds the query's own key
        mixed = out.float().mul_((lse - total).exp_().unsqueeze(-1))
        mixed.add_(far.float().mul_((far_lse - total).exp_().unsqueeze(-1)))
    if sinks is not None:  # one softmax over the keys and the sink: the keys' share is Z / (Z + e^sink)
        mixed.mul_(torch.sigmoid(total - sinks.float()[None, :, None]).unsqueeze(-1))
    return mixed.to(q.dtype)
