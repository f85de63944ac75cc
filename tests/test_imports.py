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
        "import ropekit.report",
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


def test_a_report_reads_the_frequencies_the_sweep_kept_without_torch(tmp_path):
    """plans.json keeps what each rope does to the frequencies at the sweep's longest length: the report's
    table from it is the rope code's own, and ``ropekit report`` then imports no torch; a directory from
    before (no ``frequencies``) is still drawn, by the rope code."""
    import json

    from ropekit.report import write_report
    from ropekit.rope import RopeSpec, frequency_table
    from ropekit.rope.table import stored_table
    from ropekit.sweep import run_sweep, spec_from_dict
    from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus

    make_checkpoint(tmp_path / "tiny", {"model_type": "llama", "max_position_embeddings": 64})
    add_tokenizer(tmp_path / "tiny")
    write_corpus(tmp_path / "corpus", (150, 150))
    data = {"models": [str(tmp_path / "tiny")], "corpus": str(tmp_path / "corpus"), "lengths": [64, 128]}
    out = tmp_path / "out"
    assert run_sweep(spec_from_dict({**data, "ropes": {"default": "default", "y": "yarn:2"}}), out, quiet=True).ok
    plans = json.loads((out / "plans.json").read_text())
    kept = {p["rope"]: p["frequencies"][p["layers"][0]["rope"]] for p in plans}
    ropes = {p["rope"]: RopeSpec.from_record(p["ropes"][p["layers"][0]["rope"]]) for p in plans}
    assert {r["length"] for r in kept.values()} == {128}
    assert stored_table(kept).equals(frequency_table(ropes, 128))
    done, modules = importtime("-m", "ropekit", "report", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ropekit.report.document" in modules and "torch" not in modules
    for p in plans:
        del p["frequencies"]
    (out / "plans.json").write_text(json.dumps(plans))
    assert any(f.name == "frequencies.png" for f in write_report(out).figures)
