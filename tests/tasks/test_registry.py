"""A trial task is one record, addable from outside: from a notebook with register_task, and from an
installed package through the ``ropekit.tasks`` entry-point group, found by ``ropekit sweep`` (and its
dry run), ``status`` and ``report`` without an import."""

from __future__ import annotations

import csv
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ropekit
from ropekit.sweep import SpecError, spec_from_dict
from ropekit.tasks import DEPTHS, DocumentTask, TaskSettingsError, TrialSettings, TrialTask, get_task, registry, trial_tasks
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
    install_plugin(site, "ropekit_echo_task", PLUGIN, "ropekit.tasks", "echo")
    make_checkpoint(tmp_path / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(tmp_path / "tiny")
    write_corpus(tmp_path / "corpus", (300, 280))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ropekit.cli", *args], env=env, capture_output=True, text=True)

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
