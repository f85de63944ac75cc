"""The local executor: ``workers`` processes on this machine, each a ``run_sweep`` worker on one
results directory, claiming its work units (``ropekit.sweep.claims``) until none is left; one worker
runs inline, in this process.

Each worker is a fresh process (multiprocessing's spawn: no state shared with this one, CUDA
initialised in the child). On CUDA worker i sees only GPU i mod the GPUs (``CUDA_VISIBLE_DEVICES``);
on the CPU each takes its share of the cores (torch's threads). Every worker takes the dtype this
process resolved (``dtype = "auto"``: workers timing bf16 at once would each see the others busy, and
could differ). This process only starts them, waits, and merges their shards into DIR's files at the
end; a worker that fails says so in one line and the others go on (its unit is taken over). A worker
killed, or stopped by an error, fails the sweep only where cells are left undone; when the others
finished its units, the summary says so in a note.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.connection import wait

from .registry import Executor, Launch, finish_workers, register_executor, start_workers

ERROR_EXIT = 2


def run(spec, out, launch: Launch):
    """Run ``spec`` into ``out`` with ``spec.executor.workers`` local worker processes (one: inline);
    returns what they computed together (as ``run_sweep`` does for one)."""
    if spec.executor.workers == 1:
        from .inline import run as inline

        return inline(spec, out, launch)
    import torch

    workers = spec.executor.workers
    begun = start_workers(spec, out, launch)
    gpus = torch.cuda.device_count() if str(spec.device).startswith("cuda") else 0
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    quiet = launch.quiet
    processes = [
        context.Process(
            target=_worker, args=(spec, out, i, gpus, threads, quiet, begun.precision), name=f"ropekit-worker-{i}"
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    if not quiet:
        pids = ", ".join(str(p.pid) for p in processes)
        print(f"{workers} workers on {out} (pids {pids}); `ropekit status {out}` shows their progress", flush=True)
    try:  # each reaped as it ends: a killed worker left a zombie would look alive to claims till its lease ran out
        ending = {process.sentinel: process for process in processes}
        while ending:
            for sentinel in wait(list(ending)):
                ending.pop(sentinel).join()
    except BaseException:  # Ctrl-C reaches the workers too (one process group): they release their claims
        for process in processes:
            process.join(timeout=30)
        raise
    problems = [_stopped(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode not in (0, 1)]
    return finish_workers(spec, out, begun, problems)


def _stopped(index: int, code: int) -> str:
    """What stopped a worker, as its exit code says (multiprocessing's: minus the signal that killed it)."""
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = "its error is above" if code == ERROR_EXIT else f"exit status {code}"
    return f"worker {index} stopped ({how})"


def _worker(spec, out, index: int, gpus: int, threads: int, quiet: bool, precision=None) -> None:
    """One worker process: its device or cores, then ``run_sweep``; errors as one line, exit codes as
    the CLI's (0 done, 1 cells failed, 2 an error)."""
    import torch
    from tqdm import tqdm

    from ...cache import LinkError
    from ...data import CorpusError
    from ...models import CheckpointError, ModelConfigError
    from ..claims import ClaimError
    from ..run import run_sweep
    from ..spec import SpecError
    from ..store import StoreError

    # what stops a worker with one line (as the CLI says them): bad input, an unusable directory or disk
    errors = (SpecError, StoreError, ClaimError, LinkError, CorpusError, CheckpointError, ModelConfigError, OSError)

    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    else:
        torch.set_num_threads(threads)
    # A worker draws no bar, and tqdm's default lock is a semaphore of multiprocessing's: one that a killed
    # worker never unlinks, of which resource_tracker warns ("leaked semaphore objects") at the sweep's end.
    tqdm.set_lock(threading.RLock())
    try:
        summary = run_sweep(spec, out, quiet=True, lease=spec.executor.lease, precision=precision)
    except KeyboardInterrupt:
        sys.exit(130)
    except errors as err:
        print(f"ropekit sweep: worker {index}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(ERROR_EXIT)
    if not quiet:
        print(f"worker {index}: {summary.computed} cells computed ({summary.seconds:.0f} s)", flush=True)
    sys.exit(1 if summary.failed else 0)


EXECUTOR = register_executor(
    Executor("local", run, title="local", description="worker processes on this machine (one: inline)")
)
