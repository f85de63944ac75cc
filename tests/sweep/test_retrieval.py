"""Retrieval tasks in sweeps on the tiny checkpoint: each trial stored as score_answer scores its
prompt, rows from the trials, the same prompts for every rope, resume at the next trial, a failed
trial recorded while the sweep goes on, bad settings refused before weights load, and a results.csv
from before tasks upgraded in place."""

from __future__ import annotations

import csv
import json
import math
import shlex

import pytest

import ropekit
from ropekit import stats
from ropekit.cache import csv_text, read_csv
from ropekit.sweep import SpecError, dry_run, run_sweep, spec_from_dict
from ropekit.sweep import trials as trials_module
from ropekit.sweep.store import BEFORE_LONGPPL, PERPLEXITY_ONLY_COLUMNS, RESULT_COLUMNS, TRIAL_COLUMNS
from ropekit.tasks import build_trial
from tests.sweep.test_dryrun import RATES

LENGTHS = [96, 160]  # the prompts' fixed text takes about 60 of the tiny tokenizer's tokens


def spec(setup, **changes):
    data = {
        "models": [str(setup / "tiny")],
        "corpus": str(setup / "corpus"),
        "lengths": LENGTHS,
        "ropes": {"default": "default", "yarn": "yarn:2"},
        "n_docs": 1,
        "tasks": ["perplexity", "passkey", "needle"],
        "passkey": {"trials": 3, "depths": [0, 50, 100], "seed": 4},
        "needle": {"trials": 2, "depths": [25, 75], "digits": 3},
        **changes,
    }
    return spec_from_dict({k: v for k, v in data.items() if v is not None})


def rows(path):
    return list(csv.DictReader(path.open()))


@pytest.fixture(scope="module")
def swept(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval") / "out"
    summary = run_sweep(spec(setup), out, quiet=True)
    assert summary.ok
    return out


def test_every_trial_is_stored_as_score_answer_scores_its_prompt(setup, swept):
    model = ropekit.load_model(setup / "tiny")
    documents = [t.tolist() for t in _haystack(setup, model.tokenizer)]
    trials = rows(swept / "trials.csv")
    assert len(trials) == 2 * len(LENGTHS) * (3 * 3 + 2 * 2)  # ropes x lengths x (depths x trials per task)
    for row in trials:
        if row["rope"] != "default":
            continue
        task, length, depth, t = row["task"], int(row["length"]), float(row["depth"]), int(row["trial"])
        seed, digits = (4, 5) if task == "passkey" else (0, 3)
        trial = build_trial(model.tokenizer, task, length, depth, t, seed=seed, digits=digits, documents=documents)
        score = ropekit.score_answer(model, trial.prompt_ids, trial.answer_ids)
        assert (row["value"], int(row["position"]), int(row["n_answer"])) == (
            trial.value,
            trial.position,
            len(trial.answer_ids),
        )
        assert int(row["exact"]) == score.exact and int(row["n_correct"]) == score.n_correct
        assert float(row["logprob"]) == score.logprob  # repr: the same float
        assert len(row["value"]) == digits


def test_cell_rows_are_made_from_their_trials(swept):
    trials = rows(swept / "trials.csv")
    results = [r for r in rows(swept / "results.csv") if r["task"] != "perplexity"]
    assert len(results) == 2 * len(LENGTHS) * (3 + 2)
    for r in results:
        mine = [t for t in trials if t["cell"] == r["cell"]]
        assert len(mine) == int(r["n_trials"]) == (3 if r["task"] == "passkey" else 2)
        exact = sum(int(t["exact"]) for t in mine)
        assert float(r["accuracy"]) == pytest.approx(exact / len(mine), abs=5e-5)
        lo, hi = stats.wilson(exact, len(mine))
        assert (float(r["accuracy_lo"]), float(r["accuracy_hi"])) == pytest.approx((lo, hi), abs=5e-5)
        assert float(r["mean_logprob"]) == pytest.approx(sum(float(t["logprob"]) for t in mine) / len(mine), abs=1e-6)
        assert r["ppl"] == r["n_docs"] == "" and r["status"] == "ok"
    perplexity = [r for r in rows(swept / "results.csv") if r["task"] == "perplexity"]
    assert len(perplexity) == 2 * len(LENGTHS) and all(r["depth"] == "" and float(r["ppl"]) > 1 for r in perplexity)


def test_every_rope_reads_the_same_prompts(swept):
    by_rope: dict[str, list] = {}
    for t in rows(swept / "trials.csv"):
        by_rope.setdefault(t["rope"], []).append((t["task"], t["length"], t["depth"], t["trial"], t["value"], t["key"]))
    assert by_rope["default"] == by_rope["yarn"]
    assert len({v[4] for v in by_rope["default"]}) > 20  # and the values differ from trial to trial


def test_a_stopped_sweep_resumes_at_the_next_trial(setup, swept, tmp_path, monkeypatch):
    calls = 0
    real = trials_module.score_answer

    def stop_after_seven(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trials_module, "score_answer", stop_after_seven)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec(setup), tmp_path, quiet=True)
    assert len(rows(tmp_path / "trials.csv")) == 7
    monkeypatch.setattr(trials_module, "score_answer", real)
    run_sweep(spec(setup), tmp_path, quiet=True)
    for name in ("results.csv", "trials.csv", "documents.csv"):  # as if it had never stopped
        assert (tmp_path / name).read_bytes() == (swept / name).read_bytes(), name


