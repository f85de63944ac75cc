"""The notebooks run top to bottom (executed here with nbclient on a copy, so the committed outputs
stay those of the real run), and the committed copies carry the outputs of a complete run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def errors(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_the_five_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_rope_scalings",
        "02_perplexity_sweep",
        "03_layer_mixes",
        "04_retrieval",
        "05_ruler_longppl",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_the_outputs_of_a_complete_run(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run it top to bottom once"
    assert not errors(nb)
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures, "a notebook that tells its story with figures has some"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    assert not errors(nb)
