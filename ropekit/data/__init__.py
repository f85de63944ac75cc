"""Data: corpora of documents and their cached tokens."""

from .corpus import EMBEDDED_CORPORA, Corpus, CorpusError, Document, embedded_corpus, load_corpus, shakespeare
from .tokens import tokenize, tokenizer_fingerprint

__all__ = [
    "EMBEDDED_CORPORA",
    "Corpus",
    "CorpusError",
    "Document",
    "embedded_corpus",
    "load_corpus",
    "shakespeare",
    "tokenize",
    "tokenizer_fingerprint",
]
