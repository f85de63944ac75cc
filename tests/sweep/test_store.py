"""The results store: appends only, a torn last line is never read and is cut off on resume, the
last row of a cell counts; a sweep's estimate is the tokens it runs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from ropekit.cache import open_records
from ropekit.eval import perplexity
from ropekit.sweep import ResultStore, run_sweep
from ropekit.sweep import perplexity as perplexity_module
from ropekit.sweep import progress as progress_module
from ropekit.sweep.store import DOC_COLUMNS, RESULT_COLUMNS
from tests.sweep.conftest import oom_at
from tests.sweep.test_sweep import rows, spec


def one_rope(setup):
    return spec(setup, ropes={"default": "default"}, layer_mixes=["native"])


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    """An uninterrupted run: the oracle every resumed run must equal."""
    out = tmp_path_factory.mktemp("reference")
    assert run_sweep(one_rope(setup), out, quiet=True).ok
    return out


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def read_back(path: Path) -> list[dict]:
    return sorted(csv.DictReader(open_records(path)), key=lambda r: r["cell"])


def doc_row(i: int) -> dict:
    return {"cell": "c", "model": "m", "rope": "r", "layer_mix": "native", "length": 64, "doc": f"d{i}"} | {
        "n_tokens": 63,
        "nll_sum": repr(100.0 + i / 3),
        "n_bytes": 250,
        "n_words": 63,
        "blocks": repr(100.0 + i / 3),
    }


def test_each_record_is_one_appended_line(setup, tmp_path):
    path = tmp_path / "documents.csv"
    with ResultStore(tmp_path, one_rope(setup)) as store:
        assert path.read_text() == ",".join(DOC_COLUMNS) + "\n"
        inode = path.stat().st_ino
        for i in range(5):
            before = path.read_bytes()
            store.add_doc(doc_row(i))
            after = path.read_bytes()
            assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1  # nothing rewritten
    assert path.stat().st_ino == inode and len(lines(path)) == 1 + 5
    with ResultStore(tmp_path, one_rope(setup)) as again:
        assert [again.doc_score("c", f"d{i}") for i in range(5)] == [(100.0 + i / 3, 63) for i in range(5)]


def test_the_last_row_of_a_cell_counts(setup, tmp_path):
    row = dict.fromkeys(RESULT_COLUMNS, "") | {"model": "m", "rope": "r", "layer_mix": "native", "length": 64}
    row |= {"n_tokens": 126, "nll": "2.5"}
    with ResultStore(tmp_path, one_rope(setup)) as store:
        store.add_cell(row | {"cell": "a", "status": "oom"})
        store.add_cell(row | {"cell": "b", "status": "ok", "ppl": "20.5"})
        store.add_cell(row | {"cell": "a", "status": "ok", "ppl": "10.5"})  # retried
    assert len(lines(tmp_path / "results.csv")) == 1 + 3
    back = list(csv.DictReader(open_records(tmp_path / "results.csv")))
    assert [(r["cell"], r["status"], r["ppl"]) for r in back] == [("a", "ok", "10.5"), ("b", "ok", "20.5")]
    with ResultStore(tmp_path, one_rope(setup)) as store:
        assert store.done("a")


def test_a_line_with_the_wrong_field_count_is_dropped(setup, tmp_path):
    path = tmp_path / "documents.csv"
    good = [",".join(str(v) for v in doc_row(i).values()) + "\n" for i in range(3)]
    path.write_text(",".join(DOC_COLUMNS) + "\n" + good[0] + "c,m,r,native,64,d9,63,1.5,250\n" + good[1] + good[2])
    with pytest.warns(UserWarning, match=r"documents\.csv: 1 line\(s\) with a wrong number of fields"):
        store = ResultStore(tmp_path, one_rope(setup))
    store.close()
    assert sorted(doc for _, doc in store.docs) == ["d0", "d1", "d2"]


def cut(line: str, column: str, columns: list[str]) -> str:
    """``line`` as a write cut short one character into ``column``."""
    fields = line.rstrip("\n").split(",")
    return ",".join(fields[: columns.index(column)]) + "," + fields[columns.index(column)][:1]


@pytest.mark.parametrize(("torn", "column"), [(4, "nll_sum"), (7, "n_tokens"), (3, "doc"), (5, "blocks")])
def test_a_torn_document_line_is_recomputed_to_the_uninterrupted_numbers(setup, reference, tmp_path, torn, column):
    # the state of a run killed while appending documents.csv's line ``torn``: the lines before it,
    # and the rows of the cells all of whose documents they hold
    docs = lines(reference / "documents.csv")
    assert len(docs) == 1 + 8  # header; doc0@64,128; doc1@64,128,256,512; doc2@256; doc3@512
    out = tmp_path / "killed"
    shutil.copytree(reference, out)
    (out / "documents.csv").write_text("".join(docs[: 1 + torn]) + cut(docs[1 + torn], column, DOC_COLUMNS))
    written = {line.split(",")[0] for line in docs[1 : 1 + torn]}
    unfinished = {line.split(",")[0] for line in docs[1 + torn :]}
    results = lines(reference / "results.csv")
    kept = [line for line in results[1:] if line.split(",")[-1].strip() in written - unfinished]
    (out / "results.csv").write_text(results[0] + "".join(kept))
    with pytest.warns(UserWarning, match=r"documents\.csv: its last line was cut short"):
        summary = run_sweep(one_rope(setup), out, quiet=True)
    assert summary.ok and summary.computed == 4 - len(kept)
    assert (out / "documents.csv").read_text() == (reference / "documents.csv").read_text()
    assert rows(out / "results.csv") == rows(reference / "results.csv")


def test_a_torn_results_line_is_dropped_and_its_cell_written_again(setup, reference, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(reference, out)
    results = lines(reference / "results.csv")
    (out / "results.csv").write_text("".join(results[:-1]) + results[-1][: len(results[-1]) // 2])
    with pytest.warns(UserWarning, match=r"results\.csv: its last line was cut short"):
        summary = run_sweep(one_rope(setup), out, quiet=True)
    assert summary.ok and (summary.computed, summary.reused) == (1, 3)
    assert len(lines(out / "results.csv")) == len(results)  # the torn line is gone, not kept beside the new row
    assert read_back(out / "results.csv") == rows(reference / "results.csv")


def test_a_retried_cell_reads_back_as_its_last_row(setup, tmp_path, monkeypatch):
    real = perplexity.score_plan
    monkeypatch.setattr(perplexity_module, "score_plan", oom_at(512))
    assert [r["length"] for r in run_sweep(one_rope(setup), tmp_path, quiet=True).failed] == [512]
    monkeypatch.setattr(perplexity_module, "score_plan", real)
    assert run_sweep(one_rope(setup), tmp_path, quiet=True).ok
    assert len(rows(tmp_path / "results.csv")) == 5  # the failure, then the success
    back = read_back(tmp_path / "results.csv")
    assert len(back) == 4 and {r["status"] for r in back} == {"ok"}


def test_the_estimate_is_the_tokens_that_run(setup, tmp_path, monkeypatch):
    expected, pushed = [], []
    real_add, real_score = progress_module.Progress.add_plan, perplexity_module.score_plan

    def counting(model, ids):
        pushed.append(len(ids))
        return perplexity.token_nll(model, ids)

    def add_plan(self, config, plan, **kw):
        expected.append(plan.tokens)
        real_add(self, config, plan, **kw)

    monkeypatch.setattr(progress_module.Progress, "add_plan", add_plan)
    monkeypatch.setattr(perplexity_module, "score_plan", lambda *a, **kw: real_score(*a, **kw, nll_fn=counting))
    assert run_sweep(spec(setup), tmp_path, quiet=True).ok  # dynamic shares the default rope's passes
    assert sum(expected) == sum(pushed) > 0


def test_timings_are_a_log_beside_the_results(setup, reference, tmp_path):
    """results.csv holds no clock: each cell's seconds go to timings.csv, one line per row written,
    and a torn timings line is cut off like any other."""
    timings = lines(reference / "timings.csv")
    assert timings[0] == "cell,seconds\n" and len(timings) == 1 + 4
    cells = [r.rstrip("\n").split(",")[-1] for r in lines(reference / "results.csv")[1:]]
    assert [t.split(",")[0] for t in timings[1:]] == cells
    assert all(float(t.split(",")[1]) >= 0 for t in timings[1:])
    out = tmp_path / "killed"
    shutil.copytree(reference, out)
    (out / "timings.csv").write_text("".join(timings[:-1]) + timings[-1][:5])
    with pytest.warns(UserWarning, match=r"timings\.csv: its last line was cut short"):
        summary = run_sweep(one_rope(setup), out, quiet=True)
    assert summary.ok and summary.computed == 0 and lines(out / "timings.csv") == timings[:-1]
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
