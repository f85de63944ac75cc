"""Many workers on one results directory (issue 14): claims, leases and heartbeats, shards merged by
the holder of DIR, and the local executor. Every case ends with files holding each record of an
uninterrupted single-process run exactly once, to the bit (tests/sweep/test_faults.py's oracle)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import ropekit.sweep.status
from ropekit.cli import main
from ropekit.data import load_corpus
from ropekit.sweep import ResultStore
from ropekit.sweep.cells import plan_cells
from ropekit.sweep.claims import ClaimError, Claims, Unit, UnitLost
from ropekit.sweep.spec import SpecError, executor_spec
from ropekit.sweep.status import duration, sweep_status
from ropekit.sweep.units import shared_units, sweep_units
from tests.sweep import test_faults
from tests.sweep.test_faults import INJECT, ROOT, argv, assert_same_files, cli_spec

reference = test_faults.reference  # the uninterrupted single-process run (a module fixture)
small_disk = test_faults.small_disk  # a tmpfs of this test's own, where root may mount one


def command(setup: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ropekit.cli", *argv(setup, out), *extra]


def assert_merged(out: Path, reference: Path) -> None:
    """DIR holds every record once, no shard is left and no claim."""
    assert_same_files(out, reference)
    assert not (out / "shards").exists()
    assert not list((out / "claims").glob("*.json"))


# --- claims ---------------------------------------------------------------------------------


def unit(name: str) -> Unit:
    return Unit("tiny", [("native", name)], [f"{name}-cell"])


def test_a_unit_is_claimed_once_and_free_again_when_released(tmp_path):
    a, b = Claims(tmp_path, "a", lease=60), Claims(tmp_path, "b", lease=60)
    units = [unit("x"), unit("y")]
    assert a.claim(units, lambda u: False).id == units[0].id
    assert b.claim(units, lambda u: False).id == units[1].id  # x is a's
    assert a.claim(units, lambda u: u.id == units[0].id) is None  # x finished, y is b's
    assert [h["worker"] for h in a.others_working(units, lambda u: False)] == ["b"]
    b.release(units[1])
    assert a.claim(units, lambda u: u.id == units[0].id).id == units[1].id


def test_a_claim_without_heartbeat_is_taken_over_after_its_lease(tmp_path):
    x = unit("x")
    elsewhere = Claims(tmp_path, "elsewhere", lease=1.0)
    assert elsewhere.claim([x], lambda u: False) is not None
    path = tmp_path / "claims" / f"{x.id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "host": "another-host"}))  # not a pid of ours
    here = Claims(tmp_path, "here", lease=1.0)
    assert here.claim([x], lambda u: False) is None  # its lease runs
    time.sleep(1.3)
    assert here.claim([x], lambda u: False) is not None  # stale: taken over
    assert json.loads(path.read_text())["worker"] == "here"


def test_a_heartbeat_keeps_a_claim_and_a_taken_one_stops_its_unit(tmp_path):
    x = unit("x")
    a, b = Claims(tmp_path, "a", lease=0.8), Claims(tmp_path, "b", lease=0.8)
    a.claim([x], lambda u: False)
    path = tmp_path / "claims" / f"{x.id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "host": "another-host"}))
    with a.heartbeat(x):
        time.sleep(1.5)  # twice the lease: only the heartbeat keeps it
        assert b.claim([x], lambda u: False) is None
    time.sleep(1.0)  # no heartbeat: b takes it over, and a's check says so
    assert b.claim([x], lambda u: False) is not None
    with a.heartbeat(x):
        time.sleep(0.5)
    with pytest.raises(UnitLost):
        a.stop(x)()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    x = unit("x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    Claims(tmp_path, "dead", lease=3600).claim([x], lambda u: False)
    path = tmp_path / "claims" / f"{x.id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": int(dead.stdout)}))
    assert Claims(tmp_path, "here", lease=3600).claim([x], lambda u: False) is not None


def test_a_dead_workers_claim_on_a_finished_unit_is_removed_by_the_next_claim_pass(tmp_path):
    x, y = unit("x"), unit("y")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    Claims(tmp_path, "dead", lease=3600).claim([x], lambda u: False)
    Claims(tmp_path, "live", lease=3600).claim([y], lambda u: False)  # this process: alive
    path = tmp_path / "claims" / f"{x.id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": int(dead.stdout)}))
    assert Claims(tmp_path, "here", lease=3600).claim([x, y], lambda u: True) is None  # both finished
    assert [p.stem for p in (tmp_path / "claims").glob("*.json")] == [y.id]  # the live worker's is its own to drop


def test_a_filesystem_without_exclusive_create_is_refused(tmp_path, monkeypatch):
    real = os.open

    def lax(path, flags, *args):  # O_EXCL ignored, as on some network filesystems
        return real(path, flags & ~os.O_EXCL, *args)

    monkeypatch.setattr(os, "open", lax)
    with pytest.raises(ClaimError, match="without atomic exclusive create"):
        Claims(tmp_path, "a")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"executor": "pbs"}, "executor = 'pbs' is not an executor; expected one of inline, local, slurm"),
        ({"workers": 0}, "workers = 0 is not allowed; expected a positive integer"),
        ({"lease": -1}, "lease = -1 is not allowed; expected a positive number of seconds"),
        ({"partitions": "gpu"}, "executor: unknown key 'partitions'"),
    ],
)
def test_bad_executor_settings_name_the_key(table, message):
    with pytest.raises(SpecError, match=message):
        executor_spec(table)


def test_the_executor_is_not_part_of_the_spec_hash(setup, tmp_path):
    out = tmp_path / "out"
    spec = cli_spec(setup, out)
    more = cli_spec(setup, out).__class__(**{**spec.__dict__, "executor": executor_spec({"workers": 3})})
    assert more.sha256 == spec.sha256 and more.to_dict()["executor"] == {"workers": 3}


# --- workers on one DIR -------------------------------------------------------------------


def test_a_worker_killed_mid_append_leaves_a_torn_shard_line_and_its_unit_is_redone(setup, reference, tmp_path):
    out = tmp_path / "out"
    with ResultStore(out, cli_spec(setup, out)):  # the first sweep holds DIR: the others write shards
        scenario = {"where": "append", "n": 3, "signal": "SIGKILL", "argv": argv(setup, out)}
        scenario["stderr"] = str(tmp_path / "killed.err")
        (tmp_path / "kill.json").write_text(json.dumps([scenario]))
        run = subprocess.run([sys.executable, str(INJECT), str(tmp_path / "kill.json")], capture_output=True)
        assert run.returncode == 0, run.stderr
        (shard,) = (out / "shards").iterdir()
        assert not (shard / "documents.csv").read_bytes().endswith(b"\n")  # killed mid-line
        assert list((out / "claims").glob("*.json"))  # and its claim left behind
        assert main(argv(setup, out)) == 0  # its process is gone: its unit is taken over at once
    assert main(argv(setup, out)) == 0  # now holding DIR: merges both shards, the torn line left out
    assert_merged(out, reference)


def test_two_sweeps_started_by_hand_on_one_dir_share_it(setup, reference, tmp_path):
    out = tmp_path / "out"
    runs = [subprocess.Popen(command(setup, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()
    assert_merged(out, reference)


def test_local_workers_give_the_single_process_files(setup, reference, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(command(setup, out, "--workers", "2", "--lease", "30"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "8 cells in" in run.stdout
    assert_merged(out, reference)
    assert json.loads((out / "meta.json").read_text())["spec_sha256"] == cli_spec(setup, out).sha256
    # each (rope)'s unit is over half a worker's share of the sweep: one unit per document instead
    units = json.loads((out / "units.json").read_text())
    assert sorted(len(u["docs"]) for u in units) == [1, 1, 1, 1]
    assert sorted(key for u in units for key in u["cells"]) == sorted(2 * [r["cell"] for r in records(reference)])


def records(out: Path) -> list[dict]:
    return test_faults.records(out / "results.csv")


def test_rows_of_cells_whose_documents_were_stored_by_two_units_are_written_at_the_end(setup, reference, tmp_path):
    """Two units of one document each, finished at once on two workers, each before the other stored
    its document: neither wrote the cells' rows. The next worker to end writes them, to the bit, from
    DIR's plan (units.json, split for two workers) whatever its own settings (one worker here)."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "units.json").unlink()
    spec = cli_spec(setup, out)
    spec = dataclasses.replace(spec, executor=dataclasses.replace(spec.executor, workers=2))
    corpus = load_corpus(spec.corpus.path)
    cells = plan_cells(spec, corpus.sha256)[0]
    split = shared_units(out, sweep_units(spec, corpus, cells, {}), force=False).units
    assert [len(u.docs) for u in split] == [1, 1, 1, 1]
    kept = [line for line in (reference / "results.csv").read_text().splitlines(keepends=True) if "yarn" not in line]
    (out / "results.csv").write_text("".join(kept))  # the yarn cells' rows never written
    timings = (out / "timings.csv").read_text()
    assert main(argv(setup, out)) == 0
    assert_same_files(out, reference)
    assert json.loads((out / "units.json").read_text()) == [u.record() for u in split]  # DIR's plan, taken
    assert (out / "timings.csv").read_text() == timings  # no unit ran: the rows came from the stored documents


