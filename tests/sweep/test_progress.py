"""The progress bar within a pass (issue 34): it moves as each decoder layer finishes, by the pass's
predicted share, and says which pass and layer run, so that a long first pass does not leave it at 0
with its clock standing. No clock is asserted on."""

from __future__ import annotations

import warnings

import pytest
import torch

from ropekit import load_model
from ropekit.eval.perplexity import plan_document, score_plan
from ropekit.sweep.progress import Progress
from tests.models.tiny import make_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress") / "tiny"
    make_checkpoint(folder, {"model_type": "llama", "max_position_embeddings": 128})
    return load_model(folder)


def test_the_bar_moves_with_each_layer_of_a_pass_and_ends_where_the_plan_does(model):
    plan = plan_document(model, 200, [64, 200], mode="strided", stride=64)  # several passes, unequal
    progress = Progress(1, 0, lambda config, p: float(p.tokens), quiet=False)
    progress.add_plan(model.config, plan)
    seen = []
    layers = len(model.layers)

    def watch(module, inputs, output):
        seen.append((progress.bar.n, progress.bar.status))

    with progress.running(model, plan):
        hooks = [layer.register_forward_hook(watch) for layer in model.layers]  # they run after the bar's
        score_plan(model, torch.arange(200) % model.config.vocab_size, plan)
    for hook in hooks:
        hook.remove()
    steps = [n for n, _ in seen]
    assert len(steps) == len(plan.passes) * layers and len(plan.passes) > 2
    assert steps == sorted(steps) and 0 < steps[0] < steps[-1] <= plan.tokens
    assert steps[layers - 1] == pytest.approx(plan.passes[0].tokens)  # a pass's share once its last layer ran
    assert f"pass 1/{len(plan.passes)}" in seen[0][1] and f"layer 1/{layers}" in seen[0][1]
    assert f"pass {len(plan.passes)}/{len(plan.passes)}" in seen[-1][1] and f"layer {layers}/{layers}" in seen[-1][1]
    progress.done(model.config, plan, seconds=1.0)
    assert progress.bar.n == pytest.approx(plan.tokens) and "pass" not in progress.bar.status
    assert all(not layer._forward_hooks for layer in model.layers)  # the bar's hooks are gone
    progress.close()


def test_a_pass_run_again_never_moves_the_bar_past_its_plan(model):
    plan = plan_document(model, 100, [100])
    progress = Progress(1, 0, lambda config, p: float(p.tokens), quiet=False)
    progress.add_plan(model.config, plan)
    ids = torch.arange(100) % model.config.vocab_size
    with progress.running(model, plan):
        score_plan(model, ids, plan)
        score_plan(model, ids, plan)  # as after an out-of-memory error, each length on its own
    assert progress.bar.n == pytest.approx(plan.tokens)
    progress.planning("loading the weights of m")
    assert progress.bar.status.endswith("; loading the weights of m")
    progress.close()


def test_the_bar_never_passes_its_total_by_a_rounding(model):
    """Plans predicted at 0.3, 0.2 and 0.1 s are added in that order (0.6) and finish in the other (0.1 + 0.2 + 0.3
    is 0.6000000000000001): the bar ends full, with no warning from tqdm and no negative time left."""
    plans = {seconds: plan_document(model, tokens, [tokens]) for seconds, tokens in ((0.3, 30), (0.2, 20), (0.1, 10))}
    progress = Progress(3, 0, lambda config, p: next(s for s, q in plans.items() if q is p), quiet=False)
    for plan in plans.values():
        progress.add_plan(model.config, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seconds in (0.1, 0.2, 0.3):
            progress.done(model.config, plans[seconds], seconds=seconds)
    assert progress.bar.n == progress.bar.total and "<-" not in progress.bar.status
    progress.close()
