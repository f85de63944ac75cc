"""ropekit's decoder against transformers' forward on tiny random-weight checkpoints of every
family, with windows shorter than the sequence, and with each rope scaling."""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.rope import preset
from tests.models.tiny import FAMILY_CONFIGS, assert_nll_close, hf_token_nll, make_checkpoint

T = 300


def random_ids(vocab: int, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_family_matches_transformers(family, tmp_path):
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path)
    ids = random_ids(model.config.vocab_size)
    reference = hf_token_nll(hf, ids)
    assert reference.std() > 0.2  # weights large enough that the comparison is not of near-uniform guesses
    assert_nll_close(ropekit.token_nll(model, ids), reference)


@pytest.mark.parametrize("rope_type", ["linear", "dynamic", "yarn", "longrope", "llama3"])
def test_rope_scalings_in_the_checkpoint_config_match_transformers(rope_type, tmp_path):
    # Trained length 128 < T: dynamic and longrope run in their scaled regimes.
    geometry = {"head_dim": 16, "rope_theta": 10000.0, "max_position_embeddings": 128}
    rope = {**preset(rope_type, 4.0, **geometry), "rope_theta": 10000.0}
    hf = make_checkpoint(tmp_path, {"model_type": "llama", "max_position_embeddings": 128, "rope_parameters": rope})
    model = ropekit.load_model(tmp_path)
    assert model.config.layers[0].rope.rope_type == rope_type
    ids = random_ids(model.config.vocab_size)
    assert_nll_close(ropekit.token_nll(model, ids), hf_token_nll(hf, ids))


def test_rope_override_matches_transformers_with_the_same_override(tmp_path):
    hf = make_checkpoint(tmp_path, {"model_type": "qwen3"})
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    model = ropekit.load_model(tmp_path, rope_scaling=rope)
    hf_yarn = make_checkpoint(
        tmp_path / "yarn", {"model_type": "qwen3", "rope_parameters": {**rope, "rope_theta": 1e4}}
    )
    hf_yarn.load_state_dict(hf.state_dict())
    ids = random_ids(model.config.vocab_size)
    assert_nll_close(ropekit.token_nll(model, ids), hf_token_nll(hf_yarn, ids))


def test_nll_accepts_both_shapes_and_is_deterministic(tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["llama"])
    model = ropekit.load_model(tmp_path)
    ids = random_ids(model.config.vocab_size, 50)
    flat = ropekit.token_nll(model, ids)
    assert torch.equal(flat, ropekit.token_nll(model, ids[None]))
    assert torch.equal(flat, ropekit.token_nll(model, ids.tolist()))
    assert flat.shape == (49,)


def test_chunked_head_equals_one_shot_logits(tmp_path, monkeypatch):
    from ropekit.eval import nll

    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path)
    ids = random_ids(model.config.vocab_size)
    whole = ropekit.token_nll(model, ids)
    monkeypatch.setattr(nll, "LOGIT_BUDGET", model.config.vocab_size * 7)  # 7 tokens a chunk
    torch.testing.assert_close(ropekit.token_nll(model, ids), whole, rtol=0, atol=1e-6)
