"""Perplexity: one pass per shared-frequency group equals separate passes; strided and first-L
modes equal a direct loop over token_nll; a plan's tokens are the tokens that run; a score's blocks
are its predictions' NLL in order, BLOCK at a time. (Each mode against its source: test_modes.py.)"""

from __future__ import annotations

import math

import pytest
import torch

import ropekit
from ropekit.eval.perplexity import (
    BLOCK,
    Score,
    combine,
    first_tokens_scores,
    plan_document,
    score_plan,
    shared_passes,
    strided_score,
)
from ropekit.rope import preset
from tests.eval.test_modes import get_rolling_token_windows, make_disjoint_window
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


@pytest.mark.parametrize(
    ("rope", "passes"),
    [
        ("dynamic_yarn", [[64, 128], [200], [256], [512]]),  # training-free: its own scale past 128
        ("dynamic_yarn:4", [LENGTHS]),  # YaRN at 4 held up to 4 x 128
        ("ntk:4", [LENGTHS]),
        ("resonance:yarn:4", [LENGTHS]),
    ],
)
def test_methods_share_passes_by_their_frequencies(checkpoint, ids, rope, passes):
    model = ropekit.load_model(checkpoint, rope_scaling=rope)
    assert [group for _, _, group in shared_passes(model, LENGTHS)] == passes
    shared = first_tokens_scores(model, ids, LENGTHS)
    for length in LENGTHS:
        separate = ropekit.token_nll(model, ids[:length]).double().sum().item()
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


def predictions_in_order(model, ids: torch.Tensor, length: int, mode: str, stride: int | None) -> torch.Tensor:
    """Every counted prediction's NLL in the order predicted, from passes of their own."""
    if mode in ("first", "yarn"):
        return ropekit.token_nll(model, ids[:length])
    out, seen = [], {0}
    if mode == "strided":
        for begin in range(0, len(ids), stride):  # the transformers guide's windows
            end = min(begin + length, len(ids))
            for token, value in enumerate(ropekit.token_nll(model, ids[begin:end]), begin + 1):
                if token not in seen:
                    seen.add(token)
                    out.append(value)
            if end == len(ids):
                return torch.stack(out)
    ids_list = ids.tolist()  # rolling: lm-eval's windows over the text after the prefix
    for context, continuation in map(
        make_disjoint_window, get_rolling_token_windows(ids_list[1:], ids_list[0], length, 1)
    ):
        window = (context + continuation)[-(length + 1) :]
        out.append(ropekit.token_nll(model, window[:-1], next_id=window[-1])[-len(continuation) :])
    return torch.cat(out)


@pytest.mark.parametrize(
    ("mode", "stride", "lengths"),
    [("first", None, [64, 100, 200, 512]), ("yarn", None, [130]), ("strided", 50, [128]), ("rolling", None, [100])],
)
def test_blocks_are_the_predictions_in_order(checkpoint, ids, mode, stride, lengths):
    model = ropekit.load_model(checkpoint)
    scores = score_plan(model, ids, plan_document(model, len(ids), lengths, mode=mode, stride=stride))
    for length in lengths:
        score, nll = scores[length], predictions_in_order(model, ids, length, mode, stride).double()
        assert len(nll) == score.n_tokens and len(score.blocks) == math.ceil(score.n_tokens / BLOCK)
        assert score.blocks == pytest.approx([chunk.sum().item() for chunk in nll.split(BLOCK)], rel=1e-6)
        assert sum(score.blocks) == pytest.approx(score.nll_sum, rel=1e-12)


def test_blocks_read_from_the_memo_and_combined(checkpoint, ids):
    default = ropekit.load_model(checkpoint)
    dynamic = ropekit.load_model(checkpoint, rope_scaling=preset("dynamic", 4.0, **GEO))
    memo = {}
    first_tokens_scores(default, ids, [512], memo=memo)
    shared = first_tokens_scores(dynamic, ids, [100, 128], memo=memo)  # read from the default rope's pass
    alone = first_tokens_scores(dynamic, ids, [100, 128])
    for length in (100, 128):
        assert shared[length].blocks == pytest.approx(alone[length].blocks, rel=1e-5)
    total = combine([shared[100], shared[128]])
    assert total.blocks == shared[100].blocks + shared[128].blocks  # document order; 99 = 64 + 35 first
    assert combine([shared[100], Score(3.0, 2)]).blocks == ()  # a score read back without its blocks
