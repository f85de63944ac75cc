"""Sweeps: specs, the resumable executor and its results store, and a dry run's plan and cost (cost.py)."""

from .dryrun import DryRun, dry_run
from .run import SweepSummary, run_sweep
from .spec import SpecError, SweepSpec, default_spec, load_spec, spec_from_dict
from .store import DOC_COLUMNS, RESULT_COLUMNS, ResultStore

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
