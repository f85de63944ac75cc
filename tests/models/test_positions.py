"""The attention-level position methods (ReRoPE, leaky ReRoPE, Self-Extend, log-n, Llama 4's NoPE
temperature) in ropekit's lean decoder against a slow reference written from their source code.

The reference replaces the attention forward of the transformers model of the same tiny checkpoint
(as bojone's and LongLM's patches replace ``LlamaAttention.forward``): explicit ``T x T`` masks, two
score matrices joined by ``torch.where`` as the sources do, their position arithmetic operation for
operation, and the layer's own sliding window on top. Its rope tables are built here from the
default inverse frequencies and checked against the tables transformers hands each layer.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import ropekit
from ropekit.models import ModelConfigError, attention
from ropekit.rope import NopeTemperature
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

LONG, SHORT = 300, 20  # beyond and below the methods' windows (24)
TOLERANCE = 1e-5  # nats, every token

RE_ROPE = {"rope_type": "rerope", "window": 24}
LEAKY = {"rope_type": "leaky_rerope", "window": 24, "scaling_factor": 4}
SELF_EXTEND = {"rope_type": "self_extend", "group_size": 4, "neighbor_window": 24}
METHODS = {"rerope": RE_ROPE, "leaky_rerope": LEAKY, "self_extend": SELF_EXTEND}
# The layer types a flat rope dict reaches: Gemma 3's global layers only, EXAONE 4's sliding ones (its
# global layers have no rope), every layer elsewhere.
REACHED = {"gemma3": ("full_attention",), "exaone4": ("sliding_attention",)}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 16 queries: a 300-token pass runs 19 of them, the last one partial."""
    monkeypatch.setattr(attention, "SCORE_BUDGET", 1)


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What the reference does in one layer: its sliding window (None: full), its rope (theta None:
    NoPE), the method of the test's rope dict (None: the plain rope), log-n, Llama 4's temperature."""

    window: int | None
    theta: float | None = None
    rotary_dim: int = 0
    method: dict | None = None
    linear: float = 1.0
    temperature: tuple[float, float] | None = None
    first_patch: bool = False  # Self-Extend as LongLM's first patch writes the shift (W // G)


def inv_freq(theta: float, dim: int) -> torch.Tensor:
    """transformers' default rope (``_compute_default_rope_parameters``)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))


