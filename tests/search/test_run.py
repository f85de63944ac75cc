"""A search on a results directory: every candidate stored as it is scored, a killed search resumed to
the same end as one never stopped, several workers sharing one, its progress read back without a model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ropekit.search.run import plan_search, rope_dict, run_search, search_progress
from ropekit.search.spec import search_from_dict
from ropekit.search.store import COLUMNS, CandidateStore
from ropekit.sweep.spec import SpecError

ROOT = Path(__file__).resolve().parents[2]
HYPER = {"population_size": 8, "max_time_budget": 4, "mutation_numbers": 4, "crossover_size": 4, "parents_size": 4}


def spec_of(tiny: Path, **keys):
    return search_from_dict({"model": str(tiny / "tiny"), "factor": 4.0, "list_step": 0.1, **HYPER, **keys})


def target_distance(factors) -> float:
    """A synthetic objective: squared distance to a made-up monotonic vector (8 rotary pairs)."""
    return float(np.sum((np.asarray(factors, dtype=np.float64) - np.linspace(1.0, 3.5, 8)) ** 2))


def scored_lines(out: Path) -> list[dict[str, str]]:
    """Every whole line of every worker's file (a torn last line is no line)."""
    from ropekit.cache import read_csv

    return [row for path in sorted((out / "candidates").glob("*.csv")) for row in read_csv(path)[1]]


def assert_shared_like_alone(out: Path, alone: Path, said: str = "") -> None:
    """A search its workers shared: each candidate scored by exactly one of them, the candidates and scores of one
    process running it alone, and its rope."""
    rows, reference = scored_lines(out), scored_lines(alone)
    assert len(rows) == len({r["key"] for r in rows}) == len(reference), said  # each candidate scored once
    assert {r["key"] for r in rows} == {r["key"] for r in reference}
    scores = {r["key"]: float(r["score"]) for r in reference}
    assert all(float(r["score"]) == pytest.approx(scores[r["key"]], rel=1e-6) for r in rows)
    assert json.loads((out / "rope.json").read_text()) == json.loads((alone / "rope.json").read_text())


def test_plan_reads_the_model_and_starts_from_yarn(tiny):
    plan = plan_search(spec_of(tiny))
    assert (plan.trained, plan.length, plan.scale, plan.rotary_dim) == (128, 512, 4.0, 16)
    assert plan.start.dtype == np.float32 and plan.start[0] == 1.0 and plan.start[-1] == 4.0
    short = plan_search(spec_of(tiny, factors="short", algorithm="dim_piece_mono"))
    assert short.length == 128 and short.space.piece
    rope = rope_dict(short, np.full(8, 1.5))
    assert rope["short_factor"] == [1.5] * 8 and rope["long_factor"] == [float(x) for x in short.start]
    given = plan_search(spec_of(tiny, start=[1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 4.0, 4.0]))
    assert given.start.tolist() == [1.0, 1.0, 1.5, 2.0, 2.0, 3.0, 4.0, 4.0]
    with pytest.raises(SpecError, match="search.start has 3 factors; expected rotary_dim // 2 = 8"):
        plan_search(spec_of(tiny, start=[1.0, 2.0, 3.0]))
    with pytest.raises(SpecError, match="not past the model's trained length 128"):
        plan_search(search_from_dict({"model": str(tiny / "tiny"), "target_length": 100}))


def test_every_candidate_is_stored_once_and_the_result_is_a_rope(tiny, tmp_path):
    plan = plan_search(spec_of(tiny))
    calls = []
    result = run_search(plan, tmp_path / "s", lambda f: calls.append(1) or target_distance(f), poll=0.01)
    rows = scored_lines(tmp_path / "s")
    assert len(rows) == len(calls) == len({c.key for c in result.candidates}) == len({r["key"] for r in rows})
    assert list(rows[0]) == COLUMNS and rows[0]["origin"] == "init"
    for row in rows:  # scores and factors stored exactly
        assert float(row["score"]) == target_distance([float(x) for x in row["factors"].split()])
    record = json.loads((tmp_path / "s" / "result.json").read_text())
    assert record["best"]["score"] == result.best.score == min(float(r["score"]) for r in rows)
    assert len(record["generations"]) == HYPER["max_time_budget"] + 1
    rope = json.loads((tmp_path / "s" / "rope.json").read_text())
    assert rope["rope_type"] == "longrope" and rope["long_factor"] == [float(x) for x in result.best.factors]
    # what a sweep and load_model take as they are
    from ropekit.models import load_model
    from ropekit.sweep.spec import spec_from_dict

    spec_from_dict(
        {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "lengths": [256], "ropes": {"found": rope}}
    )
    model = load_model(tiny / "tiny", rope_scaling=rope)
    assert model.config.layers[0].rope.scaling.long_factor == tuple(rope["long_factor"])
    params = json.loads((tmp_path / "s" / "rope_parameters.json").read_text())
    assert params == {**rope, "rope_theta": 10000.0}
    # rerun: nothing scored again, the same files
    before = (tmp_path / "s" / "result.json").read_bytes()
    again = run_search(plan, tmp_path / "s", lambda f: pytest.fail("scored again"), poll=0.01)
    assert again.best.key == result.best.key and (tmp_path / "s" / "result.json").read_bytes() == before


KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.search.test_run import spec_of, target_distance
from ropekit.search.run import plan_search, run_search
from pathlib import Path
calls = [0]
def objective(f):
    calls[0] += 1
    if calls[0] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return target_distance(f)
run_search(plan_search(spec_of(Path({tiny!r}))), Path({out!r}), objective, poll=0.01)
"""


@pytest.mark.parametrize("kill_at", [1, 9, 23])
def test_a_search_killed_mid_way_resumes_to_the_same_end(tiny, tmp_path, kill_at):
    """SIGKILL at the n-th score (in the first generation, the second, later), a torn line left in the
    killed worker's file; the same search resumed (another process) ends with byte-identical result files
    to a search never stopped, and no candidate is scored twice."""
    whole = tmp_path / "whole"
    run_search(plan_search(spec_of(tiny)), whole, target_distance, poll=0.01)
    out = tmp_path / "killed"
    script = KILLED.format(root=str(ROOT), kill_at=kill_at, tiny=str(tiny), out=str(out))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (out / "result.json").exists()
    stored = scored_lines(out)
    assert len(stored) == kill_at - 1
    (killed_file,) = (out / "candidates").glob("*.csv")
    with killed_file.open("a") as f:
        f.write("0123456789abcdef,3,mutation,1.2")  # a write cut short
    calls = []
    run_search(plan_search(spec_of(tiny)), out, lambda f: calls.append(1) or target_distance(f), poll=0.01)
    rows = scored_lines(out)
    assert len(rows) == len({r["key"] for r in rows}) == len(scored_lines(whole))
    assert len(calls) == len(rows) - (kill_at - 1)
    for name in ("result.json", "rope.json", "rope_parameters.json"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()


def test_workers_share_one_search(tiny, tmp_path):
    """Three worker processes on one directory (claims are between processes, as workers and Slurm array
    tasks run): each candidate scored by exactly one, all end on the same result."""
    import multiprocessing

    plan = plan_search(spec_of(tiny))
    whole = tmp_path / "whole"
    reference = run_search(plan, whole, target_distance, poll=0.01)
    out = tmp_path / "shared"
    CandidateStore(out, plan.spec, worker="w0")  # search.json written before the workers start
    context = multiprocessing.get_context("fork")
    bests = context.Queue()

    def work(name):
        bests.put(run_search(plan, out, target_distance, worker=name, poll=0.01).best.key)

    workers = [context.Process(target=work, args=(f"w{i}",)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [w.exitcode for w in workers] == [0, 0, 0]
    rows = scored_lines(out)
    assert len(rows) == len({r["key"] for r in rows}) == len(scored_lines(whole))
    assert {bests.get(timeout=10) for _ in workers} == {reference.best.key}
    assert (out / "result.json").read_bytes() == (whole / "result.json").read_bytes()


def test_progress_is_read_back_without_a_model(tiny, tmp_path):
    plan = plan_search(spec_of(tiny))
    out = tmp_path / "p"
    calls = [0]

    def stop_after_12(f):
        calls[0] += 1
        if calls[0] > 12:
            raise KeyboardInterrupt
        return target_distance(f)

    with pytest.raises(KeyboardInterrupt):
        run_search(plan, out, stop_after_12, poll=0.01)
    progress = search_progress(out)
    assert not progress.finished and progress.scored == 12 and len(progress.generations) == 1
    rows = scored_lines(out)
    assert progress.best == min(float(r["score"]) for r in rows)
    run_search(plan, out, target_distance, poll=0.01)
    done = search_progress(out)
    record = json.loads((out / "result.json").read_text())
    assert done.finished and done.best == record["best"]["score"] and len(done.generations) == 5
    assert [g.best for g in done.generations] == [g["best"] for g in record["generations"]]


def test_another_spec_or_a_sweep_is_refused_on_the_same_directory(tiny, tmp_path):
    from ropekit.search.store import SearchStoreError

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "meta.json").write_text("{}")
    with pytest.raises(SearchStoreError, match="holds a sweep \\(meta.json\\)"):
        run_search(plan_search(spec_of(tiny)), tmp_path / "sweep", target_distance, poll=0.01)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["meta.json"]
    run_search(plan_search(spec_of(tiny)), tmp_path / "d", target_distance, poll=0.01)
    with pytest.raises(SpecError, match="holds another search \\(its seed differ"):
        run_search(plan_search(spec_of(tiny, seed=1)), tmp_path / "d", target_distance, poll=0.01)


def test_a_worker_cuts_its_own_torn_line_when_it_reopens(tiny, tmp_path):
    from ropekit.cache import Notice

    spec = spec_of(tiny)
    store = CandidateStore(tmp_path, spec, worker="slurm-7_1")
    store.add("k1", 0, "init", 2.5, [1.0, 2.0])
    size = store.path.stat().st_size
    with store.path.open("a") as f:
        f.write("k2,0,mutation,3.")
    with pytest.warns(Notice, match="cut short"):
        again = CandidateStore(tmp_path, spec, worker="slurm-7_1")
    assert again.path.stat().st_size == size and again.scores == {"k1": 2.5}
