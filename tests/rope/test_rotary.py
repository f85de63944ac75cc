"""Rotation: relative-position property, the two layouts, and parity with transformers' apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ropekit.rope import apply_rotary, interleaved_to_half, parse_rope, preset, rope_table, spec_frequencies

GEO = {"head_dim": 64, "rope_theta": 1e4, "max_position_embeddings": 2048}
STATIC = ["default", "linear", "yarn", "llama3"]


def spec_of(rope_type: str, **geo):
    geo = {**GEO, **geo}
    return parse_rope(preset(rope_type, None if rope_type == "default" else 4.0, **geo), **geo)


def rotated(spec, x: torch.Tensor, position: int, layout: str = "half") -> torch.Tensor:
    cos, sin = rope_table(spec, position + 1, layout=layout, dtype=torch.float64)
    return apply_rotary(x.double()[None], cos[position:], sin[position:], layout=layout)[0]


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rope_type", STATIC)
def test_score_depends_only_on_position_difference(rope_type, layout):
    spec = spec_of(rope_type)
    _, scale = spec_frequencies(spec)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, generator=gen), torch.randn(64, generator=gen)
    for delta in (0, 1, 7, 100):
        scores = [float(rotated(spec, q, m + delta, layout) @ rotated(spec, k, m, layout)) for m in (0, 13, 500, 1900)]
        # Angles are float32 (as upstream); at position ~2000 one ulp of the angle is ~1e-4 rad.
        np.testing.assert_allclose(scores, scores[0], rtol=0, atol=2e-3 * float(q.norm() * k.norm()))
    # The attention scale multiplies cos and sin, so scores scale by its square.
    assert float(rotated(spec, q, 5, layout) @ rotated(spec, k, 5, layout)) == pytest.approx(
        scale**2 * float(q @ k), rel=1e-5
    )


def test_rotation_preserves_norm_and_is_identity_at_position_zero():
    spec = spec_of("default")
    x = torch.randn(3, 10, 64)
    cos, sin = rope_table(spec, 10)
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(out[:, 0], x[:, 0])


def test_interleaved_to_half_is_transformers_gguf_reverse_permutation():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(4 * 64, 48)
    theirs = LlamaTensorProcessor()._reverse_permute_weights(w.numpy(), n_head=4)
    torch.testing.assert_close(interleaved_to_half(w, n_heads=4), torch.from_numpy(np.ascontiguousarray(theirs)))


@pytest.mark.parametrize("partial_rotary_factor", [1.0, 0.5])
def test_layouts_agree_after_the_weight_permutation(partial_rotary_factor):
    """A checkpoint in Meta/GGUF layout rotated interleaved equals its permuted (transformers)
    version rotated half-split: same attention scores, same rotated channels up to the permutation."""
    n_heads, head_dim, hidden, T = 4, 64, 48, 37
    spec = spec_of("yarn", partial_rotary_factor=partial_rotary_factor)
    gen = torch.Generator().manual_seed(1)
    w_q_meta, w_k_meta = (
        torch.randn(n_heads * head_dim, hidden, generator=gen),
        torch.randn(n_heads * head_dim, hidden, generator=gen),
    )
    x = torch.randn(T, hidden, generator=gen)

    def heads(w):  # (H, T, D)
        return (x @ w.T).reshape(T, n_heads, head_dim).transpose(0, 1)

    cos_i, sin_i = rope_table(spec, T, layout="interleaved")
    cos_h, sin_h = rope_table(spec, T, layout="half")
    q_meta = apply_rotary(heads(w_q_meta), cos_i, sin_i, layout="interleaved")
    k_meta = apply_rotary(heads(w_k_meta), cos_i, sin_i, layout="interleaved")
    rd = spec.rotary_dim
    q_hf = apply_rotary(heads(interleaved_to_half(w_q_meta, n_heads, rd)), cos_h, sin_h)
    k_hf = apply_rotary(heads(interleaved_to_half(w_k_meta, n_heads, rd)), cos_h, sin_h)
    torch.testing.assert_close(q_meta @ k_meta.transpose(-1, -2), q_hf @ k_hf.transpose(-1, -2), rtol=1e-5, atol=1e-3)
    back = interleaved_to_half(q_meta.transpose(0, 1).reshape(T, -1).T, n_heads, rd).T.reshape(T, n_heads, head_dim)
    torch.testing.assert_close(back.transpose(0, 1), q_hf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rope_type", ["default", "yarn", "longrope", "dynamic", "llama3"])
@pytest.mark.parametrize("partial_rotary_factor", [1.0, 0.5])
def test_tables_and_apply_match_transformers(rope_type, partial_rotary_factor):
    from transformers import GPTNeoXConfig
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb  # handles partial rotary

    geo = {**GEO, "partial_rotary_factor": partial_rotary_factor}
    rope = preset(rope_type, None if rope_type == "default" else 4.0, **geo)
    spec = parse_rope(rope, **geo)
    T = 3000  # past the original 2048: dynamic and longrope run in their scaled regime
    config = GPTNeoXConfig(
        hidden_size=256,
        num_attention_heads=4,
        max_position_embeddings=GEO["max_position_embeddings"],
        rope_parameters={**rope, "rope_theta": GEO["rope_theta"], "partial_rotary_factor": partial_rotary_factor},
    )
    rotary = GPTNeoXRotaryEmbedding(config)
    q, k = torch.randn(1, 4, T, 64), torch.randn(1, 4, T, 64)
    cos_ref, sin_ref = rotary(q, torch.arange(T)[None])
    cos, sin = rope_table(spec, T)
    torch.testing.assert_close(cos, cos_ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sin, sin_ref[0], rtol=1e-6, atol=1e-6)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    torch.testing.assert_close(apply_rotary(q, cos, sin), q_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(apply_rotary(k, cos, sin), k_ref, rtol=1e-5, atol=1e-5)


def test_static_table_of_a_shorter_length_is_a_prefix():
    for rope_type in STATIC:
        spec = spec_of(rope_type)
        long_cos, long_sin = rope_table(spec, 4096)
        cos, sin = rope_table(spec, 1000)
        torch.testing.assert_close(cos, long_cos[:1000], rtol=0, atol=0)
        torch.testing.assert_close(sin, long_sin[:1000], rtol=0, atol=0)


def test_tables_are_built_once_per_length_dtype_and_layout():
    spec = spec_of("yarn")
    assert rope_table(spec, 512)[0] is rope_table(spec, 512)[0]
    assert rope_table(spec, 512, dtype=torch.bfloat16)[0].dtype == torch.bfloat16
    assert rope_table(spec, 512, layout="interleaved")[0] is not rope_table(spec, 512)[0]
    with pytest.raises(ValueError, match="layout"):
        rope_table(spec, 8, layout="gptj")


def test_dynamic_table_follows_the_evaluated_length():
    spec = spec_of("dynamic")
    short, _ = rope_table(spec, 100)
    long, _ = rope_table(spec, 100, seq_len=8192)
    assert not torch.equal(short, long)
    torch.testing.assert_close(short, rope_table(spec_of("default"), 100)[0], rtol=0, atol=0)


def test_the_tables_cache_is_bounded_by_the_bytes_it_holds():
    """rope_table's cache keeps tables while they fit its byte budget, least recently used out first, and
    always the newest (a sweep's tables at every length used to stay alive, 64 of them)."""
    from ropekit.rope.rotary import TABLE_CACHE_BYTES, tables_cache

    made = []

    @tables_cache(3 * 400)
    def table(n: int, *, scale: float = 1.0):
        made.append(n)
        return torch.full((n,), scale), torch.zeros(n)  # 8 n bytes (float32 and float32)

    first = table(50)  # 400 bytes
    assert table(50) is first and made == [50]
    table(50, scale=2.0), table(25)  # 400 + 200: 1000 in all
    assert table(50) is first and made == [50, 50, 25]  # read: the most recent now
    table(60)  # 480 more: the least recently used (scale 2.0) leaves
    table(25), table(50)
    assert made == [50, 50, 25, 60]
    table(30)  # 240 more: 60, now the least recently used, leaves
    table(60)
    assert made == [50, 50, 25, 60, 30, 60]
    big = table(500)  # over the budget alone: kept, the only one
    assert table(500) is big and table(25) and made[-2:] == [500, 25]
    table.cache_clear()
    table(25)
    assert made[-1] == 25
    assert TABLE_CACHE_BYTES >= 2 * 262144 * 64 * 4  # one 262k-token table of 64 dims, cos and sin, float32