def test_a_worker_killed_under_local_workers_fails_nothing_when_the_others_finish_its_units(setup, reference, tmp_path):
    """Issue 28, 6: of ``--workers 2``, the first to claim a unit is killed there (SIGKILL); the other
    takes its unit over. Every cell is done: exit 0, one line says what happened, no semaphore leaks."""
    out = tmp_path / "out"
    scenario = {"where": "claim", "n": 1, "signal": "SIGKILL", "once": str(tmp_path / "killed")}
    scenario |= {"argv": [*argv(setup, out), "--workers", "2", "--lease", "30"], "stderr": str(tmp_path / "err")}
    (tmp_path / "kill.json").write_text(json.dumps([scenario]))
    run = subprocess.run(
        [sys.executable, str(INJECT), str(tmp_path / "kill.json")], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "killed").exists()  # a worker took the signal
    err = (tmp_path / "err").read_text()
    assert json.loads(run.stdout.splitlines()[-1]) == [0], err  # exit 0
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    notes = [line for line in run.stdout.splitlines() if "note:" in line or "FAILED" in line]
    assert len(notes) == 1 and "8 cells in" in run.stdout and " 0 failed" in run.stdout
    assert re.fullmatch(
        r"  note: worker [01] stopped \(killed by SIGKILL\); its units were finished by the others", notes[0]
    )
    assert_merged(out, reference)
    assert (
        sweep_status(out).text().splitlines()[0]
        == f"{out}: 8 of 8 cells done, 0 running, 0 pending, 0 failed (finished)"
    )


