"""Many workers on one results directory (issue 14): claims, leases and heartbeats, shards merged by
the holder of DIR, and the local executor. Every case ends with files holding each record of an
uninterrupted single-process run exactly once, to the bit (tests/sweep/test_faults.py's oracle)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ropekit.cli import main
from ropekit.data import load_corpus
from ropekit.sweep import ResultStore
from ropekit.sweep.cells import plan_cells
from ropekit.sweep.claims import ClaimError, Claims, Unit, UnitLost
from ropekit.sweep.spec import SpecError, executor_spec
from ropekit.sweep.status import sweep_status
from ropekit.sweep.units import shared_units, sweep_units
from tests.sweep import test_faults
from tests.sweep.test_faults import INJECT, argv, assert_same_files, cli_spec

reference = test_faults.reference  # the uninterrupted single-process run (a module fixture)


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


def test_force_with_several_workers_is_refused_before_anything_runs(setup, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    assert main([*argv(setup, out), "--workers", "2", "--force"]) == 2
    assert "--force rewrites DIR, which one process must do alone" in capsys.readouterr().err
    assert_same_files(out, reference)


def test_status_says_what_is_done_running_and_pending_while_a_worker_runs(setup, reference, tmp_path, capsys):
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
    started = datetime.now(timezone.utc) - timedelta(seconds=600)  # this run started 10 min ago, none done before
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
