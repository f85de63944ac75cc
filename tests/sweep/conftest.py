"""The tiny checkpoint and corpus the sweep tests run on."""

from __future__ import annotations

import pytest

from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (150, 700, 400, 900, 260, 1200))
    return base
