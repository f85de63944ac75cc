"""Sweeps: specs, the resumable executor and its results store, and a dry run's plan and cost (cost.py).

Names load on first use (``ropekit/lazy.py``): reading a spec or a results directory needs no model code."""

from ..lazy import exports

__all__ = [
    "DOC_COLUMNS",
    "DryRun",
    "RESULT_COLUMNS",
    "ResultStore",
    "SpecError",
    "SweepSpec",
    "SweepSummary",
    "default_spec",
    "dry_run",
    "load_spec",
    "run_sweep",
    "spec_from_dict",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        ".dryrun": ("DryRun", "dry_run"),
        ".run": ("SweepSummary", "run_sweep"),
        ".spec": ("SpecError", "SweepSpec", "default_spec", "load_spec", "spec_from_dict"),
        ".store": ("DOC_COLUMNS", "RESULT_COLUMNS", "ResultStore"),
    },
)
