"""``score_answer`` against transformers: ``exact`` against greedy ``generate`` (KV cache, one token
at a time), ``logprob`` and ``n_correct`` against transformers' forward over the prompt and answer.

Tolerance: the answer's log-probability to 1e-4 nats in float32 (measured: under 2e-5 on the tiny
models, under 1e-5 on the embedded ones)."""

from __future__ import annotations

import pytest
import torch

import ropekit
from ropekit.tasks import build_trial
from tests.models.test_embedded import hf_model
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

LOGPROB_TOLERANCE = 1e-4


def forward_logits(hf, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """transformers' logits at the positions that predict the answer's tokens."""
    ids = torch.tensor(prompt + answer[:-1])[None]
    with torch.no_grad():
        return hf(ids).logits[0, len(prompt) - 1 :].float()


def reference(hf, prompt: list[int], answer: list[int], logits: torch.Tensor | None = None) -> tuple[float, int]:
    """transformers' total log-probability of ``answer`` after ``prompt`` and how many answer tokens
    are its forward's argmax."""
    logits = forward_logits(hf, prompt, answer) if logits is None else logits
    target = torch.tensor(answer)
    logprob = torch.log_softmax(logits, -1).gather(1, target[:, None]).double().sum()
    return float(logprob), int((logits.argmax(-1) == target).sum())


def greedy(hf, prompt: list[int], n: int) -> list[int]:
    """``generate(do_sample=False)``'s first ``n`` new tokens (no stopping at EOS). The attention mask
    is given: without it generate masks every prompt token equal to the pad id as padding."""
    ids = torch.tensor(prompt)[None]
    out = hf.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen3", "phi3"])
def test_tiny_models_match_generate_and_forward(family, tmp_path):
    """Prompts longer than the sliding windows. For each: the greedy continuation scores exact with
    every token correct; the same continuation with one token changed is not exact, and n_correct
    and logprob follow transformers' forward for any answer."""
    hf = make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    for length in (5, 90, 150):
        prompt = torch.randint(0, vocab, (length,), generator=g).tolist()
        best = greedy(hf, prompt, 4)
        wrong = best[:2] + [(best[2] + 1) % vocab] + best[3:]
        noise = torch.randint(0, vocab, (3,), generator=g).tolist()
        for answer in (best, wrong, noise, best[:1]):
            score = ropekit.score_answer(model, prompt, answer)
            logprob, n_correct = reference(hf, prompt, answer)
            assert score.exact == (greedy(hf, prompt, len(answer)) == answer)
            assert score.n_answer == len(answer) and score.n_correct == n_correct
            assert abs(score.logprob - logprob) <= LOGPROB_TOLERANCE
        assert ropekit.score_answer(model, prompt, best).exact
        assert not ropekit.score_answer(model, prompt, wrong).exact


def test_answer_is_scored_at_the_length_the_prompt_and_answer_make(tmp_path):
    """A length-dependent rope (dynamic, past the trained 128 tokens) is evaluated at the forward's own
    length, prompt plus answer less one, as token_nll evaluates it on those ids."""
    make_checkpoint(tmp_path, {"model_type": "llama", "max_position_embeddings": 128})
    model = ropekit.load_model(tmp_path, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    ids = torch.randint(0, model.config.vocab_size, (200,), generator=torch.Generator().manual_seed(3))
    score = ropekit.score_answer(model, ids[:190], ids[190:])
    at_199 = ropekit.token_nll(model, ids[:199], next_id=int(ids[199]))[189:]
    at_200 = ropekit.token_nll(model, ids)[189:]
    assert abs(score.logprob + float(at_199.double().sum())) <= 1e-5
    assert abs(score.logprob + float(at_200.double().sum())) > 1e-4  # the length does matter here


def test_bad_ids_are_refused(tmp_path):
    make_checkpoint(tmp_path, {"model_type": "llama"})
    model = ropekit.load_model(tmp_path)
    with pytest.raises(ValueError, match="answer_ids has 0 token.s.; at least 1"):
        ropekit.score_answer(model, [1, 2], [])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ropekit.score_answer(model, [1, 2], [10**6])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_embedded_models_match_generate(name):
    """Passkey and needle prompts of 200-420 tokens at five depths on the real models, fp32: exact
    equals "greedy decoding starts with the answer", for the true answer and for one a digit off;
    logprob equals transformers' to 1e-4. The models retrieve at these lengths, so both outcomes occur."""
    from ropekit.data import shakespeare

    model = ropekit.load_model(name)
    hf = hf_model(name)
    tokenizer = model.tokenizer
    documents = [tokenizer.encode(d.text, add_special_tokens=False) for d in shakespeare().documents[:4]]
    outcomes = set()
    for i, (task, depth) in enumerate([(t, d) for t in ("passkey", "needle") for d in (0, 25, 50, 75, 100)]):
        trial = build_trial(tokenizer, task, 200 + 22 * i, depth, i, seed=1, digits=5, documents=documents)
        prompt, answer = list(trial.prompt_ids), list(trial.answer_ids)
        off = answer[:-1] + [tokenizer.encode(str((int(trial.value[-1]) + 1) % 10), add_special_tokens=False)[-1]]
        generated = greedy(hf, prompt, len(answer))
        logits = forward_logits(hf, prompt, answer)  # the same for both: they differ in the last token only
        for candidate in (answer, off):
            score = ropekit.score_answer(model, prompt, candidate)
            logprob, n_correct = reference(hf, prompt, candidate, logits)
            assert score.exact == (generated == candidate), (task, depth, candidate, generated)
            assert score.n_correct == n_correct
            assert abs(score.logprob - logprob) <= LOGPROB_TOLERANCE
            outcomes.add(score.exact)
    assert outcomes == {True, False}
