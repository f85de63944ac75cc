"""Run ``ropekit`` commands each with a fault at its n-th write, for tests/sweep/test_faults.py.

``python inject.py SCENARIOS.json`` reads a list of ``{"where", "n", "signal", "argv",
"stderr"}``, runs each command in a child forked from this process (which has imported ropekit
and torch but run no torch operation, so forking is safe and each child starts at once), and
prints each child's wait status as JSON. ``where`` is ``append`` (a results or document line:
half of it is written, then the signal) or ``replace`` (an atomic write: its temporary complete
and fsynced, then the signal, before the rename). The signal is sent by the child to itself:
SIGKILL ends it there; SIGINT and SIGTERM go through ropekit's handling.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from ropekit import cache
from ropekit.cli import main
from ropekit.sweep import store


def inject(where: str, n: int, how: str) -> None:
    hits = 0

    def hit() -> bool:
        nonlocal hits
        hits += 1
        return hits == n

    real_append, real_replace = store._append, os.replace

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

    if where == "append":
        store._append = append
    else:
        cache.os.replace = replace


def run(scenario: dict) -> int:
    pid = os.fork()
    if pid == 0:
        fd = os.open(scenario["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        inject(scenario["where"], scenario["n"], scenario["signal"])
        code = main(scenario["argv"])
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
