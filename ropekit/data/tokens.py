"""Tokenised corpora, cached on disk once per (tokenizer, corpus, encoding) and keyed by content hashes.

A document's tokens are ``tokenizer.encode(text)``, with the tokenizer's default special tokens
(ARCHITECTURE.md, conventions); a perplexity mode that reads other ids (yarn, rolling: a prefix token, then the text
without special tokens) asks for them with ``prefix`` and ``special_tokens``, which are part of the
cache key, so the ids of one encoding are never read as another's. The cache file holds a checksum
of its own contents; a file that fails it (truncated, edited, half-written) is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..cache import Notice, atomic_write, cache_dir
from .corpus import Corpus

CACHE_VERSION = "1"


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the tokens: the full tokenizer definition (vocabulary,
    merges, normaliser, the post-processor that adds BOS) and its class."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    digest = hashlib.sha256(f"{type(tokenizer).__name__}\0{definition}".encode())
    digest.update(repr(tokenizer.encode("a")).encode())  # special-token behaviour, as encode applies it
    return digest.hexdigest()


def _checksum(names: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (names, offsets, ids):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The cached tokens, or None when the file is missing or fails its checksum."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names, offsets, ids, stored = data["names"], data["offsets"], data["ids"], str(data["checksum"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        warnings.warn(f"token cache {path} is unreadable ({err}); rebuilding it", Notice, stacklevel=3)
        return None
    if _checksum(names, offsets, ids) != stored:
        warnings.warn(f"token cache {path} fails its checksum; rebuilding it", Notice, stacklevel=3)
        return None
    return {str(n): ids[offsets[i] : offsets[i + 1]] for i, n in enumerate(names)}


def _write(path: Path, tokens: dict[str, np.ndarray]) -> None:
    names = np.array(list(tokens), dtype=str)
    lengths = [len(t) for t in tokens.values()]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate(list(tokens.values())) if tokens else np.zeros(0, np.int32)
    npz = io.BytesIO()
    np.savez(npz, names=names, offsets=offsets, ids=ids, checksum=np.array(_checksum(names, offsets, ids)))
    atomic_write(path, npz.getvalue())


def tokenize(
    corpus: Corpus, tokenizer, *, prefix: int | None = None, special_tokens: bool = True, cache: Path | None = None
) -> dict[str, np.ndarray]:
    """Token ids (int32) of every document, by document name, from the cache when it holds them:
    ``[prefix] + tokenizer.encode(text, add_special_tokens=special_tokens)`` (no prefix when None;
    the defaults give ``tokenizer.encode(text)``). The cache key holds the tokenizer's fingerprint,
    the corpus hash, ``prefix`` and ``special_tokens``."""
    encoding = f"prefix={prefix}\0special_tokens={special_tokens}"
    key = hashlib.sha256(f"{CACHE_VERSION}\0{tokenizer_fingerprint(tokenizer)}\0{corpus.sha256}\0{encoding}".encode())
    path = (cache or cache_dir() / "tokens") / f"{corpus.name}-{key.hexdigest()[:24]}.npz"
    tokens = _read(path)
    if tokens is None or list(tokens) != [d.name for d in corpus.documents]:
        start = [] if prefix is None else [prefix]
        encode = tokenizer.encode
        tokens = {
            d.name: np.asarray(start + list(encode(d.text, add_special_tokens=special_tokens)), dtype=np.int32)
            for d in corpus.documents
        }
        try:
            _write(path, tokens)
        except OSError as err:  # a cache, not a result: the tokens are in hand
            warnings.warn(f"could not cache the tokens ({err}); going on without", Notice, stacklevel=2)
    return tokens
