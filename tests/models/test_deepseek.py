"""DeepSeek V2 and V3 (multi-head latent attention, their routers): what test_families.py's shared cases leave
out, each against transformers' own modules (DeepseekV3TopkRouter, DeepseekV2TopkRouter, the models' forward)."""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.models import attention
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import hf_token_nll, make_checkpoint

# DeepSeek-V2-Lite's yarn (config.json): mscale and mscale_all_dim 0.707, so the attention factor on cos and sin is
# 1 and q.k is scaled by yarn_mscale(factor, 0.707) ** 2
V2_LITE_YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}


@pytest.mark.parametrize(
    ("family", "changes"),
    [
        ("deepseek_v3", {"rope_interleave": False}),  # the rope pairs as halves: the query rows only reordered
        ("deepseek_v3", {"rope_scaling": V2_LITE_YARN}),
        ("deepseek_v2", {"rope_scaling": V2_LITE_YARN, "topk_method": "greedy"}),  # V2-Lite's router
        ("deepseek_v2", {"attention_bias": True, "n_group": None, "topk_group": None, "topk_method": "greedy"}),
    ],
)
def test_the_forward_is_transformers(family, changes, tmp_path):
    hf = make_checkpoint(tmp_path, config(family, **changes))
    model = ropekit.load_model(tmp_path)
    tokens = ids(model.config.vocab_size, 300)  # past the trained 128 (and yarn's 64)
    assert_close(ropekit.token_nll(model, tokens), hf_token_nll(hf, tokens))


@pytest.mark.parametrize(
    ("family", "changes"),
    [
        ("deepseek_v3", {}),  # sigmoid scores, corrected, from the 2 best of 4 groups by their two best's sum
        ("deepseek_v3", {"n_group": 1, "topk_group": 1, "norm_topk_prob": False}),
        ("deepseek_v2", {}),  # softmax scores from the 2 best groups by their best
        ("deepseek_v2", {"topk_method": "greedy"}),
    ],
)
def test_the_router_picks_the_experts_and_weights_of_transformers(family, changes, tmp_path):
    hf = make_checkpoint(tmp_path, config(family, **changes))
    model = ropekit.load_model(tmp_path)
    x = torch.randn(512, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, their_weights, their_experts = hf.model.layers[1].mlp.gate(x)
        weights, experts = model.layers[1].mlp.route(x)
    theirs, ours = their_experts.sort(dim=-1), experts.sort(dim=-1)  # the order of a token's experts is no matter
    assert torch.equal(ours.values, theirs.values)
    assert torch.allclose(weights.gather(1, ours.indices), their_weights.gather(1, theirs.indices), atol=1e-6)
    if family == "deepseek_v3" and not changes:  # the groups and the correction decide: plain top-k differs
        scores = torch.sigmoid(x @ model.layers[1].mlp.gate.weight.T)
        assert not torch.equal(torch.topk(scores, 2).indices.sort(-1).values, ours.values)


def test_a_config_mla_cannot_run_is_refused(tmp_path):
    """Keys and values have a head per query head under MLA: fewer KV heads is refused in one line."""
    make_checkpoint(tmp_path, config("deepseek_v3"))
    raw = (tmp_path / "config.json").read_text().replace('"num_key_value_heads": 4', '"num_key_value_heads": 2')
    (tmp_path / "config.json").write_text(raw)
    with pytest.raises(ropekit.models.ModelConfigError, match="num_key_value_heads=2 with multi-head latent"):
        ropekit.load_model(tmp_path)


@pytest.mark.parametrize(("rope", "mix"), [("rerope:24", "native"), (None, "LLLG@32"), ("self_extend:4,24", "LLLG@48")])
def test_the_fused_path_equals_the_blockwise_one(rope, mix, tmp_path, monkeypatch):
    """The CUDA dispatch forced on the CPU (FlexAttention eager, as tests/models/test_flex.py) with values narrower
    than q.k's heads: two regions and sliding layers give the blockwise path's NLL (1e-5 relative, 1e-4 a token)."""
    make_checkpoint(tmp_path, config("deepseek_v3"))
    model = ropekit.load_model(tmp_path, rope_scaling=rope, layer_mix=mix)
    tokens = ids(model.config.vocab_size, 300)
    blockwise = ropekit.token_nll(model, tokens)
    monkeypatch.setattr(attention, "fused", lambda q: True)
    assert_close(ropekit.token_nll(model, tokens), blockwise)
