"""Run ``ropekit`` commands each with a fault at its n-th write, for tests/sweep/test_faults.py and test_workers.py.

``python inject.py SCENARIOS.json`` reads a list of ``{"where", "n", "signal", "argv",
"stderr"}``, runs each command in a child forked from this process (which has imported ropekit
and torch but run no torch operation, so forking is safe and each child starts at once), and
prints each child's wait status as JSON. ``where`` is ``append`` (a results or document line:
half of it is written, then the signal), ``replace`` (an atomic write: its temporary complete
and fsynced, then the signal, before the rename), ``claim`` (a unit just claimed) or ``release``
(a unit's cells stored, before its claim is dropped). The signal is sent by the child to itself:
SIGKILL ends it there; SIGINT and SIGTERM go through ropekit's handling.

With ``"once"`` (a path) the fault goes into the workers the command starts (``--workers N``: each
spawned process installs it), and the first worker to reach it creates that file and takes the
signal; the others go on.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from multiprocessing import resource_tracker

from ropekit import cache
from ropekit.cli import main
from ropekit.sweep import store
from ropekit.sweep.claims import Claims
from ropekit.sweep.executors import local

local_worker = local._worker


def inject(where: str, n: int, how: str, once: str | None = None) -> None:
    hits = 0

    def hit() -> bool:
        nonlocal hits
        hits += 1
        if hits != n or once is None:
            return hits == n
        try:  # the first process of several to get here
            os.close(os.open(once, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    real_append, real_replace = store.append_lines, os.replace

    def append(path, columns, row):
        if hit():
            data = cache.csv_text(columns, [row], header=False).encode()
            with open(path, "ab") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.Signals[how])
        real_append(path, columns, row)

    def replace(src, dst):
        if str(src).endswith(".tmp") and hit():
            os.kill(os.getpid(), signal.Signals[how])
        real_replace(src, dst)

    real_claim, real_release = Claims.claim, Claims.release

    def claim(self, units, finished):
        unit = real_claim(self, units, finished)
        if unit is not None and hit():
            os.kill(os.getpid(), signal.Signals[how])
        return unit

    def release(self, unit):
        if hit():
            os.kill(os.getpid(), signal.Signals[how])
        real_release(self, unit)

    if where == "append":
        store.append_lines = append
    elif where == "replace":
        cache.os.replace = replace
    elif where == "claim":
        Claims.claim = claim
    else:
        Claims.release = release


def worker(scenario: dict, *args) -> None:
    """A local executor's worker process (spawned: it imports this module afresh) with the fault in."""
    inject(scenario["where"], scenario["n"], scenario["signal"], scenario["once"])
    local_worker(*args)


def run(scenario: dict) -> int:
    pid = os.fork()
    if pid == 0:
        fd = os.open(scenario["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        if scenario.get("once"):  # into the workers, not this process
            local._worker = functools.partial(worker, scenario)
        else:
            inject(scenario["where"], scenario["n"], scenario["signal"])
        code = main(scenario["argv"])
        tracker = getattr(resource_tracker, "_resource_tracker", None)
        if tracker is not None and hasattr(tracker, "_stop"):  # what it warns of at the end is in stderr before exit
            tracker._stop()
        sys.stderr.flush()
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def warm(argv: list[str]) -> None:
    """Import once, here, what every child would import: the report, and transformers' modules
    that resolving a plan loads (reading configs runs no torch operation)."""
    import ropekit.report  # noqa: F401
    from ropekit.cli import build_parser, sweep_spec_from_args
    from ropekit.sweep.cells import plan_cells

    plan_cells(sweep_spec_from_args(build_parser().parse_args(argv)), corpus_sha="")


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        scenarios = json.load(f)
    warm(scenarios[0]["argv"])
    print(json.dumps([run(s) for s in scenarios]))
