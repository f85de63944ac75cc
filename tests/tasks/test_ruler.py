"""RULER's niah tasks proven against their sources: the samples and prompts against lm-evaluation-harness's
port (``lm_eval/tasks/ruler/``, the task built from its own YAML, requests and all), the outputs and scores
against lm-eval run through ropekit's backend on the same samples, and the score against RULER's own
``scripts/eval/synthetic/constants.py`` (rewritten below)."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from ropekit.cli import main, results_table
from ropekit.report import write_report
from ropekit.sweep import SpecError, dry_run, run_sweep, spec_from_dict
from ropekit.sweep.cells import plan_cells
from ropekit.sweep.cost import Rates, pass_seconds
from ropekit.tasks import TaskSettingsError, get_task
from ropekit.tasks.ruler import NIAH, _port, context, punkt_installed, samples, string_match_all
from tests.models.tiny import WORDS, add_tokenizer, make_checkpoint, write_corpus

RATES = Rates(matmul=1e11, causal=5e10, band=2e10, logits=1e9)  # injected: nothing is measured
LENGTH = 512  # the tiny model's word tokenizer: RULER's repeat haystack fills it in a few dozen sentences
RUNNABLE = [name for name, args in NIAH.items() if args["type_haystack"] != "essay"]


# NVIDIA/RULER scripts/eval/evaluate.py postprocess_pred and scripts/eval/synthetic/constants.py
# string_match_all, as RULER scores a batch (percent, two decimals).
def ruler_postprocess_pred(predict_str: str) -> str:
    predict_str = predict_str.strip()
    return re.sub(r"[\x00-\x1f]", "\n", predict_str).strip()


def ruler_string_match_all(preds: list[str], refs: list[list[str]]) -> float:
    score = sum(
        sum(1.0 if r.lower() in pred.lower() else 0.0 for r in ref) / len(ref)
        for pred, ref in zip(preds, refs, strict=True)
    )
    return round(score / len(preds) * 100, 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("ruler")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (300, 300))
    _port()  # lm-eval's port builds its 6.2M keys once: every test below shares them
    return base


def lm_eval_task(name: str, pretrained: Path, seed: int, n: int, essay: list[str] | None = None):
    """lm-eval's own task, built from its YAML with Python's and numpy's generators seeded as a sweep seeds
    them, drawing ``n`` samples (its custom_dataset draws 500: the same first ``n``, fewer to draw); an essay
    task's haystack ``essay`` (words) where its ``get_haystack`` would download Paul Graham's essays."""
    import lm_eval.tasks.ruler as package
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(list(package.__path__)[0]) / f"{name}.yaml")
    scope = config["custom_dataset"].__globals__
    real, haystack = scope["generate_samples"], scope["get_haystack"]
    scope["generate_samples"] = lambda *args, **kwargs: real(*args, **{**kwargs, "num_samples": n})
    if essay is not None:
        scope["get_haystack"] = lambda type_haystack: essay if type_haystack == "essay" else haystack(type_haystack)
    try:
        random.seed(seed)
        np.random.seed(seed)
        metadata = {**config.get("metadata", {}), "pretrained": str(pretrained), "max_seq_lengths": [LENGTH]}
        task = ConfigurableTask(config={**config, "metadata": metadata})
    finally:
        scope["generate_samples"], scope["get_haystack"] = real, haystack
    task.build_all_requests(limit=n, rank=0, world_size=1)
    return task


@pytest.mark.parametrize("name", RUNNABLE)
def test_samples_and_prompts_are_lm_evals(tiny, name):
    from transformers import AutoTokenizer

    task = lm_eval_task(name, tiny / "tiny", seed=7, n=3)
    settings = get_task(name).table({"seed": 7, "trials": 3})
    mine = samples(AutoTokenizer.from_pretrained(tiny / "tiny"), settings, LENGTH)
    docs = list(task.eval_docs)[:3]
    assert [(m["input"], m["outputs"], m["gen_prefix"]) for m in mine] == [
        (d["input"], d["outputs"], d["gen_prefix"]) for d in docs
    ]
    assert [context(m) for m in mine] == [instance.args[0] for instance in task.instances]
    assert task.instances[0].args[1]["max_gen_toks"] == get_task(name).generates == 128


def test_a_ruler_sweep_writes_and_scores_as_lm_eval_through_ropekits_backend(tiny, tmp_path):
    from lm_eval.api.instance import Instance  # noqa: F401  (the requests below are lm-eval's own)

    from ropekit.lmeval import RopekitLM

    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "lengths": [LENGTH]}
    spec = spec_from_dict({**data, "ropes": {"default": "default"}, "tasks": ["niah_multikey_3"]})
    spec = spec_from_dict({**spec.to_dict(), "niah_multikey_3": {"trials": 3, "seed": 7}})
    assert run_sweep(spec, tmp_path, quiet=True).ok
    with (tmp_path / "trials.csv").open() as f:
        trials = sorted(csv.DictReader(f), key=lambda r: int(r["trial"]))
    task = lm_eval_task("niah_multikey_3", tiny / "tiny", seed=7, n=3)
    outputs = RopekitLM(pretrained=str(tiny / "tiny"), max_length=LENGTH).generate_until(task.instances)
    assert [json.loads(r["output"]) for r in trials] == outputs
    scores = [task.process_results(doc, [out])[str(LENGTH)] for doc, out in zip(task.eval_docs, outputs, strict=True)]
    assert [float(r["match"]) for r in trials] == scores
    (row,) = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert row["depth"] == "" and float(row["accuracy"]) == pytest.approx(sum(scores) / 3, abs=5e-5)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["retrieval"]["depths"] == {"niah_multikey_3": []}
    assert "string_match_all" in meta["retrieval"]["generated"]

    # the report and the printed table read a cell without a depth, with its own score and interval
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "RULER's tasks (niah_multikey_3) have no depth (its needle tasks hide their needles at random" in report
    assert "Each prompt hides a key at a depth" not in report  # no task of this sweep places one
    assert "A trial is exact when greedy decoding would" not in report and "their exact trials are those" in report
    figures = tmp_path / "figures"
    assert (figures / "accuracy.png").is_file() and not (figures / "depth_heatmap.png").exists()
    assert "0 pending" in report and "niah_multikey_3: 3 trials per length" in report
    assert "*RULER average, percent [95 % interval], and effective length*" in report
    assert main(["report", str(tmp_path), "--ruler-threshold", "0"]) == 0  # the tiny model scores 0: reaches none
    assert "effective length (> 0)" in (tmp_path / "report.md").read_text()
    table = results_table(tmp_path)
    assert "niah_multikey_3, score (RULER's string_match_all, mean over trials)" in table and "pending" not in table
    # the dry run prices a trial's generation too, and names it without a depth
    dry = dry_run(spec, tmp_path / "priced", rates=RATES)
    assert [p.doc for p in dry.passes] == [f"niah_multikey_3 trial {t}" for t in range(3)]
    config = plan_cells(spec, "")[0][0].config
    # one forward of the prompt, the answer's other 5 tokens after it, one pass per token written (128)
    prompt, answer = pass_seconds(config, LENGTH, RATES, head_rows=1), pass_seconds(config, 5, RATES, head_rows=5)
    written = 128 * pass_seconds(config, 1, RATES, head_rows=1)
    assert dry.passes[0].seconds == pytest.approx(prompt + answer + written)


@pytest.mark.parametrize(
    ("output", "references"),
    [
        ("The special magic number is 1234567.", ["1234567"]),
        ("  1234567, 7654321\x07 and more", ["1234567", "7654321", "1111111", "2222222"]),
        ("ABC-DEF", ["abc-def"]),
        ("", ["42"]),
        ("4 2", ["42"]),
    ],
)
def test_the_score_is_rulers_string_match_all(output, references):
    expected = ruler_string_match_all([ruler_postprocess_pred(output)], [references]) / 100
    assert string_match_all(output, references) == pytest.approx(expected, abs=5e-5)


def test_a_ruler_tasks_table_and_bad_input(tiny):
    with pytest.raises(TaskSettingsError, match=r"niah_single_1: unknown key 'depths'"):
        get_task("niah_single_1").table({"depths": [50]})  # RULER places the needles at random
    with pytest.raises(TaskSettingsError, match=r"niah_multikey_2.keys = 0 is not allowed"):
        get_task("niah_multikey_2").table({"keys": 0})
    with pytest.raises(TaskSettingsError, match=r"niah_single_1.essay: niah_single_1's haystack is 'repeat'"):
        get_task("niah_single_1").table({"essay": str(tiny / "corpus")})
    assert get_task("niah_multikey_2").table({"keys": 3}).arguments()["num_needle_k"] == 3
    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "ropes": {"default": "default"}}
    with pytest.raises(SpecError, match=r"lengths: length=96 cannot hold a niah_single_1 sample"):
        run_sweep(spec_from_dict({**data, "lengths": [96], "tasks": ["niah_single_1"]}), tiny / "short", quiet=True)
    assert not (tiny / "short").exists()


@pytest.mark.skipif(punkt_installed(), reason="nltk's punkt_tab is installed here")
def test_an_essay_task_without_punkt_is_refused_by_name():
    with pytest.raises(TaskSettingsError) as refused:
        get_task("niah_single_2").table(None)
    assert str(refused.value) == (
        "niah_single_2 splits its essay haystack into sentences with nltk's punkt_tab, which is not installed here "
        "(python -m nltk.downloader punkt_tab); these RULER tasks need no essay: niah_single_1, niah_multikey_2, "
        "niah_multikey_3"
    )


ESSAYS = [name for name, args in NIAH.items() if args["type_haystack"] == "essay"]


@pytest.fixture
def punkt_tab(tmp_path, monkeypatch) -> Path:
    """An English punkt_tab without parameters (no abbreviations, collocations or sentence starters) where
    nltk looks first: the real one cannot be downloaded here, and ropekit and lm-eval's port both split the
    essay with whichever nltk finds, so their samples compare under this one as under the real one."""
    import nltk

    folder = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (folder / name).write_text("")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data"), *nltk.data.path])
    return folder


@pytest.mark.parametrize("name", ESSAYS)
def test_essay_samples_and_prompts_are_lm_evals_with_the_same_essay_and_punkt(tiny, name, punkt_tab):
    """The five essay tasks: lm-eval's port reads Paul Graham's essays from the hub (``get_haystack``), here
    replaced by the text ropekit reads (a folder's .txt files, as a user's ``essay``); then its samples and
    prompts are ropekit's, and the sweep says which essay it read (meta.json, the report)."""
    from transformers import AutoTokenizer

    from ropekit.tasks.ruler import essay_text

    assert punkt_installed()
    rng = random.Random(3)
    essay = punkt_tab.parents[3] / "essays"  # a folder of .txt files: sentences of the tiny tokenizer's words
    essay.mkdir()
    for part in ("a", "b"):
        sentences = (" ".join(rng.choices(WORDS, k=rng.randint(4, 12))).capitalize() + "." for _ in range(300))
        (essay / f"{part}.txt").write_text(" ".join(sentences))
    settings = get_task(name).table({"seed": 7, "trials": 3, "essay": str(essay)})
    haystack = re.sub(r"\s+", " ", essay_text(settings)).split(" ")  # as the port's get_haystack("essay")
    task = lm_eval_task(name, tiny / "tiny", seed=7, n=3, essay=haystack)
    mine = samples(AutoTokenizer.from_pretrained(tiny / "tiny"), settings, LENGTH)
    docs = list(task.eval_docs)[:3]
    assert [(m["input"], m["outputs"], m["gen_prefix"]) for m in mine] == [
        (d["input"], d["outputs"], d["gen_prefix"]) for d in docs
    ]
    assert [context(m) for m in mine] == [instance.args[0] for instance in task.instances]
    assert len({m["input"] for m in mine}) == 3 and all(". " in m["input"] for m in mine)  # sentences of the text
    if name != "niah_single_2":
        return
    data = {"models": [str(tiny / "tiny")], "corpus": str(tiny / "corpus"), "lengths": [LENGTH]}
    spec = spec_from_dict({**data, "ropes": {"default": "default"}, "tasks": [name], name: {"trials": 1}})
    out = punkt_tab.parents[3] / "out"
    assert run_sweep(spec, out, quiet=True).ok
    sources = json.loads((out / "meta.json").read_text())["retrieval"]["sources"]
    sha = hashlib.sha256(essay_text(get_task(name).table(None)).encode()).hexdigest()
    source = "the embedded corpus shakespeare (no essay given; RULER reads Paul Graham's)"
    assert sources == {name: {"essay": {"source": source, "sha256": sha}}}
    write_report(out)
    assert f"prompts read {name}'s essay: {source}, sha256 {sha[:12]}." in (out / "report.md").read_text()
