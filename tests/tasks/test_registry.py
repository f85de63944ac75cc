"""A trial task is one record, addable from outside: from a notebook with register_task, and from an
installed package through the ``ropekit.tasks`` entry-point group, found by ``ropekit sweep`` (and its
dry run), ``status`` and ``report`` without an import."""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ropekit
from ropekit.sweep import SpecError, spec_from_dict
from ropekit.sweep.store import StoreError
from ropekit.tasks import (
    DEPTHS,
    DocumentTask,
    TaskSettingsError,
    TrialSettings,
    TrialTask,
    get_task,
    registry,
    trial_tasks,
)
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus
from tests.plugins import install_plugin

ROOT = Path(__file__).resolve().parents[2]

# A plugin's whole source: a number hidden in a filler of the task's own choosing (its own key).
PLUGIN = textwrap.dedent(
    """
    from dataclasses import dataclass

    from ropekit.eval.retrieval import Needle, filler_ids, needle_trial
    from ropekit.tasks import TaskSettingsError, TrialSettings, TrialTask

    ECHO = Needle("Remember the number.", "The number is {value}.", "What is the number? The number is")


    @dataclass(frozen=True)
    class EchoSettings(TrialSettings):
        filler: str = "Grass is green."

        def __post_init__(self):
            super().__post_init__()
            if not isinstance(self.filler, str) or not self.filler.strip():
                raise TaskSettingsError(f"{self.task}.filler = {self.filler!r} is not allowed; expected some text")


    def build(tokenizer, settings, length, depth, trial, documents=None):
        return needle_trial(
            tokenizer, "echo", length, depth, trial, seed=settings.seed, digits=4, needle=ECHO,
            haystack=lambda rng, n: filler_ids(tokenizer, n, settings.filler),
        )


    RECORD = TrialTask("echo", EchoSettings, build, description="a number in the filler of its table")
    """
)


