"""The tiny checkpoint and corpus the sweep tests run on."""

from __future__ import annotations

import pytest

from ropekit.eval import perplexity
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus


def oom_at(length: int):
    """``score_plan`` that runs out of memory on any plan serving ``length`` (as CUDA says it)."""
    real = perplexity.score_plan

    def score_plan(model, ids, plan, **kw):
        if length in plan.lengths:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, ids, plan, **kw)

    return score_plan


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (150, 700, 400, 900, 260, 1200))
    return base