def table(frequencies: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaRotaryEmbedding.forward (transformers >= 4.38, LongLM's patch): ``inv_freq @ positions``."""
    freqs = (frequencies.float()[None, :, None] @ positions.float()[None, None, :]).transpose(1, 2)[0]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def cached_table(frequencies: torch.Tensor, length: int, factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaRotaryEmbedding / LlamaLinearScalingRotaryEmbedding of transformers 4.31 (bojone's
    patches): ``t = arange(length) / scaling_factor``, ``einsum("i,j->ij", t, inv_freq)``, indexed later."""
    t = torch.arange(length, dtype=frequencies.dtype)
    if factor != 1.0:
        t = t / factor
    freqs = torch.einsum("i,j->ij", t, frequencies)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb with rotate_half, the first ``cos.shape[-1]`` channels only (Phi-3's partial rotary)."""
    d = cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    turned = torch.cat((-rot[..., d // 2 :], rot[..., : d // 2]), dim=-1)
    return torch.cat((rot * cos + turned * sin, rest), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def project(attn, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, H, T, D) as each family's attention computes them (Phi-3's fused qkv_proj)."""
    if hasattr(attn, "qkv_proj"):
        n_q = attn.config.num_attention_heads * attn.head_dim
        n_kv = attn.config.num_key_value_heads * attn.head_dim
        q, k, v = attn.qkv_proj(hidden).split([n_q, n_kv, n_kv], dim=-1)
    else:
        q, k, v = attn.q_proj(hidden), attn.k_proj(hidden), attn.v_proj(hidden)
    shape = (*hidden.shape[:-1], -1, attn.head_dim)
    q, k, v = (x.view(shape).transpose(1, 2) for x in (q, k, v))
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v


def reference_scores(ref: Reference, attn, q, k, position_embeddings) -> torch.Tensor:
    """The (B, H, T, T) scores of one rope layer under its method, as the method's source computes them."""
    T = q.shape[-2]
    position_ids = torch.arange(T)
    frequencies = inv_freq(ref.theta, ref.rotary_dim) / ref.linear
    cos, sin = table(frequencies, position_ids)
    if ref.linear == 1.0:  # transformers' table for this layer (of the checkpoint's own rope)
        torch.testing.assert_close(cos, position_embeddings[0][0].float())
        torch.testing.assert_close(sin, position_embeddings[1][0].float())
    keys = lambda x: repeat_kv(x, attn.num_key_value_groups).transpose(2, 3)  # noqa: E731
    weights1 = torch.matmul(rotate(q, cos, sin), keys(rotate(k, cos, sin))) * attn.scaling
    method = ref.method or {"rope_type": "default"}
    relative = position_ids[:, None] - position_ids[None]
    if method["rope_type"] == "rerope":  # bojone/rerope rerope_patch.py
        window = method["window"]
        cos, sin = cached_table(frequencies, max(T, window + 1))
        query2 = rotate(q, cos[position_ids * 0 + window], sin[position_ids * 0 + window])
        weights2 = torch.matmul(query2, keys(k)) * attn.scaling
        return torch.where(relative.abs() < window, weights1, weights2)
    if method["rope_type"] == "leaky_rerope":  # bojone/rerope leaky_rerope_patch.py
        window, factor = method["window"], method["scaling_factor"]
        offset = window * (factor - 1)
        cos2, sin2 = cached_table(frequencies, T + offset, factor)
        query2 = rotate(q, cos2[position_ids + offset], sin2[position_ids + offset])
        key2 = rotate(k, cos2[position_ids], sin2[position_ids])
        weights2 = torch.matmul(query2, keys(key2)) * attn.scaling
        return torch.where(relative.abs() < window, weights1, weights2)
    if method["rope_type"] == "self_extend":  # datamllab/LongLM self_extend_patch/Llama.py
        group_size_1, group_size_2 = method["group_size"], method["neighbor_window"]
        _re_group_size_2 = 0 if position_ids.max() < group_size_2 else group_size_2
        if ref.first_patch:  # LongLM's llama_self_extend_patch.py (transformers 4.32)
            group_query_position = position_ids // group_size_1 + _re_group_size_2 - _re_group_size_2 // group_size_1
        else:
            group_query_position = position_ids // group_size_1 + _re_group_size_2 - _re_group_size_2 / group_size_1
        group_key_position = position_ids // group_size_1
        group_query_states = rotate(q, *table(frequencies, group_query_position))
        group_key_states = rotate(k, *table(frequencies, group_key_position))
        group_attn_weights = torch.matmul(group_query_states, keys(group_key_states)) * attn.scaling
        neighbor_attention_mask = torch.tril(torch.ones((T, T)))
        if T - group_size_2 > 0:
            group_attention_mask = torch.tril(torch.ones((T - group_size_2, T - group_size_2)))
            neighbor_attention_mask[group_size_2:, :-group_size_2] -= group_attention_mask
        return torch.where(neighbor_attention_mask.bool(), weights1, group_attn_weights)
    assert method["rope_type"] in ("default", "linear")
    return weights1


def reference_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
    """The attention of one transformers layer as the sources compute it, with explicit T x T masks."""
    ref: Reference = self.reference
    q, k, v = project(self, hidden_states)
    T = q.shape[-2]
    position_ids = torch.arange(T)
    log_n = (ref.method or {}).get("log_n")
    if log_n:  # bojone's patches (LongLM's scale_base): before the rotation, for both score matrices
        q = q * ((position_ids + 1)[None, None, :, None].log() / np.log(log_n)).clip(1).to(q.dtype)
    if ref.temperature is not None:  # transformers modeling_llama4.py, NoPE layers
        floor_scale, attn_scale = ref.temperature
        attn_scales = torch.log1p(torch.floor((position_ids.float() + 1.0) / floor_scale)) * attn_scale + 1.0
        q = (q * attn_scales.view(1, 1, T, 1)).to(q.dtype)
    if ref.theta is None:
        scores = torch.matmul(q, repeat_kv(k, self.num_key_value_groups).transpose(2, 3)) * self.scaling
    else:
        scores = reference_scores(ref, self, q, k, position_embeddings)
    relative = position_ids[:, None] - position_ids[None]
    allowed = (relative >= 0) & (relative < (ref.window or T))  # causal; transformers' sliding window
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(probs, repeat_kv(v, self.num_key_value_groups))
    return self.o_proj(out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)), None


def patch(hf, model, methods: dict, *, temperature=None, first_patch=False) -> None:
    """Give each attention module of the transformers model ``hf`` the reference forward, for the
    plan of ropekit's ``model`` (kinds, windows, thetas) with the test's own method per layer type;
    the plan's ropes must be those methods."""
    for layer, block in zip(model.config.layers, hf.model.layers, strict=True):
        method = methods.get(layer.attention)
        if layer.rope is None:
            ref = Reference(layer.window, temperature=temperature)
        else:
            assert layer.rope.rope_type == (method or {"rope_type": "default"})["rope_type"]
            linear = (method or {}).get("factor", 1.0)
            ref = Reference(layer.window, layer.rope.rope_theta, layer.rope.rotary_dim, method, linear)
            ref = Reference(**{**ref.__dict__, "first_patch": first_patch})
        block.self_attn.reference = ref
        block.self_attn.forward = types.MethodType(reference_forward, block.self_attn)


def reference_nll(hf, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(ids[None]).logits[0].float()
    return torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")


def random_ids(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 384, (length,), generator=torch.Generator().manual_seed(seed))


def assert_equal_nll(model, hf, lengths=(SHORT, LONG)) -> None:
    for length in lengths:
        ids = random_ids(length)
        ours, reference = ropekit.token_nll(model, ids), reference_nll(hf, ids)
        assert reference.std() > 0.2  # not near-uniform guesses
        assert (ours - reference).abs().max() <= TOLERANCE, (length, (ours - reference).abs().max())


# --- the methods against the reference ----------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", ["llama", "gemma3", "phi3", "qwen3", "mistral", "exaone4"])
def test_method_matches_the_reference_on_every_family(family, method, tmp_path):
    """A flat rope dict reaches the layer types it reaches in that family's config.json (Gemma 3's
    global layers, EXAONE 4's sliding ones), sliding windows (40-64) reach past the method's (24),
    Phi-3 rotates half of each head."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path, rope_scaling=METHODS[method])
    patch(hf, model, dict.fromkeys(REACHED.get(family, ("full_attention", "sliding_attention")), METHODS[method]))
    assert_equal_nll(model, hf)


def test_self_extend_on_global_layers_only_leaves_sliding_layers_untouched(tmp_path):
    """A dict keyed by layer type: Self-Extend on the full layers of a LLLG mix, the default rope on the
    sliding ones, whose window (48) reaches past the neighbor window (16) and still runs banded."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    method = {"rope_type": "self_extend", "group_size": 3, "neighbor_window": 18}
    rope = {"full_attention": method, "sliding_attention": {"rope_type": "default"}}
    model = ropekit.load_model(tmp_path, rope_scaling=rope, layer_mix="LLLG@48")
    assert [(layer.attention, layer.rope.rope_type) for layer in model.config.layers] == [
        ("sliding_attention", "default")
    ] * 3 + [("full_attention", "self_extend")]
    patch(hf, model, {"full_attention": method}, first_patch=True)  # 3 does not divide 18: the first patch's W // G
    assert_equal_nll(model, hf)


def test_methods_in_sliding_layers_of_a_mix(tmp_path):
    """ReRoPE in every layer of a LLLG@48 mix: the sliding layers' far region is 16 <= i - j < 48."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    method = {"rope_type": "rerope", "window": 16}
    model = ropekit.load_model(tmp_path, rope_scaling=method, layer_mix="LLLG@48")
    patch(hf, model, {"full_attention": method, "sliding_attention": method})
    assert_equal_nll(model, hf)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "log_n": 64},
        {"rope_type": "linear", "factor": 2.0, "log_n": 64},
        {**RE_ROPE, "log_n": 64},
        {**SELF_EXTEND, "log_n": 100},
    ],
    ids=["default", "linear", "rerope", "self_extend"],
)
def test_log_n_scales_queries_as_the_sources_do(rope, tmp_path):
    """bojone's ``query_states *= (log(pos + 1) / log(training_length)).clip(1)`` (LongLM's scale_base),
    on any type; a small L so that it acts at 300 tokens."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path, rope_scaling=rope)
    assert model.config.layers[-1].rope.log_n == rope["log_n"]
    patch(hf, model, {"full_attention": rope})
    assert_equal_nll(model, hf)


def test_log_n_true_is_the_trained_length(tmp_path):
    hf = make_checkpoint(tmp_path, {**FAMILY_CONFIGS["llama"], "max_position_embeddings": 128})
    model = ropekit.load_model(tmp_path, rope_scaling={**RE_ROPE, "log_n": True})
    assert {layer.rope.log_n for layer in model.config.layers} == {128}
    patch(hf, model, {"full_attention": {**RE_ROPE, "log_n": 128}})
    assert_equal_nll(model, hf)


@pytest.mark.parametrize(("family", "mix"), [("llama", "LLLG@32+nope+tt:16,0.5"), ("exaone4", "native+nope+tt:20,0.3")])
def test_llama4_temperature_on_nope_layers_as_transformers_computes_it(family, mix, tmp_path):
    """``attn_scales = log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1`` on the queries of the
    NoPE global layers (EXAONE 4's are NoPE natively); small floor scales so that it acts at 300 tokens."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path, layer_mix=mix)
    floor_scale, attn_scale = (float(x) for x in mix.split(":")[1].split(","))
    assert model.config.layers[-1].temperature == NopeTemperature(floor_scale, attn_scale)
    assert {layer.temperature for layer in model.config.layers[:-1]} == {None}
    patch(hf, model, {}, temperature=(floor_scale, attn_scale))
    assert_equal_nll(model, hf)


# --- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "rerope", "window": LONG},  # no key is ever past the window
        {"rope_type": "rerope", "window": 511},
        {"rope_type": "leaky_rerope", "window": 8, "scaling_factor": 1},  # nothing leaks
        {"rope_type": "self_extend", "group_size": 1, "neighbor_window": 8},  # groups of one
    ],
    ids=["rerope-window-T", "rerope-window-max", "leaky-factor-1", "self-extend-group-1"],
)
@pytest.mark.parametrize("mix", ["native", "LLLG@40"])
def test_degenerate_settings_are_the_default_rope(rope, mix, tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["qwen3"])
    ids = random_ids(LONG)
    default = ropekit.token_nll(ropekit.load_model(tmp_path, layer_mix=mix), ids)
    ours = ropekit.token_nll(ropekit.load_model(tmp_path, rope_scaling=rope, layer_mix=mix), ids)
    assert (ours - default).abs().max() <= TOLERANCE


def test_the_lean_attention_never_holds_t_by_t_scores(tmp_path, monkeypatch):
    """Every score block of a 300-token pass is at most 16 queries (all heads) by the band and the far
    keys the block sees, and the result does not depend on the block size."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, rope_scaling=SELF_EXTEND)
    ids = random_ids(LONG)
    shapes = []
    real = attention._grouped_scores

    def recording(q, k, scale, softcap=None):
        shapes.append((q.shape[-2], k.shape[-2]))
        return real(q, k, scale, softcap)

    monkeypatch.setattr(attention, "_grouped_scores", recording)
    blocked = ropekit.token_nll(model, ids)
    assert shapes and max(n for n, _ in shapes) == 16 and max(keys for _, keys in shapes) < LONG
    monkeypatch.setattr(attention, "SCORE_BUDGET", 1 << 24)  # one block
    torch.testing.assert_close(ropekit.token_nll(model, ids), blocked, rtol=0, atol=1e-5)


def test_bf16_drifts_from_fp32_no_more_than_the_default_rope(tmp_path):
    """In bf16 the scores' matmuls run in bf16 and the softmax in float32, as for the default rope:
    measured 0.008 nats per token on average from fp32 for every method and for the default."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    ids = random_ids(LONG)

    def drift(rope):
        fp32 = ropekit.token_nll(ropekit.load_model(tmp_path, rope_scaling=rope), ids)
        return (ropekit.token_nll(ropekit.load_model(tmp_path, rope_scaling=rope, dtype="bfloat16"), ids) - fp32).abs()

    default = drift("default").mean()
    for rope in ("rerope:24", "self_extend:4,24"):
        assert drift(rope).mean() <= 1.5 * default


def test_the_default_path_is_untouched(tmp_path):
    """No option: no far tables, no query scale, the fused kernel as before."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path)
    tables = model.rope_tables(LONG)
    assert all(t.far is None and t.query_scale is None for t in tables.values())


# --- use ----------------------------------------------------------------------------------------


def test_presets_load_end_to_end(tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    ids = random_ids(LONG)
    default = ropekit.token_nll(ropekit.load_model(tmp_path), ids)
    for text, scaling in [
        ("rerope:64", {"window": 64}),
        ("leaky_rerope:64,8", {"window": 64, "scaling_factor": 8.0}),
        ("self_extend:4,64", {"group_size": 4, "neighbor_window": 64}),
    ]:
        model = ropekit.load_model(tmp_path, rope_scaling=text)
        spec = model.config.layers[-1].rope  # Gemma 3: a preset scales the global layers
        assert spec.rope_type == text.split(":")[0] and spec.scaling.__dict__ == scaling
        assert {layer.rope.rope_type for layer in model.config.layers[:-1]} == {"default"}
        nll = ropekit.token_nll(model, ids)
        assert (nll[:64] - default[:64]).abs().max() <= TOLERANCE  # inside the window: the plain rope
        assert (nll - default).abs().max() > 1e-3


def test_plan_record_and_describe_name_the_temperature(tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path, layer_mix="LLLG@32+nope+tt")
    assert model.config.describe().endswith("3 global nope+tt(8192,0.1)")
    assert model.config.plan_record()["layers"][-1]["temperature"] == {"floor_scale": 8192.0, "attn_scale": 0.1}
    assert "temperature" not in model.config.plan_record()["layers"][0]
    same = ropekit.load_model(tmp_path, layer_mix="LLLG@32", nope_global=True, nope_temperature=True)
    assert same.config.layers == model.config.layers


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"layer_mix": "LLLG@32+tt"}, "applies to NoPE global layers and this plan has none; add \\+nope"),
        ({"layer_mix": "native+tt+nope"}, "is not understood"),
        ({"layer_mix": "native+nope+tt:8192"}, "two numbers"),
        ({"layer_mix": "native+nope+tt:0,0.1"}, "floor_scale=0.0 is not allowed"),
        ({"layer_mix": "native+nope+tt:x,y"}, "two numbers"),
        ({"layer_mix": "native+nope+tt+nope"}, "is not understood"),
        ({"nope_temperature": True}, "applies to NoPE global layers and this plan has none"),
        ({"nope_temperature": {"floor": 1}}, "its keys are floor_scale and attn_scale"),
        ({"nope_temperature": "yes"}, "expected true, false"),
    ],
)
def test_temperature_errors_are_named(kwargs, expected, tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    with pytest.raises(ModelConfigError, match=expected):
        ropekit.load_model(tmp_path, **kwargs)