def installed(tmp_path: Path, module: str, source: str, task: str):
    """``source`` installed as the package ``module`` naming the task ``task`` in the ``ropekit.tasks`` group, a
    tiny checkpoint in tmp_path/tiny and a corpus in tmp_path/corpus; returns a function running ``ropekit``
    with that package on its path."""
    site = tmp_path / "site"
    install_plugin(site, module, source, "ropekit.tasks", task)
    make_checkpoint(tmp_path / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(tmp_path / "tiny")
    write_corpus(tmp_path / "corpus", (300, 280))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ropekit.cli", *args], env=env, capture_output=True, text=True)

    return cli


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are dropped after it."""
    trial_tasks()  # ropekit's own first
    monkeypatch.setattr(registry.TASKS, "records", dict(registry.TASKS.records))


def test_ropekits_tasks_are_records():
    tasks = trial_tasks()
    assert list(tasks)[:2] == ["passkey", "needle"]
    assert tasks["needle"].reads_corpus and not tasks["passkey"].reads_corpus
    assert tasks["passkey"].settings.table_keys() == ("trials", "depths", "seed", "digits")
    assert tasks["needle"].table(None).depths == DEPTHS


def test_register_from_a_notebook_runs_in_a_spec(scratch_registry):
    namespace: dict = {}
    exec(PLUGIN, namespace)  # the plugin's own code, as a notebook cell would define it
    ropekit.tasks.register_task(namespace["RECORD"])
    base = {"models": ["m"], "corpus": "c", "lengths": [96], "ropes": {"default": "default"}}
    spec = spec_from_dict({**base, "tasks": ["echo"], "echo": {"filler": "Sky is blue.", "trials": 2}})
    settings = spec.retrieval_tasks["echo"]
    assert (settings.filler, settings.trials, settings.depths) == ("Sky is blue.", 2, DEPTHS)
    table = {"trials": 2, "depths": list(DEPTHS), "seed": 0, "filler": "Sky is blue."}
    assert settings.definition() == {"settings": table}  # what keys its cells
    with pytest.raises(SpecError, match="echo.filler = '  ' is not allowed"):
        spec_from_dict({**base, "tasks": ["echo"], "echo": {"filler": "  "}})
    with pytest.raises(SpecError, match=r"echo: unknown key 'digits'.*of the \[passkey\] and \[needle\] table"):
        spec_from_dict({**base, "tasks": ["echo"], "echo": {"digits": 3}})
    with pytest.raises(ValueError, match="already registered"):
        ropekit.tasks.register_task(TrialTask("echo", TrialSettings, lambda *a: None))


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="identifier"):
        TrialTask("no spaces", TrialSettings, lambda *a: None)
    with pytest.raises(ValueError, match="task 'perplexity' is already registered"):  # the document task's name
        ropekit.tasks.register_task(TrialTask("perplexity", TrialSettings, lambda *a: None))
    with pytest.raises(ValueError, match="expected a TrialTask"):  # the document kind is ropekit's own
        ropekit.tasks.register_task(DocumentTask("mine"))
    with pytest.raises(ValueError, match="TrialSettings"):
        TrialTask("plain", dict, lambda *a: None)
    with pytest.raises(TaskSettingsError, match="passkey.trials = 0"):
        get_task("passkey").table({"trials": 0})
    assert get_task("never_registered") is None


def test_an_installed_task_runs_through_sweep_status_report_and_the_dry_run(tmp_path, monkeypatch):
    site = tmp_path / "site"
    cli = installed(tmp_path, "ropekit_echo_task", PLUGIN, "echo")
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "tiny"), "--corpus", str(tmp_path / "corpus"), "--lengths", "96,160"]
    args += ["--rope", "default", "--rope", "yarn:2", "--tasks", "echo", "--trials", "2", "--depths", "0,50"]
    args += ["--filler", "the is the.", "--out", str(out)]  # not TOML: taken as text (words the tiny vocab has)
    dry = cli("sweep", *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "8 cells: 8 to run." in dry.stdout and "echo (all depths)" in dry.stdout
    sweep = cli("sweep", *args, "--quiet")
    assert sweep.returncode == 0, sweep.stderr
    assert "echo, exact answers of trials" in sweep.stdout
    assert (out / "report.html").is_file() and "echo" in (out / "report.md").read_text()
    status = cli("status", str(out))
    assert status.returncode == 0 and "8 of 8 cells done" in status.stdout, status.stdout + status.stderr
    again = cli("sweep", *args, "--dry-run")
    assert "8 cells: 8 done." in again.stdout, again.stdout + again.stderr

    # The oracle: each stored trial rebuilt by the plugin's own code in this process, scored by score_answer.
    monkeypatch.syspath_prepend(str(site))
    plugin = importlib.import_module("ropekit_echo_task")
    settings = plugin.RECORD.table({"trials": 2, "depths": [0, 50], "filler": "the is the."})
    default = plugin.RECORD.table({"trials": 2, "depths": [0, 50]})
    with (out / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 2 * 2 * 2 * 2  # ropes x lengths x depths x trials
    models = {"default": ropekit.load_model(tmp_path / "tiny")}
    models["yarn:2"] = ropekit.load_model(tmp_path / "tiny", rope_scaling="yarn:2")
    for row in trials:
        model = models[row["rope"]]
        trial = plugin.build(model.tokenizer, settings, int(row["length"]), float(row["depth"]), int(row["trial"]))
        plain = plugin.build(model.tokenizer, default, trial.length, trial.depth, trial.trial)
        assert trial.prompt_ids != plain.prompt_ids  # the table's own key reached the prompts
        score = ropekit.score_answer(model, trial.prompt_ids, trial.answer_ids)
        assert (row["value"], int(row["position"])) == (trial.value, trial.position)
        assert (int(row["exact"]), int(row["n_correct"])) == (int(score.exact), score.n_correct)
        assert float(row["logprob"]) == pytest.approx(score.logprob, rel=1e-5, abs=1e-5)


def test_perplexity_is_the_registered_document_task_a_spec_runs_by_default():
    """Perplexity is a record like the trial tasks, of the kind that scores the corpus's documents; a spec that
    names no tasks runs it, and no module outside its own compares a task's name with it (the sweep asks
    the record's kind)."""
    record = get_task("perplexity")
    assert isinstance(record, DocumentTask) and record.default and record.progress in record.columns
    assert ropekit.tasks.default_tasks() == ("perplexity",) and "perplexity" not in trial_tasks()
    base = {"models": ["m"], "corpus": "c", "lengths": [96], "ropes": {"default": "default"}}
    assert spec_from_dict(base).tasks == ("perplexity",)
    assert spec_from_dict({**base, "tasks": ["passkey"]}).document_task is None
    package = Path(ropekit.__file__).parent
    naming = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "PERPLEXITY" in path.read_text().replace("PERPLEXITY_", "")
    }
    # its record, the results.csv convention (modes.py: the value of the task column) and the two readers
    # of results.csv that run without the registry (the store's upgrade of files from before tasks, the report)
    assert naming == {"tasks/perplexity.py", "modes.py", "sweep/store.py", "report/results.py"}


