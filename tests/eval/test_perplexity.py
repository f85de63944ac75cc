"""Perplexity: one pass per shared-frequency group equals separate passes; strided and first-L
modes equal a direct loop over token_nll; a plan's tokens are the tokens that run.
(Each mode against its source: test_modes.py.)"""

from __future__ import annotations

import math

import pytest
import torch

import ropekit
from ropekit.eval.perplexity import (
    Score,
    combine,
    first_tokens_scores,
    plan_document,
    score_plan,
    shared_passes,
    strided_score,
)
from ropekit.rope import preset
from tests.models.tiny import make_checkpoint

LENGTHS = [64, 128, 200, 256, 512]
GEO = {"head_dim": 16, "rope_theta": 1e4, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefix")
    make_checkpoint(folder, {"model_type": "llama", "max_position_embeddings": 128})
    return folder


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 384, (600,), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize(
    ("rope_type", "passes"),
    [
        ("default", [[64, 128, 200, 256, 512]]),
        ("linear", [[64, 128, 200, 256, 512]]),
        ("yarn", [[64, 128, 200, 256, 512]]),
        ("llama3", [[64, 128, 200, 256, 512]]),
        ("longrope", [[64, 128], [200, 256, 512]]),
        ("dynamic", [[64, 128], [200], [256], [512]]),
    ],
)
def test_prefix_reuse_equals_separate_passes(checkpoint, ids, rope_type, passes):
    model = ropekit.load_model(
        checkpoint, rope_scaling=preset(rope_type, None if rope_type == "default" else 4.0, **GEO)
    )
    assert [group for _, _, group in shared_passes(model, LENGTHS)] == passes
    shared = first_tokens_scores(model, ids, LENGTHS)
    for length in LENGTHS:
        separate = ropekit.token_nll(model, ids[:length]).double().sum().item()
        assert shared[length].n_tokens == length - 1
        assert shared[length].nll_sum == pytest.approx(separate, rel=1e-5)


def test_one_pass_per_group_is_what_runs_and_identical_ropes_share_it(checkpoint, ids):
    dynamic = ropekit.load_model(checkpoint, rope_scaling=preset("dynamic", 4.0, **GEO))
    default = ropekit.load_model(checkpoint)
    calls = []

    def counting(model, ids):
        calls.append(len(ids))
        return ropekit.token_nll(model, ids)

    memo = {}
    first_tokens_scores(default, ids, LENGTHS, nll_fn=counting, memo=memo)
    shared = first_tokens_scores(dynamic, ids, LENGTHS, nll_fn=counting, memo=memo)
    # default: one pass at 512; dynamic: up to its trained 128 it *is* default, so only 200, 256, 512 run
    assert calls == [512, 200, 256, 512]
    alone = first_tokens_scores(dynamic, ids, LENGTHS)
    for length in LENGTHS:
        assert shared[length].nll_sum == pytest.approx(alone[length].nll_sum, rel=1e-5)
    windowed = ropekit.load_model(checkpoint, layer_mix="LLLG@32")
    first_tokens_scores(windowed, ids, [64], nll_fn=counting, memo=memo)
    assert calls[-1] == 64  # another plan is another signature: never served from the memo


@pytest.mark.parametrize(("mode", "stride"), [("first", None), ("strided", 50)])
def test_a_plans_tokens_are_the_tokens_pushed_through_the_model(checkpoint, ids, mode, stride):
    default = ropekit.load_model(checkpoint)
    dynamic = ropekit.load_model(checkpoint, rope_scaling=preset("dynamic", 4.0, **GEO))
    pushed = []

    def counting(model, ids):
        pushed.append(len(ids))
        return ropekit.token_nll(model, ids)

    memo, computed, plans = {}, {}, []
    for model in (default, dynamic):  # planned ahead, as a sweep does, before anything runs
        plans.append(plan_document(model, len(ids), LENGTHS, mode=mode, stride=stride, computed=computed))
        computed.update(plans[-1].kept())
    for model, plan in zip((default, dynamic), plans, strict=True):
        before = sum(pushed)
        scores = score_plan(model, ids, plan, nll_fn=counting, memo=memo)
        assert sum(pushed) - before == plan.tokens > 0
        for length in LENGTHS:  # and the plan scores what the direct calls score
            if mode == "first":
                alone = first_tokens_scores(model, ids, [length])[length]
            else:
                alone = strided_score(model, ids, length, stride)
            assert scores[length].n_tokens == alone.n_tokens
            assert scores[length].nll_sum == pytest.approx(alone.nll_sum, rel=1e-5)
    if mode == "first":  # dynamic reads 64 and 128 from the default rope's pass
        assert [p.tokens for p in plans[1].passes] == [0, 200, 256, 512]


@pytest.mark.parametrize(("length", "stride"), [(128, 128), (128, 50), (200, 1), (64, 63)])
def test_strided_equals_a_direct_loop(checkpoint, ids, length, stride):
    model = ropekit.load_model(checkpoint)
    doc = ids[:400]
    total, count, seen = 0.0, 0, set()
    for begin in range(0, len(doc), stride):  # the transformers perplexity guide, written out
        end = min(begin + length, len(doc))
        nll = ropekit.token_nll(model, doc[begin:end]).double()
        for offset, value in enumerate(nll.tolist()):
            token = begin + 1 + offset
            if token not in seen:
                seen.add(token)
                total, count = total + value, count + 1
        if end == len(doc):
            break
    score = strided_score(model, doc, length, stride)
    if stride < length:
        assert seen == set(range(1, len(doc)))
    else:  # non-overlapping windows: each window's first token has no context
        assert seen == set(range(1, len(doc))) - set(range(length, len(doc), length))
    assert score.n_tokens == count
    assert score.nll_sum == pytest.approx(total, rel=1e-6)


def test_first_l_is_the_mean_of_the_first_predictions(checkpoint, ids):
    model = ropekit.load_model(checkpoint)
    score = first_tokens_scores(model, ids, [300])[300]
    assert score.nll == pytest.approx(ropekit.token_nll(model, ids[:300]).double().mean().item(), rel=1e-9)


def test_scores_are_token_weighted():
    total = combine([Score(10.0, 10), Score(30.0, 10), Score(0.0, 0)])
    assert total.nll == 2.0 and total.ppl == pytest.approx(math.exp(2.0))
    assert math.isnan(Score(0.0, 0).nll)


def test_bad_arguments(checkpoint, ids):
    model = ropekit.load_model(checkpoint)
    with pytest.raises(ValueError, match="fewer than the length 1000"):
        first_tokens_scores(model, ids, [1000])
    with pytest.raises(ValueError, match="stride=0"):
        strided_score(model, ids, 64, 0)
