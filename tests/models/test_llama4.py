"""Llama 4 (``llama4_text``) beyond tests/models/test_families.py: its chunked attention as a layer mix on any model,
its temperature tuning switched and set, its multimodal checkpoints, and its published configs.

Chunked attention's oracle is transformers' own: ``create_chunked_causal_mask`` (masking_utils.py), where query i
sees key j when ``j <= i`` and ``j // chunk == i // chunk``; rewritten in :func:`chunked_reference` below.
"""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.eval.generate import greedy_generate
from ropekit.models import attention
from ropekit.models.config import LayerSpec, ModelConfigError, checkpoint_config, plan_config
from ropekit.models.decoder import KVCache
from ropekit.rope import spec_frequencies
from ropekit.sweep import cost

from .test_families import assert_close, config, ids
from .tiny import FAMILY_CONFIGS, SMALL, decoded_without_a_cache, hf_token_nll, make_checkpoint, write_multimodal


def chunked_reference(q, k, v, chunk: int, scale: float) -> torch.Tensor:
    """Attention under transformers' chunked causal mask (masking_utils' chunked_overlay and causal_mask_function:
    ``kv_idx <= q_idx`` and ``kv_idx // chunk == q_idx // chunk``), as one float64 softmax over every key."""
    T = q.shape[-2]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & (j // chunk == i // chunk)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(scores.masked_fill(~allowed, -torch.inf), -1) @ v.double()


@pytest.mark.parametrize(("T", "chunk"), [(100, 32), (96, 32), (40, 64), (50, 1)])
def test_chunked_attention_equals_the_chunked_mask(T, chunk):
    """The kernel (each chunk its own causal SDPA) and the cached one (a mask over every key) against the mask,
    float32 within 1e-5: chunks that divide the length, that do not, one longer than it, chunks of one token."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, T, 16, generator=g), torch.randn(1, 2, T, 16, generator=g), torch.randn(1, 2, T, 16)
    layer = LayerSpec("chunked_attention", None, None, chunk=chunk)
    reference = chunked_reference(q, k, v, chunk, 0.25).float()
    torch.testing.assert_close(attention.attend(q, k, v, layer, 0.25), reference, rtol=0, atol=1e-5)
    for cut in (T - 1, T // 2):  # the last queries after the cached keys of the first ones
        cached = attention.attend_cached(q[:, :, cut:], k, v, layer, 0.25)
        torch.testing.assert_close(cached, reference[:, :, cut:], rtol=0, atol=1e-5)


def test_a_chunk_from_a_layer_mix_equals_transformers_at_that_chunk(tmp_path):
    """``CCCG@16`` on a checkpoint chunked at 32 runs as transformers does with attention_chunk_size 16, and plans
    as that checkpoint does."""
    make_checkpoint(tmp_path / "32", config("llama4"))
    hf = make_checkpoint(tmp_path / "16", config("llama4", attention_chunk_size=16))
    model = ropekit.load_model(tmp_path / "32", layer_mix="CCCG@16")
    assert model.config.layers == ropekit.load_model(tmp_path / "16").config.layers
    assert model.config.describe() == "0-2 chunked@16 default(theta=10000); 3 global nope+tt(16,0.5)"
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


@pytest.mark.parametrize(
    ("mix", "changes"),
    [
        ("native+tt:off", {"attn_temperature_tuning": False}),
        ("native+tt:8,0.3", {"floor_scale": 8, "attn_scale": 0.3}),
        ("all-global", {"attention_chunk_size": None}),  # every layer full: transformers without chunks
    ],
)
def test_temperature_tuning_and_chunks_as_a_mix_says(mix, changes, tmp_path):
    """Llama 4's tuning switched off and set otherwise, and its chunks dropped, each against transformers'
    checkpoint config saying so."""
    make_checkpoint(tmp_path / "native", config("llama4"))
    hf = make_checkpoint(tmp_path / "changed", config("llama4", **changes))
    model = ropekit.load_model(tmp_path / "native", layer_mix=mix)
    assert model.config.layers == ropekit.load_model(tmp_path / "changed").config.layers
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


def test_without_q_k_norms_every_other_layer_with_experts(tmp_path):
    """Llama 4 Maverick's layout: no q/k norms (use_qk_norm false), experts on every other layer, one a token."""
    changes = {"use_qk_norm": False, "num_experts_per_tok": 1, "no_rope_layers": [1, 0, 1, 1]}
    hf = make_checkpoint(tmp_path, config("llama4", **changes))
    model = ropekit.load_model(tmp_path)
    assert [layer.rope is None for layer in model.config.layers] == [False, True, False, False]
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


@pytest.mark.parametrize(("family", "mix"), [("llama4", "native"), ("llama", "CCCG@16+nope+tt:16,0.5")])
def test_chunked_layers_decode_with_the_cache_as_without(family, mix, tmp_path):
    """Chunked layers (Llama 4's own, and iRoPE as a layer mix on Llama) under an attention-level rope: the
    KV-cached greedy decoding equals the argmax of a full forward over everything so far, step by step, across
    chunk boundaries."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path, layer_mix=mix, rope_scaling="rerope:8")
    assert any(layer.chunk == (16 if family == "llama" else 32) for layer in model.config.layers)
    prompt = ids(model.config.vocab_size, 30)
    assert greedy_generate(model, prompt, max_new_tokens=24) == decoded_without_a_cache(model, prompt, 24)


def test_a_chunked_layers_cache_keeps_its_current_chunk(tmp_path):
    """After a 100-token prompt and each of 40 tokens more, a chunked layer's cache holds the keys of the current
    chunk of 32 only (those from its first position on), a full layer's every key; the last position's hidden state
    equals a full forward's."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama4"])
    model = ropekit.load_model(tmp_path)
    tokens = ids(model.config.vocab_size, 140)
    cache = KVCache(len(model.config.layers))
    with torch.inference_mode():
        model(tokens[None, :100], cache=cache)
        for n in range(100, 140):
            held = [layer.keys.shape[2] for layer in cache.layers]
            assert held == [n % 32] * 3 + [n]
            last = model(tokens[None, n : n + 1], cache=cache)[0, -1]
        whole = model(tokens[None])[0, -1]
    torch.testing.assert_close(last, whole, rtol=0, atol=1e-5)


def test_a_multimodal_checkpoint_runs_its_text_model(tmp_path):
    """A Llama 4 checkpoint (``llama4`` with a ``llama4_text`` text_config, its text weights under
    language_model, as Llama-4-Scout is published) gives the NLL of the same text model saved alone."""
    make_checkpoint(tmp_path / "text", FAMILY_CONFIGS["llama4"])
    model = ropekit.load_model(
        write_multimodal(tmp_path / "text", tmp_path / "llama4", "llama4", "language_model.model.")
    )
    assert model.config.model_type == "llama4_text"
    tokens = ids(model.config.vocab_size, 200)
    assert torch.equal(
        ropekit.token_nll(model, tokens), ropekit.token_nll(ropekit.load_model(tmp_path / "text"), tokens)
    )


# Llama-4-Scout-17B-16E's text_config (meta-llama/Llama-4-Scout-17B-16E, config.json)
SCOUT = {
    "model_type": "llama4_text",
    "vocab_size": 202048,
    "hidden_size": 5120,
    "intermediate_size": 8192,
    "intermediate_size_mlp": 16384,
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_local_experts": 16,
    "num_experts_per_tok": 1,
    "interleave_moe_layer_step": 1,
    "use_qk_norm": True,
    "attention_chunk_size": 8192,
    "attn_temperature_tuning": True,
    "floor_scale": 8192,
    "attn_scale": 0.1,
    "max_position_embeddings": 10485760,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 16.0,
        "high_freq_factor": 1.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def test_scout_plans_as_published():
    """Llama-4-Scout's text model: 3 chunked layers of 8192 with llama3 x16 rope to each NoPE global one, its
    temperature tuning, and transformers' own parameter count of Llama4ForCausalLM (107.8B, 17B a token)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    plan = plan_config(checkpoint_config(SCOUT))
    assert plan.describe().startswith("0-2 chunked@8192 llama3(theta=500000); 3 global nope+tt(8192,0.1); 4-6")
    assert sum(layer.rope is None for layer in plan.layers) == 12
    fields = {k: v for k, v in SCOUT.items() if k != "model_type"}
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama4_text", **fields))
    expected = sum(p.numel() for p in hf.parameters())
    matrices, norms = cost.parameters(plan)
    assert matrices + norms == expected
    assert 107e9 < expected < 108.5e9
    # its llama3 rope with high_freq_factor == low_freq_factor (no band to blend): transformers' frequencies
    from transformers.models.llama4.modeling_llama4 import Llama4TextRotaryEmbedding

    theirs = Llama4TextRotaryEmbedding(AutoConfig.for_model("llama4_text", **fields))
    ours, scaling = spec_frequencies(plan.layers[0].rope, 8192)
    torch.testing.assert_close(ours, theirs.inv_freq, rtol=1e-6, atol=0)
    assert scaling == theirs.attention_scaling == 1.0


def test_a_chunked_plan_counts_each_chunks_keys():
    """The cost model's keys a query sees on a chunked layer, against counting them: (n C (C + 1) + r (r + 1)) / 2T."""
    for T, chunk in ((100, 32), (96, 32), (10, 64), (8192 * 3 + 5, 8192)):
        counted = sum(min(t % chunk + 1, t + 1) for t in range(T)) / T
        assert cost.mean_keys(T, None, chunk) == pytest.approx(counted, rel=1e-12)


def test_refusals(tmp_path):
    """A chunked layer without a chunk, and a chunk that is not a positive integer, each in one line."""
    raw = checkpoint_config({**SMALL, **config("llama4")})
    with pytest.raises(ModelConfigError, match="chunked layers need a chunk: give attention_chunk_size=N"):
        plan_config({**raw, "attention_chunk_size": None})
    with pytest.raises(ModelConfigError, match="attention_chunk_size=0 is not allowed"):
        plan_config(raw, layer_mix="CCCG@0")