# A plugin task that scores each trial its own way and fills results.csv columns of its own: the mean NLL of
# the prompt's tokens, its figure without an interval, and the tokens it read.
OWN_PLUGIN = PLUGIN.replace('RECORD = TrialTask("echo"', 'ECHO_RECORD = TrialTask("echo"') + textwrap.dedent(
    """
    def score(model, tokenizer, settings, trial):
        from ropekit.eval import token_nll

        nll = token_nll(model, list(trial.prompt_ids))
        return {"nll_sum": float(nll.double().sum()), "n": int(nll.numel())}


    def summarize(trials, seed):
        n = sum(t["n"] for t in trials)
        return {"prompt_nll": f"{sum(t['nll_sum'] for t in trials) / n:.6f}", "prompt_tokens": n}


    RECORD = TrialTask(
        "tally", EchoSettings, build, description="the prompt's own NLL", score=score, summarize=summarize,
        passes=lambda config, settings, length: [length], columns=("prompt_nll", "prompt_tokens"),
    )
    """
)


def test_a_plugin_tasks_own_columns_reach_results_csv_status_and_the_report(tmp_path):
    """results.csv gains the columns a plugin task fills (after ropekit's own), the report shows them as the
    task says (meta.json's retrieval.own: here the default, a table and a figure of its first column), and a
    rerun reads every line back."""
    cli = installed(tmp_path, "ropekit_tally_task", OWN_PLUGIN, "tally")
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "tiny"), "--corpus", str(tmp_path / "corpus"), "--lengths", "96,128"]
    args += ["--rope", "default", "--rope", "yarn:2", "--tasks", "tally", "--trials", "2", "--depths", "50"]
    sweep = cli("sweep", *args, "--out", str(out))
    assert sweep.returncode == 0, sweep.stderr
    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[-2:] == ["prompt_nll", "prompt_tokens"] and len(rows) == 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["retrieval"]["own"]["tally"]["figure"] == "prompt_nll"
    with (out / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    for row in rows:  # the oracle: the stored trials' own numbers, summed as the plugin's summarize says
        numbers = [json.loads(t["scores"]) for t in trials if t["cell"] == row["cell"]]
        n = sum(x["n"] for x in numbers)
        assert int(row["prompt_tokens"]) == n == 2 * (int(row["length"]) - 1)
        assert float(row["prompt_nll"]) == pytest.approx(sum(x["nll_sum"] for x in numbers) / n, abs=1e-6)
    # the printed table: its first column (no interval: the task fills none), then the rest
    assert "prompt_nll (prompt_tokens)" in sweep.stdout and "prompt_nll [95 %]" not in sweep.stdout
    text = (out / "report.md").read_text()
    assert "## tally" in text and "prompt_tokens" in text and (out / "figures" / "tally.png").is_file()
    status = cli("status", str(out))
    assert status.returncode == 0 and "4 of 4 cells done" in status.stdout, status.stdout + status.stderr
    again = cli("sweep", *args, "--out", str(out), "--dry-run")
    assert "4 cells: 4 done." in again.stdout, again.stdout + again.stderr


def test_a_results_csv_without_a_tasks_columns_gains_them_in_place(tmp_path, scratch_registry):
    """A directory whose results.csv predates a task's own columns is upgraded in place (its rows kept, the
    new columns empty); a header of another ropekit is refused as before."""
    from ropekit.sweep.store import RESULT_COLUMNS, ResultStore

    namespace: dict = {}
    exec(OWN_PLUGIN, namespace)
    ropekit.tasks.register_task(namespace["RECORD"])
    base = {"models": ["m"], "corpus": "c", "lengths": [96], "ropes": {"default": "default"}}
    spec = spec_from_dict({**base, "tasks": ["passkey", "tally"]})
    out = tmp_path / "out"
    out.mkdir()
    row = dict.fromkeys(RESULT_COLUMNS, "") | {"model": "m", "rope": "default", "layer_mix": "native", "length": 96}
    from ropekit.cache import csv_text

    (out / "results.csv").write_text(csv_text(RESULT_COLUMNS, [{**row, "task": "passkey", "cell": "k1"}]))
    with ResultStore(out, spec) as store:
        assert store.result_columns == [*RESULT_COLUMNS, "prompt_nll", "prompt_tokens"]
        store.add_cell({**row, "task": "tally", "cell": "k2", "prompt_nll": "1.5", "prompt_tokens": 10})
    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        kept = list(reader)
    assert reader.fieldnames[-2:] == ["prompt_nll", "prompt_tokens"]
    assert [(r["cell"], r["prompt_nll"]) for r in kept] == [("k1", ""), ("k2", "1.5")]
    (out / "results.csv").write_text("model,rope,other\n")
    with pytest.raises(StoreError, match="written by another version of ropekit"):
        ResultStore(out, spec)
