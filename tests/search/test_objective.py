"""The search's objectives on a loaded model against transformers: the candidate's rope written into a
transformers checkpoint's ``rope_parameters`` (the search's own ``rope_parameters`` form), its NLL by
transformers' forward (tests/models/tiny.py), aggregated as each objective's source says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ropekit.search.objective import Objective
from ropekit.search.run import plan_search, rope_dict
from ropekit.search.spec import search_from_dict
from ropekit.sweep.spec import SpecError
from tests.models.tiny import hf_token_nll, make_checkpoint

HYPER = {"population_size": 4, "max_time_budget": 1, "mutation_numbers": 2, "crossover_size": 2, "parents_size": 2}


def spec_of(tiny, **keys):
    table = {"model": str(tiny / "tiny"), "factor": 2.0, "corpus": str(tiny / "corpus"), **HYPER, **keys}
    return search_from_dict(table)


def transformers_with(tiny, tmp_path, plan, factors):
    """The tiny checkpoint in transformers with the candidate's rope (its rope_parameters form)."""
    rope = {**rope_dict(plan, factors), "rope_theta": plan.rope_theta}
    hf = make_checkpoint(
        tmp_path / "hf", {"model_type": "llama", "max_position_embeddings": 128, "rope_parameters": rope}
    )
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny / "tiny", attn_implementation="eager")
    hf.load_state_dict(base.state_dict())
    return hf


def candidates(plan):
    """The search's start and a candidate of its own space (uneven, monotonic)."""
    other = np.sort(np.linspace(1.0, plan.scale + 0.3, plan.rotary_dim // 2) ** 1.2).astype(np.float32)
    return [plan.start, other]


@pytest.mark.parametrize(("factors", "length"), [("long", 256), ("short", 128)])
def test_perplexity_at_the_scored_length_matches_transformers(tiny, tmp_path, factors, length):
    """LongRoPE's objective: the first n_docs documents with >= L tokens cut to L, token-weighted; transformers'
    NLL with the same rope to 1e-5 relative. The long factors are scored at the target length, the short ones
    at the trained length (where transformers, too, reads short_factor)."""
    plan = plan_search(spec_of(tiny, n_docs=2, factors=factors))
    objective = Objective(plan)
    tokenizer = objective.model.tokenizer
    texts = [(tiny / "corpus" / f"doc{i}.txt").read_text() for i in range(3)]
    chosen = [ids[: plan.length] for ids in map(tokenizer.encode, texts) if len(ids) >= plan.length][:2]
    assert len(chosen) == 2 and plan.length == length
    for i, factors in enumerate(candidates(plan)):
        hf = transformers_with(tiny, tmp_path / str(i), plan, factors)
        nll = torch.cat([hf_token_nll(hf, torch.tensor(ids)) for ids in chosen]).double()
        expected = math.exp(float(nll.mean()))
        assert objective(factors) == pytest.approx(expected, rel=1e-5)
    assert objective(candidates(plan)[0]) != objective(candidates(plan)[1])  # the factors matter


def test_yarn_mode_is_longropes_own_perplexity(tiny, tmp_path):
    """mode = "yarn": microsoft/LongRoPE's compute_perplexity (rewritten in longrope_source.py) on its own
    tokenization (no special tokens, its BOS prepended), run by transformers with the candidate's rope, to
    1e-5 relative (it averages float32 losses, hence not tighter)."""
    from tests.search import longrope_source as source

    plan = plan_search(spec_of(tiny, n_docs=2, mode="yarn"))
    objective = Objective(plan)
    tokenizer = objective.model.tokenizer
    texts = [(tiny / "corpus" / f"doc{i}.txt").read_text() for i in range(2)]
    dataset = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    factors = candidates(plan)[1]
    hf = transformers_with(tiny, tmp_path, plan, factors)
    expected = source.compute_perplexity(dataset, hf, tokenizer.bos_token_id, plan.length)
    assert objective(factors) == pytest.approx(expected, rel=1e-5)
    first = Objective(plan_search(spec_of(tiny, n_docs=2)), model=objective.model)
    assert first.documents[0][0] == tokenizer.bos_token_id  # this tokenizer adds BOS: the same ids
    assert all(np.array_equal(a, b) for a, b in zip(first.documents, objective.documents, strict=True))


def test_needle_driven_perplexity_matches_transformers(tiny, tmp_path):
    """LongRoPE2's objective: only the answer tokens of needle prompts count; transformers' NLL of those
    tokens after the prompt (teacher forced), exp(total / answer tokens), to 1e-5 relative."""
    from ropekit.tasks import build_trial

    plan = plan_search(spec_of(tiny, objective="needle", trials=2, depths=[20, 80]))
    objective = Objective(plan)
    assert len(objective.trials) == 4 and not objective.documents
    tokenizer = objective.model.tokenizer
    from ropekit.data import load_corpus, tokenize

    haystack = list(tokenize(load_corpus(str(tiny / "corpus")), tokenizer, special_tokens=False).values())
    factors = candidates(plan)[1]
    hf = transformers_with(tiny, tmp_path, plan, factors)
    total, count = 0.0, 0
    for depth in (20.0, 80.0):
        for t in range(2):
            trial = build_trial(tokenizer, "needle", plan.length, depth, t, documents=haystack)
            assert len(trial.prompt_ids) == plan.length  # the prompt is built to the scored length
            ids = torch.tensor([*trial.prompt_ids, *trial.answer_ids])
            total += float(hf_token_nll(hf, ids)[-len(trial.answer_ids) :].double().sum())
            count += len(trial.answer_ids)
    assert objective(factors) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_objectives_refuse_what_cannot_run(tiny):
    with pytest.raises(SpecError, match="has 0 document\\(s\\) with at least 512 tokens"):
        Objective(plan_search(spec_of(tiny, factor=4.0)))
    with pytest.raises(SpecError, match="search.objective = 'nope' is not allowed; expected one of perplexity, "):
        spec_of(tiny, objective="nope")
