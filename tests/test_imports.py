"""Light imports: the package root, the numpy-only modules, reading a spec and a results directory load
without torch (``ropekit/lazy.py``), read off ``python -X importtime`` in a fresh interpreter
(``ropekit status`` itself: tests/sweep/test_sweep.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def importtime(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """A fresh interpreter run with ``args`` under ``-X importtime``, and the modules it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=ROOT)
    # lines: "import time: self [us] | cumulative | imported package", the package indented by depth
    lines = done.stderr.splitlines()
    return done, {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


def imported(statement: str) -> set[str]:
    """The modules a fresh interpreter imports to run ``statement``."""
    done, modules = importtime("-c", statement)
    assert done.returncode == 0, done.stderr[-2000:]
    return modules


@pytest.mark.parametrize(
    "statement",
    [
        "import ropekit",
        "import ropekit.stats",
        "import ropekit.modes",
        "import ropekit.report",  # the report's figures import the rope code only to draw frequencies
        "import ropekit.sweep.status",
        "from ropekit.sweep import load_spec; load_spec('ropekit/sweep/default.toml')",  # a spec is parsed as data
        "import ropekit.tasks, ropekit.sweep.executors",
        "import ropekit.search.status, ropekit.search.spec",  # a search's status replays it with numpy alone
    ],
)
def test_no_torch(statement):
    modules = imported(statement)
    assert "ropekit" in modules
    assert "torch" not in modules, f"{statement!r} imports torch"


def test_names_load_when_read():
    """The root's names still resolve, each from its module, and ``dir`` lists them."""
    code = "import sys, ropekit; ropekit.token_nll; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "torch" in loaded and "ropekit.eval.nll" in loaded and "ropekit.models" not in loaded
    import ropekit

    assert {"load_model", "rope_frequencies", "score_answer"} <= set(dir(ropekit))
    from ropekit.eval.nll import token_nll

    assert ropekit.token_nll is token_nll
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ropekit.nothing  # noqa: B018
