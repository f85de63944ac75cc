"""Every failure path of a sweep (issue 11): whatever stops it (a kill at any moment, Ctrl-C, a torn
line at any byte, a full disk, a second writer), the same command then finishes with files equal
to an uninterrupted run's, recomputing nothing that was stored, and the user sees one line per
event, never a traceback.

A small CLI sweep on the tiny checkpoint (2 ropes x 4 lengths, 2 documents each: 8 cells, 16
document scores, 8 timings) is the oracle; each case breaks a copy of it and compares. Runs killed by a
signal are subprocesses with a fault injected at the n-th write (tests/sweep/inject.py).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ropekit import cache
from ropekit.cli import _kept, build_parser, main, sweep_spec_from_args
from ropekit.sweep import ResultStore
from ropekit.sweep import store as store_module
from ropekit.sweep.claims import Claims
from ropekit.sweep.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).with_name("inject.py")


def argv(setup: Path, out: Path) -> list[str]:
    return [
        "sweep",
        "--quiet",
        "--no-report",
        "--out",
        str(out),
        "--model",
        str(setup / "tiny"),
        "--corpus",
        str(setup / "corpus"),
        "--lengths",
        "64,128,256,512",
        "--rope",
        "default",
        "--rope",
        "yarn:4",
        "--n-docs",
        "2",
    ]


def records(path: Path) -> list[dict]:
    """A results file's rows (every column: results.csv holds no clock), in a canonical order."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return sorted(rows, key=lambda r: (r["cell"], r.get("doc", "")))


def assert_same_files(out: Path, reference: Path) -> None:
    """The files of ``out`` hold exactly the reference's records, each once, to the bit, and no
    temporary is left."""
    for name in ("results.csv", "documents.csv"):
        assert records(out / name) == records(reference / name), name
    assert (out / "plans.json").read_text() == (reference / "plans.json").read_text()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def one_line_each(err: str, prefix: str = "ropekit sweep: ") -> list[str]:
    lines = err.splitlines()
    assert "Traceback" not in err and all(line.startswith(prefix) for line in lines), err
    return lines


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert main(argv(setup, out)) == 0
    assert len(records(out / "results.csv")) == 8 and len(records(out / "documents.csv")) == 16
    return out


def resume(setup, out, capsys) -> list[str]:
    """The same command again: it must finish, and say only one-line notes."""
    capsys.readouterr()
    assert main(argv(setup, out)) == 0
    return one_line_each(capsys.readouterr().err)


# --- torn lines at every byte --------------------------------------------------------------


def killed_while_appending(reference: Path, out: Path, name: str, cut: int) -> None:
    """``out`` as a run killed ``cut`` bytes into the last line of ``name``: the lines before it,
    and results rows only for cells whose every document line was whole."""
    shutil.copytree(reference, out)
    lines = (reference / name).read_text().splitlines(keepends=True)
    (out / name).write_text("".join(lines[:-1]) + lines[-1][:cut])
    if name == "documents.csv":
        torn_cell = lines[-1].split(",")[0]
        results = (reference / "results.csv").read_text().splitlines(keepends=True)
        (out / "results.csv").write_text("".join(r for r in results if not r.rstrip().endswith(torn_cell)))


@pytest.mark.parametrize("name", ["documents.csv", "results.csv"])
def test_a_line_torn_at_every_byte_is_never_read_and_the_rerun_is_exact(setup, reference, tmp_path, capsys, name):
    last = (reference / name).read_text().splitlines(keepends=True)[-1]
    for cut in range(1, len(last)):  # every prefix of the record, up to all of it but its newline
        out = tmp_path / f"cut{cut}"
        killed_while_appending(reference, out, name, cut)
        notes = resume(setup, out, capsys)
        assert notes == [
            f"ropekit sweep: note: {out / name}: its last line was cut short (a write interrupted); ignored and removed"
        ], cut
        assert_same_files(out, reference)
        assert records(out / "results.csv") == records(reference / "results.csv")  # one row per cell


def test_a_whole_line_with_unreadable_numbers_is_computed_again(setup, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    docs = (out / "documents.csv").read_text().splitlines(keepends=True)
    cell = docs[3].split(",")[0]
    docs[3] = docs[3].rsplit(",", 1)[0] + ",abc\n"  # a damaged nll_sum
    (out / "documents.csv").write_text("".join(docs))
    results = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(r for r in results if not r.rstrip().endswith(cell)))
    notes = resume(setup, out, capsys)
    assert notes == [
        f"ropekit sweep: note: {out / 'documents.csv'}: 1 line(s) with unreadable numbers ignored; computed again"
    ]
    assert records(out / "results.csv") == records(reference / "results.csv")
    with (out / "documents.csv").open() as f:
        last = {(r["cell"], r["doc"]): r for r in csv.DictReader(f)}  # the damaged line, then its recomputed one
    assert sorted(last.values(), key=lambda r: (r["cell"], r["doc"])) == records(reference / "documents.csv")


