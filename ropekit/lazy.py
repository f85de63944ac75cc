"""Package roots that import on first use (PEP 562): ``import ropekit.stats`` or ``ropekit status``
must not pay for torch, which the model code imports at its top.

A package root lists its public names by the module that defines them and ends with
``__getattr__, __dir__ = exports(__name__, {...})``; ``from ropekit import load_model`` then
imports ``ropekit.models`` at that moment, and ``dir(ropekit)`` still lists every name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def exports(package: str, names: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``names`` maps each submodule (relative, ``".eval"``)
    to the names it defines; a name is imported from it when first read, then kept in the package."""
    where = {name: module for module, listed in names.items() for name in listed}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        namespace[name] = value  # read once: later reads do not come here
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
