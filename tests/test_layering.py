"""The package's layering (ARCHITECTURE.md's dependency rule), read from the source's own imports:

rope/ imports nothing of ropekit; models/ imports rope/; eval/ imports models/ and rope/; data/
stands alone; tasks/ (the trial tasks' records) imports eval/ and what it stands on; sweep/ imports
tasks/, eval/, data/, models/ (and what they stand on); report/ imports rope/
and reads results files, never a model; lmeval/ (the lm-evaluation-harness backend) imports eval/,
models/ and rope/; search/ (LongRoPE's factor search) stands on sweep/ (its store, claims and cost
model) and what it imports. ``ropekit/cache.py`` (cache dir, atomic writes, csv records), ``ropekit/stats.py``
(bootstrap intervals, numpy only), ``ropekit/modes.py`` (the perplexity modes as data) and
``ropekit/lazy.py`` (lazy package roots) and ``ropekit/plugins.py`` (the registries' common part) are the
small modules all may use; the CLI and the package's
``__init__`` sit on top. Every module of the package is one of these: a new layer needs its rule here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ropekit"
SHARED = {"cache", "stats", "modes", "lazy", "plugins", "names"}
TOP = {"cli", "__init__", "__main__"}  # may import every layer
ALLOWED = {
    "rope": set(),
    "models": {"rope"},
    "eval": {"models", "rope"},
    "data": set(),
    "tasks": {"eval", "data", "models", "rope"},
    "sweep": {"tasks", "eval", "data", "models", "rope"},
    "report": {"rope"},
    "lmeval": {"eval", "models", "rope"},
    "search": {"sweep", "tasks", "eval", "data", "models", "rope"},
}


def layer_of(path: Path) -> str:
    """The layer a module belongs to: its subpackage, or its own name for a top-level module."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_layers(path: Path) -> set[str]:
    """The ropekit layers a module imports, absolute (``ropekit.x``) or relative (``..x``), at
    any depth of the file (imports inside functions count too)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = ["ropekit", *parts[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join(module)] if node.module else [".".join([*base, a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            dotted = name.split(".")
            if dotted[0] == "ropekit" and len(dotted) > 1:
                found.add(dotted[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) not in TOP)


def test_every_module_has_a_layer():
    """A module outside every rule would be checked by none: each is in a layer, shared, or on top."""
    unknown = {layer_of(p) for p in PACKAGE.rglob("*.py")} - set(ALLOWED) - SHARED - TOP
    assert not unknown, f"modules {sorted(unknown)} belong to no layer of tests/test_layering.py"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_sideways(path):
    layer = layer_of(path)
    allowed = {layer, *SHARED} | (set() if layer in SHARED else ALLOWED[layer])
    sideways = imported_layers(path) - allowed
    assert not sideways, f"ropekit/{path.relative_to(PACKAGE)} ({layer}/) imports {sorted(sideways)}"


def test_the_checker_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    """The rule is only as good as the import reader: prove it on a module with every form."""
    fake = tmp_path / "ropekit"
    (fake / "report").mkdir(parents=True)
    module = fake / "report" / "x.py"
    module.write_text(
        "import ropekit.rope\nfrom .. import models\nfrom ..sweep.store import A\n"
        "def f():\n    from ropekit.eval import nll\n    from .style import s\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert imported_layers(module) == {"rope", "models", "sweep", "eval", "report"}
