"""``ropekit search`` and ``ropekit status`` on a search directory, end to end on the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ropekit.cli import main
from ropekit.search import price as price_module
from ropekit.search.run import plan_search
from ropekit.search.spec import load_search_spec
from ropekit.sweep import cost
from tests.search.test_run import assert_shared_like_alone

RATES = cost.Rates(matmul=1e11, causal=5e10, band=2e10, logits=1e9)  # injected: nothing is measured


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(price_module, "machine_rates", lambda *a, **kw: cost.MeasuredRates((RATES,), True))


def write_spec(tmp_path: Path, tiny: Path, extra: str = "") -> Path:
    path = tmp_path / "tiny-search.toml"
    path.write_text(
        f"""[search]
model = "{tiny / "tiny"}"
corpus = "{tiny / "corpus"}"
factor = 2.0
n_docs = 2
population_size = 6
max_time_budget = 3
mutation_numbers = 3
crossover_size = 3
parents_size = 3
list_step = 0.05
{extra}"""
    )
    return path


def test_dry_run_prices_the_search_and_writes_nothing(tiny, tmp_path, capsys):
    spec_path = write_spec(tmp_path, tiny)
    out = tmp_path / "out"
    assert main(["search", str(spec_path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    spec = load_search_spec(spec_path)
    proposals = 6 + 3 * (3 + 3)
    assert f"at most {proposals} candidates (0 already scored here)" in text
    from ropekit.search.run import model_rope

    config, _ = model_rope(spec)
    per = 2 * cost.pass_seconds(config, 256, RATES)
    assert f"{per:.1f} s per candidate, at most {proposals * per / 3600:.2f} h" in text
    assert "perplexity of 2 document(s) at 256 tokens = 2 pass(es) per candidate" in text
    assert not out.exists()


def test_search_then_status_then_the_rope_in_a_sweep(tiny, tmp_path, capsys):
    spec_path = write_spec(tmp_path, tiny)
    out = tmp_path / "out"
    assert main(["search", str(spec_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generation 3/3: best" in printed and f"wrote {out / 'rope.json'}" in printed
    record = json.loads((out / "result.json").read_text())
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "finished" in status and f"best so far: {record['best']['score']:.6g}" in status
    assert main(["search", str(spec_path), "--out", str(out), "--dry-run"]) == 0
    assert f"({record['scored']} already scored here)" in capsys.readouterr().out
    plan = plan_search(load_search_spec(spec_path))
    assert record["best"]["score"] <= record["start"]["score"] and plan.length == record["scored_length"]
    assert main(["report", str(out)]) == 0
    assert f"wrote {out / 'search-report.md'}" in capsys.readouterr().out
    report = (out / "search-report.md").read_text()
    assert "![factors](figures/search-factors.png)" in report and f"| 3 | {record['best']['score']:.6g} |" in report
    assert (out / "figures" / "search-progress.png").stat().st_size > 0
    assert (out / "figures" / "search-factors.png").stat().st_size > 0
    from ropekit.search.report import preset_factors

    start = preset_factors("longrope", 2.0, json.loads((out / "search.json").read_text())["plan"])
    assert np.allclose(start, plan.start, rtol=0, atol=1e-6)  # the longrope preset is the search's start
    rope = (out / "rope.json").read_text().strip()
    assert main(["inspect", f"found={rope}", "--head-dim", "16", "--max-position-embeddings", "128"]) == 0
    assert "longrope" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("popsize = 3", "search.popsize is not a key of [search]; expected one of model, "),
        ("parents_size = 9", "parents_size = 9 is larger than population_size = 6"),
        ('algorithm = "dim_poly"', "search.algorithm = 'dim_poly' is not allowed; expected one of dim_mono, "),
        ("target_length = 512", "[search] takes one of factor (the length scale) or target_length; both were given"),
        ("list_step = -1", "search.list_step = -1 is not allowed; expected a positive number"),
        ("evo_scale = 0.1", "search.population_size = 6 x evo_scale 0.1 is 0; expected at least 1"),
    ],
)
def test_bad_specs_are_one_line_and_write_nothing(tiny, tmp_path, capsys, extra, message):
    text = write_spec(tmp_path, tiny).read_text()
    key = extra.split(" = ")[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} ")]
    path = tmp_path / "bad.toml"
    path.write_text("\n".join([*lines, extra]) + "\n")
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ropekit search: error: ") and message in err, err
    assert not out.exists()


def test_a_spec_without_a_search_table_is_refused(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text('models = ["x"]\n')
    assert main(["search", str(path)]) == 2
    assert "has no [search] table" in capsys.readouterr().err


def test_workers_share_one_search_as_one_process_alone(tiny, tmp_path, capsys):
    """``--workers 2``: two processes of ``ropekit search`` on one DIR, one thread each, as a Slurm array's tasks."""
    spec = write_spec(tmp_path, tiny)
    assert main(["search", str(spec), "--out", str(tmp_path / "alone")]) == 0
    assert main(["search", str(spec), "--out", str(tmp_path / "shared"), "--workers", "2"]) == 0
    assert "2 workers on" in capsys.readouterr().out
    assert_shared_like_alone(tmp_path / "shared", tmp_path / "alone")
    assert main(["search", str(spec), "--workers", "0"]) == 2
    assert "--workers 0 is not allowed; expected a count of processes, 1 or more" in capsys.readouterr().err