def test_a_trial_out_of_memory_fails_its_cell_and_the_sweep_goes_on(setup, tmp_path, monkeypatch):
    real = trials_module.score_answer

    def oom_at_160(model, prompt_ids, answer_ids):
        if len(prompt_ids) == 160:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, prompt_ids, answer_ids)

    monkeypatch.setattr(trials_module, "score_answer", oom_at_160)
    summary = run_sweep(spec(setup), tmp_path, quiet=True)
    failed = {(r["task"], r["length"], r["status"]) for r in summary.failed}
    assert failed == {("passkey", 160, "oom"), ("needle", 160, "oom")}
    results = rows(tmp_path / "results.csv")
    assert all(r["status"] == "ok" for r in results if r["length"] == "96")
    assert {r["detail"] for r in results if r["status"] == "oom"} == {
        "trial 0: CUDA out of memory. Tried to allocate 2.00 GiB"
    }
    monkeypatch.setattr(trials_module, "score_answer", real)
    summary = run_sweep(spec(setup), tmp_path, quiet=True)  # the failed cells are tried again
    assert summary.ok and summary.computed == 2 * (3 + 2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lengths": [40, 96]}, "lengths: length=40 cannot hold the passkey prompt"),
        ({"passkey": {"depths": [0, 101]}}, r"passkey.depths: 101 is not allowed"),
        ({"passkey": {"trials": 0}}, "passkey.trials = 0 is not allowed"),
        ({"passkey": {"digits": 0}}, "passkey.digits = 0 is not allowed"),
        ({"needle": {"needle": "The code of {key} is secret."}}, "needle: needle=.* has no {value} placeholder"),
        ({"needle": {"needle": "The code is {value}."}}, r"needle: .*must be in both"),
        ({"passkey": {"needle": "The code is {value}."}}, r"passkey: unknown key 'needle'.*of the \[needle\] table"),
        ({"tasks": ["passkey", "summary"]}, "tasks: 'summary' is not a task"),
        ({"tasks": ["passkey"]}, r"a \[needle\] table is given but tasks does not name 'needle'"),
        ({"passkey": {"trails": 3}}, "passkey: unknown key 'trails'"),
    ],
)
def test_bad_retrieval_settings_are_refused_before_weights_load(setup, tmp_path, changes, message, monkeypatch):
    monkeypatch.setattr("ropekit.sweep.run.load_model", _no_weights)
    with pytest.raises(SpecError, match=message):
        run_sweep(spec(setup, **changes), tmp_path, quiet=True)
    assert not (tmp_path / "results.csv").exists() or rows(tmp_path / "results.csv") == []


def test_the_dry_run_prices_the_trials(setup, tmp_path):
    dry = dry_run(spec(setup), tmp_path, rates=RATES)
    trials = [p for p in dry.passes if p.doc.startswith(("passkey", "needle"))]
    assert len(trials) == 2 * len(LENGTHS) * (3 * 3 + 2 * 2)
    assert {p.end - p.begin for p in trials} == set(LENGTHS)
    retrieval = [c for c in dry.cells if c.task != "perplexity"]
    assert len(retrieval) == 2 * len(LENGTHS) * 5 and all(c.status == "to run" for c in retrieval)
    assert math.isclose(sum(c.seconds for c in dry.cells), dry.seconds)
    assert "passkey" in dry.text() and "needle" in dry.text()


