"""Sweeps: specs, the resumable executor and its results store."""

from .run import SweepSummary, run_sweep
from .spec import SpecError, SweepSpec, default_spec, load_spec, spec_from_dict
from .store import DOC_COLUMNS, RESULT_COLUMNS, ResultStore

__all__ = [
    "DOC_COLUMNS",
    "RESULT_COLUMNS",
    "ResultStore",
    "SpecError",
    "SweepSpec",
    "SweepSummary",
    "default_spec",
    "load_spec",
    "run_sweep",
    "spec_from_dict",
]