def test_a_claim_left_by_a_worker_killed_before_its_release_is_removed_by_the_next_run(setup, reference, tmp_path):
    """Issue 28, 7: killed after its unit's last row, before it let go of the claim: the claim names a
    finished unit, which no worker takes over; status does not count it, and the next run removes it."""
    out = tmp_path / "out"
    scenario = {"where": "release", "n": 1, "signal": "SIGKILL", "argv": argv(setup, out)}
    scenario["stderr"] = str(tmp_path / "err")
    (tmp_path / "kill.json").write_text(json.dumps([scenario]))
    run = subprocess.run([sys.executable, str(INJECT), str(tmp_path / "kill.json")], cwd=ROOT, capture_output=True)
    assert run.returncode == 0, run.stderr
    (left,) = (out / "claims").glob("*.json")
    (done,) = [u for u in json.loads((out / "units.json").read_text()) if u["id"] == left.stem]
    head, n = sweep_status(out).text().splitlines()[0], len(done["cells"])
    assert head == f"{out}: {n} of 8 cells done, 0 running, {8 - n} pending, 0 failed (stopped)"
    assert main(argv(setup, out)) == 0
    assert_merged(out, reference)  # no claim left


def test_force_with_several_workers_is_refused_before_anything_runs(setup, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    assert main([*argv(setup, out), "--workers", "2", "--force"]) == 2
    assert "--force rewrites DIR, which one process must do alone" in capsys.readouterr().err
    assert_same_files(out, reference)


def frozen_clock(monkeypatch) -> datetime:
    """Now, as status's clock will read it for the rest of the test: its "so far" and rate do not drift
    with how long the test takes to get there."""
    now = datetime.now(timezone.utc)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return now

    monkeypatch.setattr(ropekit.sweep.status, "datetime", Frozen)
    return now


def test_status_says_what_is_done_running_and_pending_while_a_worker_runs(
    setup, reference, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    assert main(["status", str(out)]) == 0
    assert (
        capsys.readouterr().out.splitlines()[0]
        == f"{out}: 8 of 8 cells done, 0 running, 0 pending, 0 failed (finished)"
    )
    units = json.loads((out / "units.json").read_text())
    running = Unit(units[0]["model"], [(p["layer_mix"], p["rope"]) for p in units[0]["parts"]], units[0]["cells"])
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not any(line.rstrip().endswith(key) for key in running.cells)]
    (out / "results.csv").write_text("".join(kept))  # that unit's rows not written yet
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("finished")
    started = frozen_clock(monkeypatch) - timedelta(seconds=600)  # this run started 10 min ago, none done before
    meta |= {"run_started": started.isoformat(), "cells_done_at_start": 0, "nominal_done_at_start": 0.0}
    (out / "meta.json").write_text(json.dumps(meta))
    Claims(out, "worker-7", lease=60).claim([running], lambda u: False)
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"{out}: 4 of 8 cells done, 4 running, 0 pending, 0 failed"
    part = units[0]["parts"][0]
    assert f"  running {units[0]['model']} {part['layer_mix']}/{part['rope']}: 0/4 cells, worker " in text
    assert "worker worker-7 (pid" in text
    assert "rate: 24.0 cells/hour in this run (10m00s so far)" in text  # 4 cells in 600 s
    # the other units' nominal seconds took 600 s: the running one's take its share of that
    done_nominal = sum(u["seconds"] for u in units[1:])
    left = sweep_status(out).seconds_left()
    assert left == pytest.approx(units[0]["seconds"] * 600 / done_nominal, rel=0.01)
    (out / "units.json").unlink()  # as a ropekit before workers left it: units planned from the spec
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"{out}: 4 of 8 cells done, 4 running, 0 pending, 0 failed"
    assert "time left: not estimated (a DIR from a ropekit before units.json holds no unit costs)" in text


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def unit_of(record: dict) -> Unit:
    return Unit(record["model"], [(p["layer_mix"], p["rope"]) for p in record["parts"]], record["cells"])


def without_rows(out: Path, cells: list[str]) -> None:
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(line for line in lines if line.rstrip().rsplit(",", 1)[-1] not in cells))


