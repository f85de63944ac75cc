"""LongRoPE's evolutionary search for a model's rope rescale factors (ARCHITECTURE.md, README "LongRoPE's
factor search"): ``load_search_spec`` a ``[search]`` table, ``plan_search`` it, ``run_search`` it with an
``Objective`` (or any ``factors -> score`` callable) on a results directory, ``search_progress`` to read it
back. Names load on first use (``ropekit/lazy.py``): the spec and the progress need no torch."""

from ..lazy import exports

__all__ = [
    "Hyper",
    "Objective",
    "SearchSpec",
    "Space",
    "evolve",
    "load_search_spec",
    "plan_search",
    "rope_dict",
    "run_search",
    "search_from_dict",
    "search_progress",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        ".evolution": ("Space",),
        ".loop": ("Hyper", "evolve"),
        ".objective": ("Objective",),
        ".spec": ("SearchSpec", "load_search_spec", "search_from_dict"),
        ".run": ("plan_search", "rope_dict", "run_search", "search_progress"),
    },
)
