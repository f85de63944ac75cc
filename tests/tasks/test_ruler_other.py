"""RULER's vt, cwe, fwe, qa_squad and qa_hotpot and the ``ruler`` suite proven against their sources: the
samples and prompts against lm-evaluation-harness's own YAML tasks (``lm_eval/tasks/ruler/``), the outputs and
scores against lm-eval run through ropekit's backend on the same samples, the qa score against RULER's own
``scripts/eval/synthetic/constants.py`` (rewritten below), and the guards against the port's samplers."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

from ropekit.cache import Notice
from ropekit.cli import results_table
from ropekit.report import load_sweep, plot_accuracy, write_report
from ropekit.sweep import SpecError, run_sweep, spec_from_dict
from ropekit.tasks import TaskSettingsError, get_task
from ropekit.tasks.ruler import NIAH, context, punkt_installed
from ropekit.tasks.ruler_other import DELIMITER, TOKENS, read_qa, samples, string_match_part
from tests.models.tiny import WORDS, add_tokenizer, make_checkpoint, write_corpus

# Each task's length for the tiny model's word tokenizer: vt's few-shot example and noise lines and cwe's
# sizing example need ~700 tokens; fwe and qa fill 512.
LENGTHS = {"vt": 1024, "cwe": 1024, "fwe": 512, "qa_squad": 512, "qa_hotpot": 512}
YAML = {"vt": "vt", "cwe": "cwe", "fwe": "fwe", "qa_squad": "qa_squad", "qa_hotpot": "qa_hotpot"}
# The function of each port module that the YAML's dataset builder calls with num_samples=500 (fwe's: its default)
SAMPLER = {
    "vt": "sys_vartrack_w_noise_random",
    "cwe": "sys_word_pair_random",
    "fwe": "sys_kwext",
    "qa_squad": "generate_samples",
    "qa_hotpot": "generate_samples",
}


# NVIDIA/RULER scripts/eval/evaluate.py postprocess_pred and scripts/eval/synthetic/constants.py
# string_match_part, as RULER scores a batch (percent, two decimals).
def ruler_postprocess_pred(predict_str: str) -> str:
    import re

    predict_str = predict_str.strip()
    return re.sub(r"[\x00-\x1f]", "\n", predict_str).strip()


def ruler_string_match_part(preds: list[str], refs: list[list[str]]) -> float:
    score = sum(
        max(1.0 if r.lower() in pred.lower() else 0.0 for r in ref) for pred, ref in zip(preds, refs, strict=True)
    )
    return round(score / len(preds) * 100, 2)


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def squad(rng: random.Random) -> dict:
    """A dev set in SQuAD 2.0's format: articles of paragraphs, each with answerable and impossible questions
    (answers repeated as SQuAD's annotators repeat them)."""
    articles = []
    for _ in range(4):
        paragraphs = []
        for _ in range(5):
            answer = words(rng, 2)
            qas = [
                {"question": words(rng, 6) + "?", "answers": [{"text": answer}] * 2, "is_impossible": False},
                {"question": words(rng, 5) + "?", "answers": [], "is_impossible": True},
            ]
            paragraphs.append({"context": f"{words(rng, 20)} {answer} {words(rng, 10)}", "qas": qas})
        articles.append({"title": words(rng, 1), "paragraphs": paragraphs})
    return {"version": "v2.0", "data": articles}


def hotpot(rng: random.Random) -> list:
    """A dev set in HotpotQA's distractor format: each question with its titled paragraphs of sentences."""
    return [
        {
            "question": words(rng, 7) + "?",
            "answer": words(rng, 1),
            "context": [[words(rng, 2), [words(rng, 8) + ". ", words(rng, 6) + "."]] for _ in range(4)],
        }
        for _ in range(12)
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ruler_other")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (300, 300))
    rng = random.Random(3)
    (base / "dev-v2.0.json").write_text(json.dumps(squad(rng)))
    (base / "hotpot_dev_distractor_v1.json").write_text(json.dumps(hotpot(rng)))
    return base


def table(tiny: Path, name: str, **keys) -> dict:
    files = {"qa_squad": "dev-v2.0.json", "qa_hotpot": "hotpot_dev_distractor_v1.json"}
    return {**keys, **({"dataset": str(tiny / files[name])} if name in files else {})}


def lm_eval_task(name: str, tiny: Path, seed: int, n: int):
    """lm-eval's own task, built from its YAML with Python's and numpy's generators seeded as a sweep seeds
    them, drawing ``n`` samples where it draws 500 (the same first ``n``); qa's reader is handed the local
    file where it would download it."""
    import lm_eval.tasks.ruler as package
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(list(package.__path__)[0]) / f"{YAML[name]}.yaml")
    scope = config["custom_dataset"].__globals__
    real = scope[SAMPLER[name]]
    scope[SAMPLER[name]] = lambda *a, **kw: real(*a, **{**kw, "num_samples": min(kw.get("num_samples", 500), n)})
    if name.startswith("qa_"):
        local = json.loads(Path(table(tiny, name)["dataset"]).read_text())
        download, scope["download_json"] = scope["download_json"], lambda url: local
        scope["read_squad"].cache_clear(), scope["read_hotpotqa"].cache_clear()
    if name == "cwe":  # its own generator as a fresh process imports it: random.Random(42) shuffles its words
        fresh = random.Random(42)
        fresh.shuffle(sorted(scope["WORDS"]))
        scope["RNG"].setstate(fresh.getstate())
    try:
        random.seed(seed)
        np.random.seed(seed)
        length = LENGTHS[name]
        metadata = {**config.get("metadata", {}), "pretrained": str(tiny / "tiny"), "max_seq_lengths": [length]}
        task = ConfigurableTask(config={**config, "metadata": metadata})
    finally:
        scope[SAMPLER[name]] = real
        if name.startswith("qa_"):
            scope["download_json"] = download
            scope["read_squad"].cache_clear(), scope["read_hotpotqa"].cache_clear()
    task.build_all_requests(limit=n, rank=0, world_size=1)
    return task


@pytest.mark.parametrize("name", list(LENGTHS))
def test_samples_and_prompts_are_lm_evals(tiny, name):
    from transformers import AutoTokenizer

    task = lm_eval_task(name, tiny, seed=7, n=3)
    settings = get_task(name).table(table(tiny, name, seed=7, trials=3))
    mine = samples(AutoTokenizer.from_pretrained(tiny / "tiny"), settings, LENGTHS[name])
    docs = list(task.eval_docs)[:3]
    assert [(m["input"], m["outputs"], m["gen_prefix"]) for m in mine] == [
        (d["input"], d["outputs"], d["gen_prefix"]) for d in docs
    ]
    assert [context(m, DELIMITER.get(name, " ")) for m in mine] == [instance.args[0] for instance in task.instances]
    assert task.instances[0].args[1]["max_gen_toks"] == get_task(name).generates == TOKENS[name]
    assert len({m["input"] for m in mine}) == 3  # three samples, not one drawn thrice


def test_the_qa_readers_are_the_ports(tiny):
    """ropekit reads the local file as the port's read_squad / read_hotpotqa read their download."""
    from lm_eval.tasks.ruler import qa_utils

    for name, read in (("qa_squad", qa_utils.read_squad), ("qa_hotpot", qa_utils.read_hotpotqa)):
        path = table(tiny, name)["dataset"]
        download = qa_utils.download_json
        qa_utils.download_json = lambda url, path=path: json.loads(Path(path).read_text())
        read.cache_clear()
        try:
            assert read_qa(name, path) == read()
        finally:
            qa_utils.download_json = download
            read.cache_clear()


@pytest.mark.parametrize("name", ["cwe", "qa_squad"])
def test_a_sweep_writes_and_scores_as_lm_eval_through_ropekits_backend(tiny, tmp_path, name):
    from ropekit.lmeval import RopekitLM

    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "lengths": [LENGTHS[name]]}
    spec = spec_from_dict({**data, "ropes": {"default": "default"}, "tasks": [name], name: table(tiny, name)})
    spec = spec_from_dict({**spec.to_dict(), name: table(tiny, name, trials=3, seed=7)})
    assert run_sweep(spec, tmp_path, quiet=True).ok
    with (tmp_path / "trials.csv").open() as f:
        trials = sorted(csv.DictReader(f), key=lambda r: int(r["trial"]))
    task = lm_eval_task(name, tiny, seed=7, n=3)
    outputs = RopekitLM(pretrained=str(tiny / "tiny"), max_length=LENGTHS[name]).generate_until(task.instances)
    assert [json.loads(r["output"]) for r in trials] == outputs
    # lm-eval's qa score is the share of the answers written: RULER's where all of a question's are equal
    docs = list(task.eval_docs)
    assert not name.startswith("qa_") or all(len(set(d["outputs"])) == 1 for d in docs)
    scores = [task.process_results(doc, [out])[str(LENGTHS[name])] for doc, out in zip(docs, outputs, strict=True)]
    assert [float(r["match"]) for r in trials] == scores
    (row,) = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert row["depth"] == "" and float(row["accuracy"]) == pytest.approx(sum(scores) / 3, abs=5e-5)

    # meta.json, the report, its figure's axis and the printed table name the task's score
    metric = get_task(name).metric
    retrieval = json.loads((tmp_path / "meta.json").read_text())["retrieval"]
    assert retrieval["scores"] == {name: metric}
    # and the local file a qa task read, by its hash (cwe reads none)
    dataset = table(tiny, name).get("dataset")
    sha = hashlib.sha256(Path(dataset).read_bytes()).hexdigest() if dataset else ""
    assert retrieval.get("sources") == ({name: {"dataset": {"source": dataset, "sha256": sha}}} if dataset else None)
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert (f"prompts read {name}'s dataset: {dataset}, sha256 {sha[:12]}." in report) == bool(dataset)
    assert ("for qa_squad, 1 where any reference answer is in it (string_match_part)" in report) == (name == "qa_squad")
    sweep = load_sweep(tmp_path)
    figure = plot_accuracy(sweep.retrieval, scores=sweep.meta["retrieval"]["scores"])
    assert figure.axes[0].get_ylabel() == f"score ({metric}, mean over trials)"
    assert f"{name}, score (RULER's {metric}, mean over trials)" in results_table(tmp_path)


