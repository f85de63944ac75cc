"""The Slurm executor: the sweep's workers as the tasks of one job array, submitted through submitit.

Each array task runs ``run_sweep`` on the results directory (which the cluster's nodes share) as
the worker ``slurm-<array job>_<task>`` and claims units until none is left (``ropekit.sweep.claims``).
A task that Slurm preempts or that reaches its time limit is requeued by submitit's checkpointing
(the worker's ``checkpoint`` resubmits the same call), and the requeued task, having the same worker
id, takes its own claim back at once and resumes its unit from what it stored. The submitting
command returns once the array is queued, printing its id and DIR, or with ``wait`` waits for it and
returns the summary. ``scancel`` of the array and the same command again resumes the sweep. Its
logs and ``jobs.json`` go to DIR/slurm/, refused where a symbolic link is there or in it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...cache import no_links
from ..spec import SpecError
from .registry import Executor, Launch, Option, finish_workers, register_executor, start_workers

# sbatch's options of the same names (``time`` in minutes: a task at its limit is requeued and resumes).
OPTIONS = {
    "partition": Option("text"),
    "gpus_per_task": Option("count"),
    "cpus_per_task": Option("count"),
    "mem": Option("text", "memory per task, e.g. 32G"),
    "time": Option("count", "minutes per task (default 60; a task at its limit is requeued)", 60),
    "account": Option("text"),
    "qos": Option("text"),
    "constraint": Option("text"),
    "array_parallelism": Option("count", "array tasks running at once (default: all)"),
    "sbatch": Option("options", "another sbatch option, e.g. --sbatch=--exclusive", []),
}


class SlurmWorker:
    """The callable each array task runs (submitit pickles it with its arguments): one worker."""

    def __call__(self, spec, out: Path) -> dict[str, Any]:
        import torch

        from ..run import run_sweep

        if cpus := os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(cpus))
        summary = run_sweep(spec, out, quiet=True, lease=spec.executor.lease)
        return {"computed": summary.computed, "failed": len(summary.failed), "merged": summary.merged}

    def checkpoint(self, spec, out: Path):
        """Preempted or at its time limit: the same call again (submitit requeues the task)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec, out)


def sbatch_options(options: Sequence[str]) -> dict[str, Any]:
    """``--key=value`` and ``--flag`` options as submitit's additional sbatch parameters."""
    parameters: dict[str, Any] = {}
    for option in options:
        key, _, value = option[2:].partition("=")
        parameters[key.replace("-", "_")] = value if value else True
    return parameters


def executor(spec, out: Path):
    """A submitit SlurmExecutor for ``spec``'s ``[executor]`` table, logging into DIR/slurm/."""
    if shutil.which("sbatch") is None:
        raise SpecError(
            "executor = 'slurm' needs Slurm's sbatch, and none is on PATH; run where Slurm is, or use --executor local"
        )
    try:
        import submitit
    except ImportError:
        raise SpecError("executor = 'slurm' needs submitit: pip install 'ropekit[slurm]'") from None
    ex = spec.executor
    given = {key: ex.options.get(key, option.default) for key, option in OPTIONS.items()}
    slurm = submitit.SlurmExecutor(folder=out / "slurm" / "%j")
    parameters = {
        "job_name": f"ropekit-{spec.name}",
        "time": given["time"],
        "array_parallelism": given["array_parallelism"] or ex.workers,
        "additional_parameters": sbatch_options(given["sbatch"]),
    }
    for key in ("partition", "gpus_per_task", "cpus_per_task", "mem", "account", "qos", "constraint"):
        if given[key] is not None:
            parameters[key] = given[key]
    slurm.update_parameters(**parameters)
    return slurm


def submit(spec, out: Path, launch: Launch):
    """Queue ``spec.executor.workers`` array tasks on ``out``; with ``launch.wait``, wait for them and
    return what they computed together (else print the array's id and return None)."""
    no_links(out, "slurm", instead="use another --out")  # named as the user gave DIR
    out = out.resolve()
    begun = start_workers(spec, out, launch)  # a bad spec stops here, before anything is queued
    slurm = executor(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = slurm.map_array(SlurmWorker(), [spec] * spec.executor.workers, [out] * spec.executor.workers)
    array = jobs[0].job_id.split("_")[0]
    (out / "slurm").mkdir(exist_ok=True)
    record = {"array": array, "jobs": [j.job_id for j in jobs], "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / "slurm" / "jobs.json").write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"submitted Slurm job array {array} ({len(jobs)} workers) on {out}; `ropekit status {out}` shows progress, "
        "and the same command resumes the sweep if the array stops",
        flush=True,
    )
    if not launch.wait:
        return None
    problems = []
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # a task that failed or was cancelled: its units go to the others or the rerun
            problems.append(f"task {job.job_id}: {str(err).strip().splitlines()[-1][:200]}")
    return finish_workers(spec, out, begun, problems)


EXECUTOR = register_executor(
    Executor("slurm", submit, OPTIONS, title="Slurm", description="the tasks of a Slurm job array, through submitit")
)
