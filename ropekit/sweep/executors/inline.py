"""The inline executor: one worker, this process (what ``local`` runs for one worker)."""

from __future__ import annotations

from .registry import Executor, Launch, register_executor


def run(spec, out, launch: Launch):
    from ..run import run_sweep

    return run_sweep(spec, out, force=launch.force, quiet=launch.quiet, lease=spec.executor.lease)


EXECUTOR = register_executor(Executor("inline", run, title="inline", description="one worker in this process"))
