"""Scoring an answer after a prompt in one forward pass: what greedy decoding would produce, and how
likely the answer is, without a KV cache and without ``[T, vocab]`` logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .nll import _as_ids, head_logits


@dataclass(frozen=True)
class AnswerScore:
    """``exact``: every answer token is the argmax given the prompt and the answer tokens before it,
    which is what greedy decoding (``generate(do_sample=False)``) produces for exactly those tokens;
    ``logprob``: the answer's total log-probability in nats (a continuous score, far less noisy than
    accuracy over few trials); ``n_correct`` of the ``n_answer`` answer tokens are the argmax (teacher
    forced: each given the true tokens before it)."""

    exact: bool
    logprob: float
    n_correct: int
    n_answer: int


@torch.inference_mode()
def score_answer(model, prompt_ids, answer_ids) -> AnswerScore:
    """Score ``answer_ids`` as the continuation of ``prompt_ids``: one forward over the prompt and all
    answer tokens but the last (``len(prompt) + len(answer) - 1`` tokens, the length the rope is
    evaluated at), projecting only the ``len(answer)`` positions that predict an answer token.

    The answer's tokens are what the caller says they are; tokenize an answer as a continuation of
    its prompt's text (``ropekit.eval.retrieval.continuation_ids``: a leading space, split as
    lm-evaluation-harness splits a context from its continuation). Argmax ties go to the lower token
    id, as ``torch.argmax`` in ``generate`` breaks them.
    """
    prompt = _as_ids(model, prompt_ids, at_least=1, name="prompt_ids")
    answer = _as_ids(model, answer_ids, at_least=1, name="answer_ids")
    ids = torch.cat((prompt, answer[:-1]))
    hidden = model(ids[None])[0, prompt.shape[0] - 1 :]  # (A, C): the positions predicting the answer
    return answer_score(head_logits(model, hidden), answer)


def answer_score(logits: torch.Tensor, answer: torch.Tensor) -> AnswerScore:
    """The score of ``answer`` (A,) from the float32 logits (A, V) of the positions that predict it."""
    hits = logits.argmax(-1) == answer
    logprob = torch.log_softmax(logits, -1).gather(1, answer[:, None])[:, 0]
    return AnswerScore(
        exact=bool(hits.all()),
        logprob=float(logprob.double().sum()),
        n_correct=int(hits.sum()),
        n_answer=int(answer.shape[0]),
    )
