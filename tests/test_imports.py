"""Light imports: the package root and the numpy-only modules load without torch (``ropekit/lazy.py``),
read off ``python -X importtime`` in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported(statement: str) -> set[str]:
    """The modules a fresh interpreter imports to run ``statement``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True
    )
    # lines: "import time: self [us] | cumulative | imported package", the package indented by depth
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("statement", ["import ropekit", "import ropekit.stats", "import ropekit.modes"])
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
