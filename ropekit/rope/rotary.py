"""Applying the rotation: cos/sin tables and the rotation of q and k.

Two layouts of the rotated pairs exist in checkpoints:
  * ``half``: pair i is (x[i], x[i + d/2]), transformers' ``rotate_half`` convention;
  * ``interleaved``: pair i is (x[2i], x[2i + 1]), Meta's original code and GGUF exports.
They give the same attention once the q/k projection rows are permuted (see
:func:`interleaved_to_half`). Only the first ``rotary_dim`` channels of a head rotate
(partial rotary); the rest pass through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

import torch

from .config import RopeSpec
from .frequencies import spec_frequencies
from .registry import get_rope

LAYOUTS = ("half", "interleaved")
TABLE_CACHE_BYTES = 1 << 28  # what the kept tables may hold together: 256 MiB (one 262k-token table of 64 dims)


def tables_cache(budget: int) -> Callable:
    """A least-recently-used cache of a function returning tensors, bounded by the bytes they hold
    (``budget``; the newest is always kept): a sweep's tables at every length and rope would otherwise
    stay alive, each up to a few hundred MB at long lengths. ``cache_clear`` empties it."""

    def wrap(function: Callable) -> Callable:
        kept: OrderedDict[tuple, tuple] = OrderedDict()

        @wraps(function)
        def cached(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))
            if key in kept:
                kept.move_to_end(key)
                return kept[key]
            kept[key] = value = function(*args, **kwargs)
            while len(kept) > 1 and sum(t.nbytes for v in kept.values() for t in v) > budget:
                kept.popitem(last=False)
            return value

        cached.cache_clear = kept.clear
        return cached

    return wrap


@tables_cache(TABLE_CACHE_BYTES)
def rope_table(
    spec: RopeSpec,
    length: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    layout: str = "half",
    seq_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[length, rotary_dim]`` for positions 0..length-1, attention scale folded in.

    ``seq_len`` is the evaluated length the frequencies depend on (dynamic, longrope); it
    defaults to ``length``. Angles are computed in float32 and cast once; the result is cached
    per (spec, length, dtype, device, layout, seq_len), a pure function of its arguments, so all
    layers and repeated calls share one table, the least recently used tables leaving past
    ``TABLE_CACHE_BYTES`` (:func:`tables_cache`). Treat it as read-only.
    """
    positions = torch.arange(length, dtype=torch.float32)
    return position_table(
        spec, positions, dtype=dtype, device=device, layout=layout, seq_len=length if seq_len is None else seq_len
    )


def position_table(
    spec: RopeSpec,
    positions: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    layout: str = "half",
    seq_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[len(positions), rotary_dim]`` at any float32 positions (an attention-level
    rope's far region rotates at positions other than 0..T-1), attention scale folded in; not cached."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not allowed; expected one of {', '.join(LAYOUTS)}")
    inv_freq, scale = spec_frequencies(spec, seq_len)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, rotary_dim/2)
    if layout == "half":
        angles = torch.cat((angles, angles), dim=-1)
    else:
        angles = angles.repeat_interleave(2, dim=-1)
    cos, sin = angles.cos() * scale, angles.sin() * scale
    return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)


@dataclass(frozen=True, eq=False)
class FarTables:
    """An attention-level rope's far region at one length, as tables: keys at least ``window`` before
    a query see it rotated by ``query_cos/query_sin`` and themselves by ``key_cos/key_sin``."""

    window: int
    query_cos: torch.Tensor
    query_sin: torch.Tensor
    key_cos: torch.Tensor
    key_sin: torch.Tensor


def far_tables(
    spec: RopeSpec,
    length: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    unreached: bool = False,
) -> FarTables | None:
    """The far region's tables of ``spec`` for positions 0..length-1 (half layout), or None when the
    type has none or (unless ``unreached``: a KV cache's, whose sequence may grow) no key is that far at
    this length."""
    record = get_rope(spec.rope_type)
    if record.attention is None:
        return None
    far = record.attention(spec, length)
    if far.window >= length and not unreached:
        return None
    table = {"dtype": dtype, "device": device, "seq_len": length}
    return FarTables(far.window, *position_table(spec, far.query, **table), *position_table(spec, far.key, **table))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, layout: str = "half") -> torch.Tensor:
    """Rotate ``x`` ``(..., T, head_dim)`` by the tables ``(T, rotary_dim)``; channels past
    ``rotary_dim`` are returned unchanged."""
    rotary_dim = cos.shape[-1]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    turned = _rotate_half(rot) if layout == "half" else _rotate_interleaved(rot)
    out = rot * cos + turned * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def interleaved_to_half(rows: torch.Tensor, n_heads: int, rotary_dim: int | None = None) -> torch.Tensor:
    """Permute q/k projection rows (or any ``[n_heads * head_dim, ...]`` tensor) from the
    interleaved layout to the half layout, head by head: channel 2i goes to i, 2i+1 to i + d/2.

    This is the inverse of the permutation Meta/llama.cpp converters apply (transformers'
    ``_reverse_permute_weights`` does the same for GGUF).
    """
    head_dim = rows.shape[0] // n_heads
    rotary_dim = head_dim if rotary_dim is None else rotary_dim
    per_head = rows.reshape(n_heads, head_dim, *rows.shape[1:])
    order = torch.cat(
        (torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2), torch.arange(rotary_dim, head_dim))
    )
    return per_head[:, order].reshape(rows.shape)