# --- kills and interrupts at every write ---------------------------------------------------


APPENDS = 8 + 16 + 8  # results rows, document lines and timings lines of a clean run
KILLS = [("append", n, "SIGKILL") for n in range(1, APPENDS + 1)]
KILLS += [("replace", n, "SIGKILL") for n in (1, 2, 3)]  # meta.json, plans.json, meta.json at the end
INTERRUPTS = [("append", 1, "SIGINT"), ("append", 9, "SIGINT"), ("append", APPENDS, "SIGINT")]
INTERRUPTS += [("append", 5, "SIGTERM"), ("replace", 3, "SIGINT")]


@pytest.fixture(scope="module")
def stopped(setup, tmp_path_factory):
    """Every scenario run once, by one process forking a child per scenario: (scenario) -> (the
    child's results directory, wait status, stderr)."""
    base = tmp_path_factory.mktemp("stopped")
    scenarios = [
        {
            "where": w,
            "n": n,
            "signal": how,
            "argv": argv(setup, base / f"{w}{n}{how}"),
            "stderr": str(base / f"{w}{n}{how}.err"),
        }
        for w, n, how in KILLS + INTERRUPTS
    ]
    (base / "scenarios.json").write_text(json.dumps(scenarios))
    done = subprocess.run(
        [sys.executable, str(INJECT), str(base / "scenarios.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout.splitlines()[-1])
    return {
        (s["where"], s["n"], s["signal"]): (Path(s["argv"][4]), status, Path(s["stderr"]).read_text())
        for s, status in zip(scenarios, statuses, strict=True)
    }


@pytest.mark.parametrize(("where", "n", "how"), KILLS)
def test_sigkill_at_every_write_then_the_same_command_finishes_exactly(
    setup, reference, stopped, capsys, where, n, how
):
    out, status, _ = stopped[where, n, how]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    stored = len(cache.read_csv(out / "documents.csv")[1])  # whole lines only
    notes = resume(setup, out, capsys)
    assert all("cut short" in note for note in notes) and len(notes) == (where == "append")
    assert_same_files(out, reference)
    if where == "append":  # nothing stored was computed again: one more line than was whole
        assert len((out / "documents.csv").read_text().splitlines()) == 1 + 16
        assert stored <= 16


@pytest.mark.parametrize(("where", "n", "how"), INTERRUPTS)
def test_an_interrupt_says_what_is_kept_in_one_line_and_the_rerun_finishes(
    setup, reference, stopped, capsys, where, n, how
):
    out, status, err = stopped[where, n, how]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.Signals[how].value, err
    kept = sum(r["status"] == "ok" for r in csv.DictReader(cache.open_records(out / "results.csv")))
    what = "interrupted" if how == "SIGINT" else f"stopped by {how}"
    assert one_line_each(err) == [
        f"ropekit sweep: {what}; {kept} of 8 cells are kept in {out}; the same command resumes"
    ]
    resume(setup, out, capsys)
    assert_same_files(out, reference)


def test_what_an_interrupted_sweep_keeps_counts_a_cell_per_task(tmp_path):
    """Each (model, layer mix, rope, length) holds a cell per task: 2 ropes x 2 lengths x 3 tasks are 12
    cells, of which the one with status ok is kept (a sweep of 10 cells once said "8 of 2 cells")."""
    spec = spec_from_dict(
        {
            "models": ["smollm2-135m"],
            "corpus": "shakespeare",
            "lengths": [1024, 4096],
            "ropes": {"default": "default", "yarn": "yarn:2"},
            "tasks": ["perplexity", "passkey", "vt"],
        }
    )
    (tmp_path / "results.csv").write_text("cell,status\na,ok\nb,error\n")
    assert _kept(tmp_path, spec) == f"1 of 12 cells are kept in {tmp_path}; the same command resumes"


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs where this machine lets the tests mount one (root), else skipped."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root; the injected-ENOSPC tests cover the same paths")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, pytest.raises(OSError, match="No space left"):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_a_disk_that_fills_mid_sweep(setup, reference, small_disk, capsys, monkeypatch):
    out = small_disk / "out"
    real, filled = store_module.append_lines, []

    def append(path, columns, *rows):  # another process fills the disk after each score
        real(path, columns, *rows)
        filled.append(fill(small_disk))

    def release(self, unit):  # and takes what a released claim frees
        real_release(self, unit)
        fill(small_disk)

    real_release = Claims.release
    monkeypatch.setattr(store_module, "append_lines", append)
    monkeypatch.setattr(Claims, "release", release)
    assert main(argv(setup, out)) == 2
    (line,) = one_line_each(capsys.readouterr().err)
    assert "No space left on device" in line and f"{out}/" in line and "the same command resumes" in line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    filled[0].unlink()
    monkeypatch.setattr(store_module, "append_lines", real)
    monkeypatch.setattr(Claims, "release", real_release)
    resume(setup, out, capsys)
    assert_same_files(out, reference)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)  # and read-only
    assert main(argv(setup, out)) == 2
    (line,) = one_line_each(capsys.readouterr().err)
    assert "Read-only file system" in line
    assert_same_files(out, reference)


def test_enospc_in_an_append_leaves_a_torn_line_that_the_rerun_removes(setup, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_write, writes = os.write, []

    def write(fd, data):  # the 6th record gets half its bytes on disk, then the disk is full
        writes.append(len(data))
        if len(writes) == 6:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(store_module.os, "write", write)
    assert main(argv(setup, out)) == 2
    (line,) = one_line_each(capsys.readouterr().err)
    assert "[Errno 28] No space left on device" in line and f"{out}/" in line and "cells are kept" in line
    monkeypatch.setattr(store_module.os, "write", real_write)
    notes = resume(setup, out, capsys)
    assert len(notes) == 1 and "cut short" in notes[0]
    assert_same_files(out, reference)


def test_enospc_in_an_atomic_write_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    target.write_text("old")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as err:
        cache.atomic_write(target, "new")
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    monkeypatch.setattr(cache.os, "fsync", real_fsync)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_a_token_cache_that_cannot_be_written_or_read_is_one_note(setup, reference, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))
    real = cache.atomic_write

    def no_space_for_tokens(path, data):
        if Path(path).suffix == ".npz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr("ropekit.data.tokens.atomic_write", no_space_for_tokens)
    capsys.readouterr()
    assert main(argv(setup, tmp_path / "a")) == 0
    (note,) = one_line_each(capsys.readouterr().err)
    assert note.startswith("ropekit sweep: note: could not cache the tokens ([Errno 28]") and "going on" in note
    monkeypatch.setattr("ropekit.data.tokens.atomic_write", real)
    assert main(argv(setup, tmp_path / "b")) == 0  # writes the cache
    (cached,) = (tmp_path / "cache" / "tokens").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # a cache file cut short
    capsys.readouterr()
    assert main(argv(setup, tmp_path / "c")) == 0
    (note,) = one_line_each(capsys.readouterr().err)
    assert note.startswith(f"ropekit sweep: note: token cache {cached} is unreadable") and "rebuilding it" in note
    for out in ("a", "b", "c"):
        assert_same_files(tmp_path / out, reference)


# --- two writers ---------------------------------------------------------------------------


def test_a_second_sweep_works_beside_the_first_in_a_shard_merged_by_the_holder(setup, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    with ResultStore(out, cli_spec(setup, out)):  # another sweep holds the directory
        resume(setup, out, capsys)  # every cell is stored: nothing to do
        assert_same_files(out, reference)
    fresh = tmp_path / "fresh"
    with ResultStore(fresh, cli_spec(setup, fresh)) as first:  # holds DIR, runs nothing (as if on a long unit)
        resume(setup, fresh, capsys)  # this one runs every unit, into its shard, and cannot merge
        assert (fresh / "results.csv").read_text().count("\n") == 1  # the header
        (shard,) = (fresh / "shards").iterdir()
        assert records(shard / "results.csv") == records(reference / "results.csv")
        first.refresh()
        assert all(first.done(row["cell"]) for row in records(reference / "results.csv"))
        assert first.merge() == 8 + 16 + 8 and not (fresh / "shards").exists()  # rows, documents, timings
        assert first.merge() == 0  # merging again changes nothing
    resume(setup, fresh, capsys)  # the same command again: nothing to compute (it writes meta.json and plans.json)
    assert_same_files(fresh, reference)


def cli_spec(setup: Path, out: Path):
    """The spec the CLI builds from :func:`argv`."""
    return sweep_spec_from_args(build_parser().parse_args(argv(setup, out)))


def test_temporaries_of_dead_writers_are_removed_live_ones_kept(setup, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    host = cache.socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {
        "dead": f".meta.json.{host}-{int(dead.stdout)}-abc123.tmp",
        "live": f".meta.json.{host}-{os.getpid()}-def456.tmp",
        "old": ".results.csv.otherhost-1-xyz.tmp",
    }
    for name in names.values():
        (out / name).write_text("partial")
    os.utime(out / names["old"], (0, 0))
    resume(setup, out, capsys)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == [names["live"]]
