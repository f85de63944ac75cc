"""The Slurm executor on a real Slurm (issue 14): scripts/slurm-up.sh starts a one-node cluster, which
.ci/run does before the tests; where none runs these skip, saying so. Each case ends with DIR's files
holding each record of the single-process run (tests/sweep/test_faults.py's oracle) exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ropekit.cli import main
from tests.sweep import test_faults
from tests.sweep.test_faults import argv, assert_same_files

reference = test_faults.reference  # the uninterrupted single-process run (a module fixture)


def slurm_problem() -> str | None:
    """Why these tests cannot run here, or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no Slurm on PATH (scripts/slurm-up.sh starts a one-node cluster)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'ropekit[slurm]')"
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if state.returncode or not {"idle", "mix", "alloc"} & set(state.stdout.split()):
        return f"Slurm has no node up ({(state.stdout + state.stderr).strip() or 'sinfo said nothing'})"
    return None


pytestmark = pytest.mark.skipif(bool(problem := slurm_problem()), reason=problem or "")


def sweep(setup: Path, out: Path, *extra: str, wait: bool = True) -> subprocess.CompletedProcess:
    flags = ["--executor", "slurm", "--workers", "2", "--lease", "10", "--time", "30", *extra]
    command = [sys.executable, "-m", "ropekit.cli", *argv(setup, out), *flags, *(["--wait"] if wait else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def submitted(setup: Path, out: Path, *extra: str) -> str:
    """Submit without waiting; the array's id."""
    run = sweep(setup, out, *extra, wait=False)
    assert run.returncode == 0, run.stderr
    return json.loads((out / "slurm" / "jobs.json").read_text())["array"]


def wait_for(condition, what: str, timeout: float = 300, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(poll)


def queued(array: str) -> bool:
    jobs = subprocess.run(["squeue", "-h", "-j", array, "-o", "%i"], capture_output=True, text=True)
    return bool(jobs.stdout.strip())


def scored(out: Path) -> int:
    """Document lines stored in DIR and every shard."""
    files = [out / "documents.csv", *out.glob("shards/*/documents.csv")]
    return sum(max(0, f.read_text().count("\n") - 1) for f in files if f.exists())


def assert_merged(out: Path, reference: Path) -> None:
    assert_same_files(out, reference)
    assert not (out / "shards").exists() and not list((out / "claims").glob("*.json"))


def test_an_array_of_two_workers_gives_the_single_process_files(setup, reference, tmp_path):
    out = tmp_path / "out"
    run = sweep(setup, out, "--sbatch=--comment=ropekit-test", "--cpus-per-task", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "submitted Slurm job array" in run.stdout and "8 cells in" in run.stdout
    assert_merged(out, reference)
    (script,) = (out / "slurm").rglob("*_submission.sh")  # the array's sbatch file, as submitit wrote it
    lines = set(script.read_text().splitlines())
    assert {"#SBATCH --comment=ropekit-test", "#SBATCH --cpus-per-task=1", "#SBATCH --time=30"} <= lines
    assert "#SBATCH --array=0-1%2" in lines


def test_scancel_of_the_array_then_the_same_command_resumes(setup, reference, tmp_path):
    out = tmp_path / "out"
    array = submitted(setup, out)
    wait_for(lambda: scored(out) > 0, "the first document score")
    subprocess.run(["scancel", array], check=True)
    wait_for(lambda: not queued(array), "the array to leave the queue")
    run = sweep(setup, out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_merged(out, reference)


FOUR_ROPES = ["--rope", "linear:2", "--rope", "dynamic:3"]  # with argv's two: four units, a wider window


def test_a_worker_killed_mid_unit_has_its_unit_taken_over(setup, tmp_path):
    reference, out, claims = tmp_path / "reference", tmp_path / "out", tmp_path / "out" / "claims"
    assert main([*argv(setup, reference), *FOUR_ROPES]) == 0
    array = submitted(setup, out, *FOUR_ROPES)
    wait_for(lambda: list(claims.glob("*.json")), "a worker's first claim", poll=0.02)
    victim = json.loads(next(claims.glob("*.json")).read_text())
    os.kill(victim["pid"], signal.SIGKILL)  # one node: its process is ours to kill
    wait_for(lambda: not queued(array), "the array to finish")
    merge = subprocess.run([sys.executable, "-m", "ropekit.cli", "status", str(out)], capture_output=True, text=True)
    assert merge.returncode == 0, merge.stderr
    assert merge.stdout.startswith(f"{out}: 16 of 16 cells done, 0 running, 0 pending, 0 failed"), merge.stdout
    assert_merged(out, reference)


def restarts(job: str) -> int:
    """How often Slurm has requeued ``job`` (an array task ``<array>_<task>``)."""
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next((int(word.split("=")[1]) for word in shown.split() if word.startswith("Restarts=")), 0)


def test_a_preempted_task_is_requeued_and_resumes_its_unit(setup, tmp_path):
    """Slurm signals a task it is about to preempt (or that reaches its time limit) with USR2, as
    submitit asks it to; submitit checkpoints (the worker's ``checkpoint``: the same call) and
    requeues the task, which comes back as the same worker and takes its own claim back."""
    reference, out, claims = tmp_path / "reference", tmp_path / "out", tmp_path / "out" / "claims"
    assert main([*argv(setup, reference), *FOUR_ROPES]) == 0
    array = submitted(setup, out, *FOUR_ROPES)
    wait_for(lambda: list(claims.glob("*.json")), "a worker's first claim", poll=0.02)
    task = json.loads(next(claims.glob("*.json")).read_text())["worker"].removeprefix("slurm-")
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    wait_for(lambda: restarts(task) > 0, f"task {task} to be requeued")
    wait_for(lambda: not queued(array), "the array to finish")
    merge = subprocess.run([sys.executable, "-m", "ropekit.cli", "status", str(out)], capture_output=True, text=True)
    assert merge.returncode == 0, merge.stderr
    assert merge.stdout.startswith(f"{out}: 16 of 16 cells done, 0 running, 0 pending, 0 failed"), merge.stdout
    assert_merged(out, reference)
