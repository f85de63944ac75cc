"""What a search minimises, on one loaded model whose rope each candidate replaces (``reconfigure``:
the same weights, no reload):

* ``perplexity`` at the scored length L over the first ``n_docs`` documents (in corpus order) with at least
  L ids, each cut to its first L, in one of two conventions (``mode``):

  - ``first`` (ropekit's "perplexity at length L", ARCHITECTURE.md): ids ``tokenizer.encode(text)``, every
    one of the L-1 predictions counted; exp(total NLL / total predictions);
  - ``yarn`` (LongRoPE's own: microsoft/LongRoPE ``evaluation/perplexity.py`` ``compute_perplexity`` with
    ``--truncate``, as its ``examples/*/search.sh`` run it): BOS + the text's ids without special tokens,
    cut to L; each document's mean NLL, exp of their mean. Every document has L ids, so this is
    token-weighted too; the two differ only in the ids (the BOS).

* a trial task's answer loss (LongRoPE2's needle-driven perplexity, arXiv:2502.20082 section 3.2: the
  loss of the answer tokens only, with the needle far back in the context): the task's prompts at the
  scored length (``trials`` per depth of ``depths``, built as a sweep builds them, from the task's
  seed 0), scored by ``score_answer``; exp(-total answer log-probability / total answer tokens).
  ``needle`` is LongRoPE2's; any registered task (``passkey``, plugins) works the same.

Lower is better for both. Inputs are built once, before any candidate is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..sweep.spec import SpecError


@dataclass
class Objective:
    """``objective(factors) -> score`` for a search plan (``run.SearchPlan``) on ``model`` (loaded from the
    spec when not given)."""

    plan: object
    model: object = None

    def __post_init__(self) -> None:
        from ..data import load_corpus, tokenize
        from ..models import load_model

        spec = self.plan.spec
        if self.model is None:
            self.model = load_model(spec.model, dtype=spec.dtype, device=spec.device)
        tokenizer = self.model.tokenizer
        corpus = load_corpus(spec.corpus["path"], format=spec.corpus["format"], field=spec.corpus["field"])
        length = self.plan.length
        if spec.objective == "perplexity":
            from ..eval.perplexity import encoding

            prefix, special_tokens = encoding(tokenizer, spec.mode)
            tokens = tokenize(corpus, tokenizer, prefix=prefix, special_tokens=special_tokens)
            long_enough = [ids[:length] for ids in tokens.values() if len(ids) >= length]
            if len(long_enough) < spec.n_docs:
                raise SpecError(
                    f"search.n_docs = {spec.n_docs}: the corpus {corpus.name!r} has {len(long_enough)} document(s) "
                    f"with at least {length} tokens; lower n_docs or use a corpus with longer documents"
                )
            self.documents = [np.asarray(ids, dtype=np.int64) for ids in long_enough[: spec.n_docs]]
            self.trials = []
        else:
            from ..tasks import build_trial, get_task

            task = get_task(spec.objective)
            haystack = list(tokenize(corpus, tokenizer, special_tokens=False).values()) if task.reads_corpus else None
            self.documents = []
            try:
                self.trials = [
                    build_trial(tokenizer, spec.objective, length, depth, t, documents=haystack)
                    for depth in spec.depths
                    for t in range(spec.trials)
                ]
            except ValueError as err:
                raise SpecError(f"search.objective = {spec.objective!r}: {err}") from None

    def rope(self, factors: np.ndarray) -> dict:
        from .run import rope_dict

        return rope_dict(self.plan, factors)

    def __call__(self, factors: np.ndarray) -> float:
        import torch

        from ..eval import score_answer, token_nll
        from ..models import reconfigure

        model = reconfigure(self.model, rope_scaling=self.rope(factors))
        if self.documents:
            nlls = [token_nll(model, torch.from_numpy(ids)).double() for ids in self.documents]
            if self.plan.spec.mode == "yarn":  # each document's mean, then their mean
                return math.exp(math.fsum(float(n.mean()) for n in nlls) / len(nlls))
            return math.exp(math.fsum(float(n.sum()) for n in nlls) / sum(n.shape[0] for n in nlls))
        logprob, count = 0.0, 0
        for trial in self.trials:
            score = score_answer(model, list(trial.prompt_ids), list(trial.answer_ids))
            logprob += score.logprob
            count += score.n_answer
        return math.exp(-logprob / count)