def killed_holder(out: Path, minutes: float, now: datetime | None = None) -> None:
    """``out``'s meta.json and lock as a run that started ``minutes`` ago, with nothing done before it, and
    whose holder of DIR was killed: no "finished", no wall time, and the process named in DIR/.lock gone."""
    meta = json.loads((out / "meta.json").read_text())
    for key in ("finished", "wall_seconds", "total_wall_seconds"):
        meta.pop(key)
    started = (now or datetime.now(timezone.utc)) - timedelta(minutes=minutes)
    meta |= {"run_started": started.isoformat(), "cells_done_at_start": 0, "nominal_done_at_start": 0.0}
    (out / "meta.json").write_text(json.dumps(meta))
    (out / ".lock").write_text(f"pid {dead_pid()} on {socket.gethostname()} since {started.isoformat()}\n")


def test_status_of_a_sweep_whose_holder_was_killed_says_finished_or_stopped_and_no_rate(
    setup, reference, tmp_path, monkeypatch
):
    """Issue 28, 5a: the holder of DIR (the worker that writes "finished") killed; the others finished the
    cells, or none runs. A rate over the time since the run started would only fall, a time left only grow."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    killed_holder(out, minutes=10, now=frozen_clock(monkeypatch))
    text = sweep_status(out).text()
    assert text.splitlines() == [f"{out}: 8 of 8 cells done, 0 running, 0 pending, 0 failed (finished)"]
    first = json.loads((out / "units.json").read_text())[0]
    without_rows(out, first["cells"])
    text = sweep_status(out).text()  # none runs: the holder has gone and nothing is claimed
    assert text.splitlines() == [
        f"{out}: 4 of 8 cells done, 0 running, 4 pending, 0 failed (stopped)",
        "nothing runs (no unit is claimed; every sweep that held DIR or a shard has gone): the same command resumes",
    ]
    Claims(out, "worker-7", lease=60).claim([unit_of(first)], lambda u: False)  # another worker runs it
    text = sweep_status(out).text()
    assert text.splitlines()[:2] == [
        f"{out}: 4 of 8 cells done, 4 running, 0 pending, 0 failed",
        "rate: 24.0 cells/hour in this run (10m00s so far)",
    ]


def test_the_rate_of_a_resumed_sweep_counts_the_cells_it_computed(setup, reference, tmp_path):
    """Issue 28, 5b: a run killed with 4 of 8 cells done (it never wrote its wall time), then resumed: the
    rate is the 4 cells the resumed run computed over its own seconds, not all 8 over them."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    killed_holder(out, minutes=10)
    cells = json.loads((out / "units.json").read_text())[0]["cells"]
    without_rows(out, cells)
    documents = (out / "documents.csv").read_text().splitlines(keepends=True)
    (out / "documents.csv").write_text("".join(line for line in documents if line.split(",")[0] not in cells))
    assert main(argv(setup, out)) == 0  # scores 4 cells' documents, stored to the millisecond
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cells_done_at_start"] == 4 and meta["total_wall_seconds"] == meta["wall_seconds"]
    seconds = meta["wall_seconds"]
    assert seconds > 0
    assert sweep_status(out).text().splitlines() == [
        f"{out}: 8 of 8 cells done, 0 running, 0 pending, 0 failed (finished)",
        f"rate: {4 / seconds * 3600:.1f} cells/hour in the last run (4 cells over {duration(seconds)})",
    ]


