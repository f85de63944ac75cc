"""Gemma 4's text model (the ``gemma4_text`` family, and the text model of a ``gemma4`` checkpoint; dense, and with its
experts beside the dense MLP: ``gemma4_moe`` in tiny.py) on a tiny
random checkpoint written by transformers itself (tests/models/tiny.py: per-layer head sizes, KV sharing, keys as
values, per-layer inputs, layer scalars, final soft-capping): per-token NLL equal to transformers' forward (float32;
the mean to 1e-5 relative, every token within 1e-4) inside and past the trained length, under each rope its
``rope_parameters`` can hold and a layer mix its config can state; greedy generation equal to transformers'
``generate``; the export of what its upstream code can run, and refusals of what it cannot."""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.eval.generate import greedy_generate
from ropekit.models import ModelConfigError, checkpoint_config, plan_config
from ropekit.rope import preset
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import FAMILY_CONFIGS, hf_token_nll, make_checkpoint, write_multimodal

TRAINED = 128
GLOBAL = {"head_dim": 32, "rope_theta": 1_000_000.0, "max_position_embeddings": TRAINED}  # the global layers' rope
LOCAL = {"rope_type": "default", "rope_theta": 10_000.0}


def gemma4(**changes) -> dict:
    return config("gemma4", **changes)


@pytest.mark.parametrize("length", [100, 300])  # inside and past the trained 128 tokens
def test_gemma4_inside_and_past_its_trained_length(length, tmp_path):
    hf = make_checkpoint(tmp_path, gemma4())
    model = ropekit.load_model(tmp_path)
    shapes = model.config.shapes
    assert [s.head_dim for s in shapes] == [16, 16, 32] * 2 and [s.kv_from for s in shapes] == [None] * 4 + [3, 2]
    assert [layer.rope.rope_type for layer in model.config.layers] == ["default", "default", "proportional"] * 2
    tokens = ids(model.config.vocab_size, length)
    reference = hf_token_nll(hf, tokens)
    assert reference.std() > 0.2
    assert_close(ropekit.token_nll(model, tokens), reference)


def global_rope(rope_type: str) -> dict:
    """A rope for the global layers (head 32) as Gemma 4's rope_parameters states it. Its attention turns the whole
    head, so a rope other than p-RoPE turns every pair (partial_rotary_factor 1)."""
    prf = 0.25 if rope_type == "proportional" else 1.0
    return {
        **preset(rope_type, 4.0, **GLOBAL, partial_rotary_factor=prf),
        "rope_theta": 1e6,
        "partial_rotary_factor": prf,
    }


# longrope too, were transformers able to run it: its parameters read the config's head_dim, which a Gemma 4 config
# with global_head_dim holds per layer only (AmbiguousGlobalPerLayerAttributeError).
ROPES = ("linear", "dynamic", "yarn", "llama3", "proportional")


@pytest.mark.parametrize("rope_type", ROPES)
def test_each_rope_on_the_global_layers(rope_type, tmp_path):
    """Each rope on the global layers (made for their own head size), the sliding ones' default beside it, past
    the trained length."""
    ropes = {"full_attention": global_rope(rope_type), "sliding_attention": LOCAL}
    hf = make_checkpoint(tmp_path, gemma4(rope_parameters=ropes))
    model = ropekit.load_model(tmp_path)
    assert {layer.rope.rope_type for layer in model.config.layers} == {rope_type, "default"}
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


def test_a_rope_per_layer_type_each_for_its_head_size(tmp_path):
    """yarn on both layer types: the sliding layers' for their 16-wide heads, the global layers' for their 32."""
    local = preset("yarn", 2.0, head_dim=16, rope_theta=10_000.0, max_position_embeddings=TRAINED)
    ropes = {"full_attention": global_rope("yarn"), "sliding_attention": local}
    hf = make_checkpoint(tmp_path, gemma4(rope_parameters=ropes))
    model = ropekit.load_model(tmp_path)
    assert {layer.rope.head_dim for layer in model.config.layers} == {16, 32}
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


def test_a_layer_mix_the_config_states(tmp_path):
    """``LLG@24`` (its own layer types, a window of 24) under ``yarn:4`` (on the global layers, over their whole
    head: p-RoPE's partial_rotary_factor is not the head's), against transformers running sliding_window 24 and
    that rope from its config."""
    make_checkpoint(tmp_path / "native", gemma4())
    ropes = {"full_attention": global_rope("yarn"), "sliding_attention": LOCAL}
    model = ropekit.load_model(tmp_path / "native", layer_mix="LLG@24", rope_scaling="yarn:4")
    hf = make_checkpoint(tmp_path / "mixed", gemma4(sliding_window=24, rope_parameters=ropes))
    assert ropekit.load_model(tmp_path / "mixed").config.layers == model.config.layers  # the same plan
    tokens = ids(model.config.vocab_size, 300)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