def test_a_sweeps_outputs_can_score(tiny, tmp_path):
    """The scores above are all 0 for a random model; here each trial's own references score 1 (and 0 with
    one of them left out, for string_match_all)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny / "tiny")
    for name, length in LENGTHS.items():
        settings = get_task(name).table(table(tiny, name, trials=2))
        trial = get_task(name).build(tokenizer, settings, length, None, 1, None)
        match = get_task(name).match
        assert match(" " + trial.value + ".", trial.references) == 1.0
        if name in ("vt", "fwe"):  # distinct random names: none is inside another
            assert match(", ".join(trial.references[1:]), trial.references) == pytest.approx(
                1 - 1 / len(trial.references)
            )


@pytest.mark.parametrize(
    ("output", "references"),
    [
        ("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"]),
        ("broncos\x07 won", ["Denver Broncos", "broncos"]),
        ("", ["42"]),
        ("no", ["yes"]),
    ],
)
def test_the_qa_score_is_rulers_string_match_part(output, references):
    expected = ruler_string_match_part([ruler_postprocess_pred(output)], [references]) / 100
    assert string_match_part(output, references) == pytest.approx(expected, abs=5e-5)


def test_lm_evals_qa_score_differs_where_only_some_answers_are_written():
    from lm_eval.tasks.ruler.common_utils import process_results_part

    doc = {"max_length": 4096, "outputs": ["Denver Broncos", "The Denver Broncos", "Broncos"]}
    assert process_results_part(doc, ["Denver Broncos"])["4096"] == pytest.approx(2 / 3)
    assert string_match_part("Denver Broncos", doc["outputs"]) == 1.0


@pytest.mark.parametrize("name", ["vt", "cwe"])
def test_too_short_a_length_is_refused_before_the_port_would_loop(tiny, name):
    length = 512  # the port's sampler would retry forever here (the guard's minimum: the next test)
    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "ropes": {"default": "default"}}
    spec = spec_from_dict({**data, "lengths": [length], "tasks": [name]})
    with pytest.raises(
        SpecError,
        match=rf"lengths: length={length} cannot hold a {name} sample: .* needs \d+ tokens; use a longer length",
    ):
        run_sweep(spec, tiny / "short", quiet=True)
    assert not (tiny / "short").exists()


def test_the_guards_minimum_is_the_ports_own(tiny):
    """At the minimum a guard names the port makes its samples; one token less, the guard refuses."""
    import re

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny / "tiny")
    for name in ("vt", "cwe"):
        settings = get_task(name).table({"trials": 2})
        with pytest.raises(ValueError, match="cannot hold") as refused:
            samples(tokenizer, settings, 300)
        need = int(re.search(r"needs (\d+) tokens", str(refused.value))[1])
        assert len(samples(tokenizer, settings, need)) == 2
        with pytest.raises(ValueError, match=rf"needs {need} tokens"):
            samples(tokenizer, settings, need - 1)
    with pytest.raises(ValueError, match=r"length=199 cannot hold a fwe sample: .* needs 200 tokens"):
        samples(tokenizer, get_task("fwe").table(None), 199)


def test_tables_and_bad_input(tiny):
    with pytest.raises(TaskSettingsError, match=r"vt: unknown key 'depths'"):
        get_task("vt").table({"depths": [50]})
    with pytest.raises(TaskSettingsError, match=r"vt.hops = 0 is not allowed"):
        get_task("vt").table({"hops": 0})
    with pytest.raises(TaskSettingsError, match=r"fwe.alpha = 1 is not allowed"):
        get_task("fwe").table({"alpha": 1})
    assert get_task("vt").table({"chains": 2, "hops": 3}).arguments() == {"num_chains": 2, "num_hops": 3}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny / "tiny")
    (vt,) = samples(tokenizer, get_task("vt").table({"hops": 2, "trials": 1}), LENGTHS["vt"])
    assert len(vt["outputs"]) == 3 and "3 variables are assgined the value" in vt["gen_prefix"]  # RULER's typo
    fwe = [samples(tokenizer, get_task("fwe").table({"alpha": a, "trials": 1}), 512)[0]["input"] for a in (2, 3)]
    assert fwe[0] != fwe[1]
    with pytest.raises(TaskSettingsError) as refused:
        get_task("qa_squad").table(None)
    assert str(refused.value) == (
        "qa_squad reads SQuAD 2.0's dev set from a local file, which cannot be downloaded here: set "
        "qa_squad.dataset = the path of dev-v2.0.json"
    )
    with pytest.raises(TaskSettingsError, match=r"qa_hotpot.dataset = '/nowhere.json' is not allowed"):
        get_task("qa_hotpot").table({"dataset": "/nowhere.json"})
    wrong = get_task("qa_hotpot").table({"dataset": table(tiny, "qa_squad")["dataset"]})  # SQuAD's, not HotpotQA's
    with pytest.raises(ValueError, match=r"qa_hotpot.dataset = .* is not HotpotQA's dev set"):
        samples(tokenizer, wrong, 512)
    with pytest.raises(ValueError, match=r"qa_hotpot.trials = 13 is more than the 12 questions it holds"):
        samples(tokenizer, get_task("qa_hotpot").table(table(tiny, "qa_hotpot", trials=13)), 512)
    # a task's cells are keyed by its dev set's contents
    squad_file = Path(table(tiny, "qa_squad")["dataset"])
    before = get_task("qa_squad").table(table(tiny, "qa_squad")).definition()
    copy = tiny / "copy.json"
    copy.write_text(squad_file.read_text().replace("v2.0", "v2.1"))
    after = get_task("qa_squad").table({"dataset": str(copy)}).definition()
    assert before["dataset_sha256"] != after["dataset_sha256"]


def test_ruler_names_the_whole_suite(tiny):
    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "ropes": {"default": "default"}}
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        spec = spec_from_dict({**data, "lengths": [1024], "tasks": ["perplexity", "ruler"]})
    essays = [name for name, args in NIAH.items() if args["type_haystack"] == "essay"]
    skipped = ["qa_squad", "qa_hotpot", *([] if punkt_installed() else essays)]
    runs = [t for t in (*NIAH, "vt", "cwe", "fwe", "qa_squad", "qa_hotpot") if t not in skipped]
    assert spec.tasks == ("perplexity", *runs)
    (notice,) = [w for w in told if issubclass(w.category, Notice)]
    assert f"tasks: skipped {len(skipped)} tasks that cannot run here: " in str(notice.message)
    assert "; qa_squad: reads SQuAD 2.0's dev set from a local file" in str(notice.message)
    if not punkt_installed():
        assert f"{', '.join(essays)}: splits its essay haystack into sentences with nltk's punkt_tab" in str(
            notice.message
        )
    # a table given runs its task (or refuses it by name), and a task named twice runs once
    squad_table = table(tiny, "qa_squad")
    spec = spec_from_dict({**data, "lengths": [1024], "tasks": ["vt", "ruler"], "qa_squad": squad_table})
    assert spec.tasks[0] == "vt" and spec.tasks.count("vt") == 1 and "qa_squad" in spec.tasks
    with pytest.raises(SpecError, match=r"qa_hotpot.dataset = '/nowhere.json' is not allowed"):
        spec_from_dict({**data, "lengths": [1024], "tasks": ["ruler"], "qa_hotpot": {"dataset": "/nowhere.json"}})
    with pytest.raises(SpecError, match=r"tasks: 'rulr' is not a task; expected some of perplexity, .*, ruler"):
        spec_from_dict({**data, "lengths": [1024], "tasks": ["rulr"]})


def test_the_cli_sets_a_key_in_the_suites_tasks_that_run(tiny):
    from ropekit.cli import build_parser, sweep_spec_from_args

    flags = ["sweep", "--model", "m", "--lengths", "1024", "--tasks", "ruler", "--trials", "2", "--hops", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Notice)
        spec = sweep_spec_from_args(build_parser().parse_args(flags))
    assert spec.retrieval["vt"].hops == 3 and "qa_squad" not in spec.tasks
    assert {task: settings.trials for task, settings in spec.retrieval_tasks.items()} == dict.fromkeys(spec.tasks, 2)


def test_the_suite_builds_its_samples_without_nltks_messages():
    """The suite asks the essay tasks whether punkt_tab is here before the port is imported: nltk, imported
    then, must not print the port's failed download (its downloader writes to the stderr of its import)."""
    import subprocess
    import sys

    code = "from ropekit.tasks.ruler import _port, punkt_installed; punkt_installed(); _port()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "nltk_data" not in done.stderr + done.stdout
