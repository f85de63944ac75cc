"""A tiny checkpoint (trained at 128 tokens, 8 rotary pairs) and corpus the search tests run on."""

from __future__ import annotations

import pytest

from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (300, 500, 400))
    return base