@pytest.mark.parametrize("older", [PERPLEXITY_ONLY_COLUMNS, BEFORE_LONGPPL])
def test_a_results_file_from_before_tasks_is_upgraded_in_place(setup, tmp_path, older):
    """results.csv before tasks (no task columns) and before LongPPL's columns: read, and rewritten."""
    only = spec(setup, tasks=["perplexity"], passkey=None, needle=None)
    run_sweep(only, tmp_path, quiet=True)
    header, new_rows, _ = read_csv(tmp_path / "results.csv")
    assert header == RESULT_COLUMNS
    old = csv_text(older, new_rows)  # as an earlier ropekit wrote it
    (tmp_path / "results.csv").write_text(old)
    summary = run_sweep(only, tmp_path, quiet=True)
    assert summary.computed == 0 and summary.reused == len(new_rows)
    assert read_csv(tmp_path / "results.csv")[1] == new_rows
    assert read_csv(tmp_path / "trials.csv")[0] == TRIAL_COLUMNS


def _haystack(setup, tokenizer):
    from ropekit.data import load_corpus, tokenize

    return list(tokenize(load_corpus(str(setup / "corpus")), tokenizer, special_tokens=False).values())


def _no_weights(*args, **kwargs):
    raise AssertionError("weights were loaded")


def test_the_command_prints_exact_answers_per_length_and_rope(setup, tmp_path, capsys):
    from ropekit.cli import build_parser, main, sweep_spec_from_args

    args = ["sweep", "--model", str(setup / "tiny"), "--corpus", str(setup / "corpus"), "--lengths", "96,160"]
    args += ["--rope", "default", "--rope", "yarn:2", "--n-docs", "1", "--tasks", "perplexity,passkey"]
    args += ["--trials", "2", "--depths", "0,100", "--seed", "4", "--out", str(tmp_path), "--quiet", "--no-report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "layer mix native: perplexity" in out
    block = out.split("passkey, exact answers of trials (all depths)\n")[1]
    trials = rows(tmp_path / "trials.csv")
    for rope in ("default", "yarn:2"):
        for length in ("96", "160"):
            exact = sum(int(t["exact"]) for t in trials if t["rope"] == rope and t["length"] == length)
            line = next(line for line in block.splitlines() if line.startswith(length))
            assert f"{exact}/4" in line.split()[1 if rope == "default" else 2]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["spec"]["tasks"] == ["perplexity", "passkey"]
    assert meta["spec"]["passkey"] == {"trials": 2, "depths": [0, 100], "seed": 4}
    assert "--tasks perplexity,passkey --trials 2 --depths 0,100 --seed 4" in meta["command"]
    again = sweep_spec_from_args(build_parser().parse_args(shlex.split(meta["command"])[1:]))
    assert again.sha256 == meta["spec_sha256"]  # the recorded command reruns this very spec


@pytest.mark.parametrize("added", [("match", "output", "scores"), ("scores",)])
def test_a_trials_file_from_before_generated_answers_is_upgraded_in_place(setup, tmp_path, added):
    """trials.csv gained ``match`` and ``output`` (RULER's tasks, scored on what the model writes), then
    ``scores`` (LongPPL's, scored its own way): one of an earlier ropekit is read as it is and rewritten
    with them empty, its trials reused."""
    built = spec(setup, tasks=["passkey"], needle=None)
    first = run_sweep(built, tmp_path, quiet=True)
    header, rows, _ = read_csv(tmp_path / "trials.csv")
    assert header == TRIAL_COLUMNS and {r["match"] for r in rows} == {r["output"] for r in rows} == {""}
    before = [c for c in TRIAL_COLUMNS if c not in added]
    (tmp_path / "trials.csv").write_text(csv_text(before, rows))  # as a ropekit before them wrote it
    again = run_sweep(built, tmp_path, quiet=True)
    assert again.computed == 0 and again.reused == first.cells
    assert read_csv(tmp_path / "trials.csv")[:2] == (TRIAL_COLUMNS, rows)