def status_scene(reference: Path, out: Path) -> str:
    """``out`` while a worker runs a unit (its claim by this process), another worker's rows still in its
    shard (it has gone), and the holder of DIR killed; returns the first line status must print."""
    shutil.copytree(reference, out)
    killed_holder(out, minutes=10)
    units = json.loads((out / "units.json").read_text())
    without_rows(out, units[0]["cells"])
    Claims(out, "worker-7", lease=60).claim([unit_of(units[0])], lambda u: False)
    shard = out / "shards" / "slurm-1_1"
    shard.mkdir(parents=True)
    header, *rows = (out / "results.csv").read_text().splitlines(keepends=True)
    moved = [row for row in rows if row.rstrip().rsplit(",", 1)[-1] in units[1]["cells"]]
    (shard / "results.csv").write_text(header + "".join(moved))  # merging it would write DIR's results.csv
    without_rows(out, units[1]["cells"])
    (shard / ".lock").write_text(f"pid {dead_pid()} on {socket.gethostname()} since 2025-01-01T00:00:00+00:00\n")
    return f"{out}: 4 of 8 cells done, 4 running, 0 pending, 0 failed"


AUDITED_STATUS = """
import os, sys
sys.dont_write_bytecode = True  # Python's caches of compiled modules are not status's writes
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.utime", "os.link", "os.symlink", "os.truncate",
           "os.chmod", "os.chown", "shutil.rmtree", "fcntl.flock"}
def audit(event, args):
    if event == "open" and args[2] & WRITES or event in CHANGES:
        os.write(2, f"status wrote: {event} {args}".encode())
        os._exit(3)
sys.addaudithook(audit)
from ropekit.cli import main
sys.exit(main(["status", sys.argv[1]]))
"""


def test_status_writes_nothing_anywhere(reference, tmp_path):
    """Issue 28, 5c: every open for writing, every file created, renamed, removed, touched or locked, in
    any folder, stops the status process (an audit hook, PEP 578)."""
    out = tmp_path / "out"
    first = status_scene(reference, out)
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    run = subprocess.run([sys.executable, "-c", AUDITED_STATUS, str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == first
    assert "worker worker-7 (pid" in run.stdout
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_status_reads_a_read_only_dir(reference, small_disk, capsys):
    out = small_disk / "out"
    first = status_scene(reference, out)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["status", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == first


def test_status_of_a_folder_without_a_sweep_is_one_line(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    expected = f"ropekit status: error: {tmp_path} holds no sweep (no meta.json); start one with ropekit sweep --out "
    assert capsys.readouterr().err == f"{expected}{tmp_path}\n"


def test_slurm_without_sbatch_on_path_is_one_line_and_nothing_is_written(setup, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main([*argv(setup, out), "--executor", "slurm", "--workers", "2"]) == 2
    assert capsys.readouterr().err == (
        "ropekit sweep: error: executor = 'slurm' needs Slurm's sbatch, and none is on PATH; run where Slurm is, "
        "or use --executor local\n"
    )
    assert not out.exists()


def test_slurm_settings_without_the_slurm_executor_are_refused(setup, tmp_path, capsys):
    assert main([*argv(setup, tmp_path / "out"), "--partition", "gpu"]) == 2
    assert "partition is a Slurm setting, but executor = 'local'; add executor = 'slurm'" in capsys.readouterr().err