def test_gemma4_generates_as_transformers(tmp_path):
    """100 prompt tokens and 40 new ones, past the trained 128 and the window: the KV-sharing layers read the
    cached keys and values of the layers they share."""
    hf = make_checkpoint(tmp_path, gemma4())
    model = ropekit.load_model(tmp_path, dtype="float32")
    prompt = ids(model.config.vocab_size, 100)
    out = hf.generate(prompt[None], max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert greedy_generate(model, prompt, max_new_tokens=40) == out[0, 100:].tolist()


@pytest.mark.parametrize("family", ["gemma4", "gemma4_moe"])
def test_a_mix_upstream_cannot_state_decodes_as_without_a_cache(family, tmp_path):
    """Window 16, NoPE global layers, yarn (none of which Gemma 4's config can state): the KV-cached greedy
    decoding equals the argmax of a full forward over everything so far, step by step."""
    make_checkpoint(tmp_path, config(family))
    model = ropekit.load_model(tmp_path, layer_mix="LLG@16+nope", rope_scaling="yarn:2")
    prompt = ids(model.config.vocab_size, 30)
    tokens = prompt.tolist()
    with torch.inference_mode():
        for _ in range(20):
            hidden = model(torch.tensor([tokens]))[0, -1]
            logits = torch.mv(model.output_weight, hidden)
            tokens.append(int(logits.argmax()))
    assert greedy_generate(model, prompt, max_new_tokens=20) == tokens[30:]


def test_all_global_keeps_each_layer_its_head_and_shared_keys(tmp_path):
    """Every layer global: each keeps the head size its weights have (the rope made for it) and reads the keys and
    values it reads natively; the KV cache decodes as a full forward does."""
    make_checkpoint(tmp_path, gemma4())
    model = ropekit.load_model(tmp_path, layer_mix="all-global")
    assert {layer.attention for layer in model.config.layers} == {"full_attention"}
    assert [layer.rope.head_dim for layer in model.config.layers] == [16, 16, 32] * 2
    prompt = ids(model.config.vocab_size, 30)
    with torch.inference_mode():
        hidden = model(prompt[None])[0, -1]
    assert greedy_generate(model, prompt, max_new_tokens=1) == [int(torch.mv(model.output_weight, hidden).argmax())]


def test_a_plan_that_splits_shared_layers_is_refused(tmp_path):
    """A KV-sharing layer attends as the layer it reads: a mix giving them different plans is refused, naming both."""
    make_checkpoint(tmp_path, gemma4())
    with pytest.raises(ModelConfigError, match=r"layer 4 reads the keys and values of layer 3 \(KV sharing\)"):
        ropekit.load_model(tmp_path, layer_mix="LLLG@16")


@pytest.mark.parametrize(
    ("key", "value", "lacks"),
    [("use_bidirectional_attention", "all", "bidirectional attention over text tokens")],
)
def test_what_the_decoder_cannot_run_is_refused(key, value, lacks, tmp_path):
    raw = {**FAMILY_CONFIGS["gemma4"], "max_position_embeddings": TRAINED, "vocab_size": 384, "hidden_size": 64}
    raw |= {"intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, key: value}
    with pytest.raises(ModelConfigError, match=f"{key}=.* is not supported; ropekit's decoder has no {lacks}"):
        plan_config(checkpoint_config(raw))


@pytest.mark.parametrize("prefix", ["model.language_model."])
def test_a_gemma4_checkpoint_runs_its_text_model(prefix, tmp_path):
    """A multimodal Gemma 4 checkpoint (config ``gemma4`` with a ``gemma4_text`` text_config, the text model's
    weights under model.language_model) gives the NLL of the same text model saved alone."""
    make_checkpoint(tmp_path / "text", gemma4())
    model = ropekit.load_model(write_multimodal(tmp_path / "text", tmp_path / "gemma4", "gemma4", prefix))
    assert model.config.model_type == "gemma4_text"
    tokens = ids(model.config.vocab_size, 200)
    assert torch.equal(
        ropekit.token_nll(model, tokens), ropekit.token_nll(ropekit.load_model(tmp_path / "text"), tokens)
    )


def test_chunked_head_and_per_layer_inputs_equal_one_shot(tmp_path, monkeypatch):
    """The chunked head with final soft-capping (7 tokens a chunk) gives the NLL of one [T, vocab] projection;
    the per-layer inputs, computed a layer at a time, equal transformers' all-layers-at-once ones."""
    from ropekit.eval import nll

    hf = make_checkpoint(tmp_path, gemma4())
    model = ropekit.load_model(tmp_path)
    tokens = ids(model.config.vocab_size, 300)
    whole = ropekit.token_nll(model, tokens)
    monkeypatch.setattr(nll, "LOGIT_BUDGET", model.config.vocab_size * 7)
    torch.testing.assert_close(ropekit.token_nll(model, tokens), whole, rtol=0, atol=1e-6)
    with torch.no_grad():
        embedded = model.embed_tokens(tokens[None]) * model.embed_scale
        theirs = hf.model.project_per_layer_inputs(embedded, hf.model.get_per_layer_inputs(tokens[None]))
        for i in range(model.config.num_hidden_layers):
            torch.testing.assert_close(model.layer_input(tokens[None], embedded, i), theirs[:, :, i], rtol=0, atol=1e-6)


def test_an_attention_level_rope_reaches_the_layers_that_share_keys(tmp_path):
    """Self-Extend with groups of one on the sliding layers (its far region runs, and is the default rope): the
    KV-sharing sliding layer attends to the far keys of the layer it reads, and the NLL is the native one."""
    make_checkpoint(tmp_path, gemma4())
    native = ropekit.load_model(tmp_path)
    ropes = {
        "sliding_attention": {"rope_type": "self_extend", "group_size": 1, "neighbor_window": 8, "rope_theta": 1e4},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6},
    }
    model = ropekit.load_model(tmp_path, rope_scaling=ropes)
    assert model.config.layers[4].rope.rope_type == "self_extend" and model.config.shapes[4].kv_from == 3
    tokens = ids(model.config.vocab_size, 300)
    # the blocked float32 softmax against SDPA's, on q.k unscaled (scores up to +-head_dim): the parity tolerance
    assert_close(ropekit.token_nll(model, tokens), ropekit.token_nll(native, tokens))


def test_longrope_on_the_global_layers_where_every_layer_has_one_head_size(tmp_path):
    """longrope, which transformers runs on Gemma 4 only where its config has one head size (``global_head_dim``
    equal to ``head_dim``, so nothing is read per layer): short factors inside the trained length, long past it."""
    head = {**GLOBAL, "head_dim": 16}
    rope = {**preset("longrope", 4.0, **head, partial_rotary_factor=1.0), "rope_theta": head["rope_theta"]}
    hf = make_checkpoint(
        tmp_path, gemma4(global_head_dim=16, rope_parameters={"full_attention": rope, "sliding_attention": LOCAL})
    )
    model = ropekit.load_model(tmp_path)
    assert {layer.rope.rope_type for layer in model.config.layers} == {"longrope", "default"}
    for length in (100, 300):
        tokens = ids(model.config.vocab_size, length)
        assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


@pytest.mark.parametrize("length", [100, 300])
def test_gemma4_moe_inside_and_past_its_trained_length(length, tmp_path):
    """Gemma 4's MoE (26B-A4B's layout): on every layer 2 of 8 experts beside the dense MLP, the router reading the
    MLP's input normed without weight and scaled, each expert's weight times its scale, each branch with its own
    norms (the router's scales and the norms random, so that each is tested)."""
    hf = make_checkpoint(tmp_path, config("gemma4_moe"))
    model = ropekit.load_model(tmp_path)
    assert model.config.moe.layers == (True,) * 6 and model.config.moe.beside
    tokens = ids(model.config.vocab_size, length)
    reference = hf_token_nll(hf, tokens)
    assert reference.std() > 0.2
    assert_close(ropekit.token_nll(model, tokens), reference)


def test_gemma4_moe_generates_as_transformers(tmp_path):
    hf = make_checkpoint(tmp_path, config("gemma4_moe"))
    model = ropekit.load_model(tmp_path)
    prompt = ids(model.config.vocab_size, 30)
    expected = hf.generate(prompt[None], max_new_tokens=20, do_sample=False)[0, 30:].tolist()
    assert greedy_generate(model, prompt, max_new_tokens=20) == expected


def test_gemma4_moe_published_sizes():
    """Gemma 4 26B-A4B's layout (config keys as its config.json names them): transformers' own parameter count,
    25.2B."""
    from ropekit.sweep import cost
    from tests.models.test_families import transformers_parameters

    published = {
        "model_type": "gemma4_text",
        "hidden_size": 2816,
        "intermediate_size": 2112,
        "moe_intermediate_size": 704,
        "num_experts": 128,
        "top_k_experts": 8,
        "enable_moe_block": True,
        "num_hidden_layers": 30,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "num_global_key_value_heads": 2,
        "head_dim": 256,
        "global_head_dim": 512,
        "attention_k_eq_v": True,
        "hidden_size_per_layer_input": 0,
        "vocab_size": 262144,
        "max_position_embeddings": 262144,
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
        "sliding_window": 1024,
    }
    expected = transformers_parameters(published)
    assert sum(cost.parameters(plan_config(checkpoint_config(published)))) == expected
    assert 25.1e9 < expected < 25.3e9
