"""A search's workers as the tasks of a Slurm array, on a real Slurm (scripts/slurm-up.sh starts a one-node
cluster, as .ci/run does; without one these skip, saying why). The array's tasks share one search directory
through the claims, as the workers of tests/search/test_run.py do: each candidate is scored by exactly one
of them, and the search ends where one process running it alone ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.search.test_cli import write_spec
from tests.search.test_run import assert_shared_like_alone
from tests.sweep.test_slurm import queued, slurm_problem, wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(bool(problem := slurm_problem()), reason=problem or "")


def test_the_tasks_of_a_slurm_array_share_one_search(tiny, tmp_path):
    spec = write_spec(tmp_path, tiny)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROPEKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    alone = tmp_path / "alone"
    command = [sys.executable, "-m", "ropekit.cli", "search", str(spec)]
    done = subprocess.run([*command, "--out", str(alone)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "shared"
    wrap = " ".join([*command, "--out", str(out)])
    logs = f"--output={tmp_path}/slurm-%A_%a.out"
    submit = ["sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1", "--time=10", "--comment=ropekit-test"]
    submitted = subprocess.run([*submit, logs, f"--wrap={wrap}"], env=env, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    array = submitted.stdout.strip().split(";")[0]
    wait_for(lambda: not queued(array), "the array's tasks to end", timeout=600, poll=0.5)
    said = "\n".join(p.read_text() for p in sorted(tmp_path.glob("slurm-*.out")))
    assert said.count("wrote ") == 2, said  # both tasks ended on the result, nothing failed
    assert_shared_like_alone(out, alone, said)
