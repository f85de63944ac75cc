"""Sweeps end to end on a tiny checkpoint: results, resume (also after SIGKILL), failures, specs,
the four modes, bit-for-bit reproducibility and what meta.json needs to rerun a sweep."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ropekit
from ropekit import stats
from ropekit.cache import Notice
from ropekit.cli import build_parser, main, sweep_spec_from_args
from ropekit.data import load_corpus, tokenize
from ropekit.eval import perplexity
from ropekit.eval.perplexity import (
    BLOCK,
    WEIGHTING,
    Score,
    aggregate,
    document_ids,
    encoding,
    plan_document,
    score_plan,
    text_counts,
)
from ropekit.models import precision
from ropekit.sweep import SpecError, default_spec, load_spec, run_sweep, spec_from_dict
from ropekit.sweep import perplexity as perplexity_module
from ropekit.sweep.cells import plan_cells
from ropekit.sweep.spec import reproduce_command
from ropekit.sweep.store import DOC_COLUMNS, RESULT_COLUMNS, StoreError, parse_blocks
from tests.conftest import FAST_BF16

ROOT = Path(__file__).resolve().parents[2]


def spec(setup, **changes):
    data = {
        "models": [str(setup / "tiny")],
        "corpus": str(setup / "corpus"),
        "lengths": [64, 128, 256, 512],
        "ropes": {"default": "default", "yarn": "yarn:4", "dyn": {"rope_type": "dynamic", "factor": 2.0}},
        "layer_mixes": ["native", "LLLG@32+nope"],
        "n_docs": 2,
        **changes,
    }
    return spec_from_dict(data)


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return sorted((r for r in csv.DictReader(f)), key=lambda r: r["cell"])


def test_sweep_writes_every_cell_and_resumes_without_recomputing(setup, tmp_path):
    summary = run_sweep(spec(setup), tmp_path, quiet=True)
    assert summary.ok and summary.cells == 2 * 3 * 4 == summary.computed
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == ",".join(RESULT_COLUMNS)
    assert (tmp_path / "documents.csv").read_text().splitlines()[0] == ",".join(DOC_COLUMNS)
    result = rows(tmp_path / "results.csv")
    assert len(result) == 24 and {r["status"] for r in result} == {"ok"}
    for r in result:
        assert int(r["n_docs"]) == 2 and int(r["n_tokens"]) == 2 * (int(r["length"]) - 1)
        assert float(r["ppl"]) == pytest.approx(math.exp(float(r["nll"])), rel=1e-5)
        blocks = 2 * -(-(int(r["length"]) - 1) // BLOCK)  # two documents, fewer than stats.MIN_UNITS
        if blocks >= stats.MIN_UNITS:
            assert (
                float(r["ppl_lo"]) < float(r["ppl"]) < float(r["ppl_hi"]) and r["interval"] == "bootstrap-blocks64-2000"
            )
        else:
            assert (
                r["ppl_lo"] == r["ppl_hi"] == ""
                and r["interval"] == f"none: {blocks} blocks of 64 predictions, fewer than 16"
            )
    docs = rows(tmp_path / "documents.csv")
    assert len(docs) == 48
    # documents are chosen in corpus order among those long enough: 512 tokens -> doc1 and doc3
    assert sorted({d["doc"] for d in docs if d["length"] == "512"}) == ["doc1", "doc3"]
    # any aggregate can be recomputed from the per-document sums
    one = [d for d in docs if d["cell"] == result[0]["cell"]]
    nll = sum(float(d["nll_sum"]) for d in one) / sum(int(d["n_tokens"]) for d in one)
    assert nll == pytest.approx(float(result[0]["nll"]), rel=1e-6)
    timings = rows(tmp_path / "timings.csv")
    assert sorted(t["cell"] for t in timings) == sorted(r["cell"] for r in result)
    again = run_sweep(spec(setup), tmp_path, quiet=True)
    assert again.computed == 0 and again.reused == 24
    assert len(rows(tmp_path / "timings.csv")) == 24  # nothing ran again
    assert rows(tmp_path / "results.csv") == result


def test_a_sweep_reads_each_checkpoints_config_once(setup, tmp_path, monkeypatch):
    """Resolve a model once: 9 cells (3 ropes x 3 lengths) of one model run transformers' config class
    (``_upstream_defaults``, inside ``checkpoint_config``) once, plan each rope once, and the worker builds
    the weights into the planned config instead of reading the checkpoint's again."""
    from ropekit.models import config as model_config

    calls = {"upstream": 0, "plan": 0}
    upstream, plan = model_config._upstream_defaults, model_config.plan_config

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(model_config, "_upstream_defaults", counted("upstream", upstream))
    monkeypatch.setattr("ropekit.sweep.cells.plan_config", counted("plan", plan))
    monkeypatch.setattr(model_config, "plan_config", counted("plan", plan))
    summary = run_sweep(spec(setup, lengths=[64, 128, 256], layer_mixes=["native"]), tmp_path, quiet=True)
    assert summary.ok and summary.computed == 9
    assert calls == {"upstream": 1, "plan": 3}


def test_status_of_a_sweep_loads_no_torch(setup, tmp_path):
    """``ropekit status`` reads DIR alone (its units.json, meta.json and rows): the model code never loads."""
    from tests.test_imports import importtime

    run_sweep(spec(setup, lengths=[64], layer_mixes=["native"]), tmp_path, quiet=True)
    done, imported = importtime("-m", "ropekit.cli", "status", str(tmp_path))
    assert done.returncode == 0 and "3 of 3 cells done" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "ropekit.sweep.status" in imported and "torch" not in imported


def test_changed_spec_is_refused_unless_forced(setup, tmp_path):
    run_sweep(spec(setup, lengths=[64, 128]), tmp_path, quiet=True)
    with pytest.raises(SpecError, match="different sweep spec"):
        run_sweep(spec(setup, lengths=[64, 256]), tmp_path, quiet=True)
    forced = run_sweep(spec(setup, lengths=[64, 256]), tmp_path, quiet=True, force=True)
    assert forced.reused == 6 and forced.computed == 6  # length 64 kept, 128 dropped, 256 new
    assert sorted({r["length"] for r in rows(tmp_path / "results.csv")}) == ["256", "64"]


def test_killed_sweep_resumes_to_exactly_the_uninterrupted_rows(setup, tmp_path):
    reference = tmp_path / "reference"
    run_sweep(spec(setup), reference, quiet=True)
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "ropekit.cli",
        "sweep",
        "--quiet",
        "--out",
        str(out),
        "--model",
        str(setup / "tiny"),
        "--corpus",
        str(setup / "corpus"),
        "--lengths",
        "64,128,256,512",
        "--rope",
        "default",
        "--rope",
        "yarn=yarn:4",
        "--rope",
        'dyn={"rope_type": "dynamic", "factor": 2.0}',
        "--layer-mix",
        "native",
        "--layer-mix",
        "LLLG@32+nope",
        "--n-docs",
        "2",
    ]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "documents.csv").exists():
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = rows(out / "results.csv") if (out / "results.csv").exists() else []
    assert len(partial) < 24, "the sweep finished before it could be killed"
    finished = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert rows(out / "results.csv") == rows(reference / "results.csv")
    keys = [(d["cell"], d["doc"]) for d in rows(out / "documents.csv")]
    assert len(keys) == len(set(keys)) == 48


def test_failed_cells_are_recorded_and_the_sweep_goes_on(setup, tmp_path, monkeypatch):
    real = perplexity.score_plan

    def flaky(model, ids, plan, **kw):
        if 512 in plan.lengths and model.config.layers[0].rope.rope_type == "yarn":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        scores = real(model, ids, plan, **kw)
        if 256 in scores and model.config.layers[0].rope.rope_type == "dynamic":
            scores[256] = perplexity.Score(float("nan"), scores[256].n_tokens)
        return scores

    monkeypatch.setattr(perplexity_module, "score_plan", flaky)
    summary = run_sweep(spec(setup, layer_mixes=["native"]), tmp_path, quiet=True)
    status = {(r["rope"], r["length"]): r["status"] for r in rows(tmp_path / "results.csv")}
    assert len(status) == 12 and not summary.ok
    assert status[("yarn", "512")] == "oom" and status[("dyn", "256")] == "nan"
    assert sorted((r["rope"], r["length"], r["status"]) for r in summary.failed) == [
        ("dyn", 256, "nan"),
        ("yarn", 512, "oom"),
    ]
    assert sum(s == "ok" for s in status.values()) == 10
    monkeypatch.setattr(perplexity_module, "score_plan", real)
    retry = run_sweep(spec(setup, layer_mixes=["native"]), tmp_path, quiet=True)
    assert retry.ok and retry.computed == 2 and retry.reused == 10


def test_lengths_no_document_reaches_are_reported(setup, tmp_path, monkeypatch):
    built = spec(setup, lengths=[64, 4096], ropes={"default": "default"}, layer_mixes=["native"])
    with pytest.warns(Notice, match=r"no document has 4096 ids \(the longest has 1201\): cells of length 4096 have"):
        summary = run_sweep(built, tmp_path, quiet=True)
    assert [(r["length"], r["status"]) for r in summary.failed] == [(4096, "no_docs")]
    assert {(r["length"], r["n_docs"]) for r in rows(tmp_path / "results.csv")} == {("64", "2"), ("4096", "0")}

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded for cells with nothing to score")

    monkeypatch.setattr("ropekit.sweep.run.load_model", no_weights)  # one length no document reaches: no load
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_sweep(replace(built, lengths=(4096,)), tmp_path / "long", quiet=True)
    assert [(r["length"], r["status"]) for r in summary.failed] == [(4096, "no_docs")]
    assert [str(w.message) for w in caught if w.category is Notice] == [
        "no document has 4096 ids (the longest has 1201): cells of length 4096 have nothing to score"
    ]


def test_every_length_reads_the_same_documents(setup, tmp_path):
    """doc0 (151 tokens) has 64 tokens but not 512: the 64-token cells read doc1 and doc3, as the
    512-token ones do (a curve over lengths reads one text); where fewer than n_docs documents are
    that long (3 of 4: doc1, doc3, doc5), each length takes its own, with a note."""
    built = spec(setup, lengths=[64, 512], ropes={"default": "default"}, layer_mixes=["native"])
    assert run_sweep(built, tmp_path / "same", quiet=True).ok
    docs = {(d["length"], d["doc"]) for d in rows(tmp_path / "same" / "documents.csv")}
    assert docs == {(n, doc) for n in ("64", "512") for doc in ("doc1", "doc3")}
    few = spec(setup, lengths=[64, 512], n_docs=4, ropes={"d": "default"}, layer_mixes=["native"])
    with pytest.warns(Notice, match="only 3 of the 4 documents asked for have 512 ids: each length takes"):
        assert run_sweep(few, tmp_path / "few", quiet=True).ok
    docs = rows(tmp_path / "few" / "documents.csv")
    assert {d["doc"] for d in docs if d["length"] == "512"} == {"doc1", "doc3", "doc5"}
    assert {d["doc"] for d in docs if d["length"] == "64"} == {"doc0", "doc1", "doc2", "doc3"}


def test_strided_mode(setup, tmp_path):
    summary = run_sweep(
        spec(setup, lengths=[64, 128, 512], mode="strided", stride=32, ropes={"d": "default"}, layer_mixes=["native"]),
        tmp_path,
        quiet=True,
    )
    assert summary.ok
    tokens = tokenize(load_corpus(str(setup / "corpus")), ropekit.load_model(setup / "tiny").tokenizer)
    for r in rows(tmp_path / "results.csv"):  # the first 2 documents, whole: every token after the first, once
        assert int(r["n_tokens"]) == sum(len(ids) - 1 for ids in list(tokens.values())[:2])
    # doc0 (151 tokens) is scored whole at 512 too
    assert sorted({d["doc"] for d in rows(tmp_path / "documents.csv") if d["length"] == "512"}) == ["doc0", "doc1"]


def no_bos(setup: Path, folder: Path) -> Path:
    """The tiny checkpoint with a tokenizer that adds no BOS (its <s> still exists): first's ids are
    the text's, yarn and rolling put <s> before them."""
    shutil.copytree(setup / "tiny", folder)
    definition = json.loads((folder / "tokenizer.json").read_text())
    definition["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(definition))
    return folder


MODE_CHANGES = {
    "first": {},
    "yarn": {"mode": "yarn"},
    "strided": {"mode": "strided", "stride": 32},
    "rolling": {"mode": "rolling"},
}


@pytest.mark.parametrize("bos", [True, False], ids=["bos", "no-bos"])
def test_each_mode_scores_its_documents_ids_and_text(setup, tmp_path, monkeypatch, bos):
    """Every mode in one token cache: each reads its own ``document_ids`` (never another mode's
    cached ids), scores the documents its rule chooses, and counts the bytes and words of the text
    it predicts; each row is what its documents' lines make."""
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))
    model_dir = setup / "tiny" if bos else no_bos(setup, tmp_path / "tiny")
    model = ropekit.load_model(model_dir)
    models = {"default": model, "dyn": ropekit.load_model(model_dir, rope_scaling="dynamic:2")}
    corpus = load_corpus(str(setup / "corpus"))
    texts = {d.name: d.text for d in corpus.documents}
    lengths = [64, 256, 512]
    for mode, changes in MODE_CHANGES.items():
        out = tmp_path / mode
        ropes = {"default": "default", "dyn": "dynamic:2"}  # dyn shares default's passes below 128
        built = spec(setup, models=[str(model_dir)], lengths=lengths, ropes=ropes, layer_mixes=["native"], **changes)
        assert run_sweep(built, out, quiet=True).ok
        ids = {doc: document_ids(model.tokenizer, text, mode) for doc, text in texts.items()}
        assert (ids["doc0"][0] == 1) == (bos or mode in ("yarn", "rolling"))  # <s>
        docs = rows(out / "documents.csv")
        for length in lengths:  # the same documents at every length: those with the longest length's ids
            chosen = [d for d in ids if len(ids[d]) >= (2 if mode in ("strided", "rolling") else max(lengths))][:2]
            assert sorted(d["doc"] for d in docs if d["rope"] == "default" and d["length"] == str(length)) == chosen
        for d in docs:
            doc, length = d["doc"], int(d["length"])
            rope = models[d["rope"]]
            plan = plan_document(rope, len(ids[doc]), [length], mode=mode, stride=changes.get("stride"))
            score = score_plan(rope, torch.tensor(ids[doc]), plan)[length]
            assert int(d["n_tokens"]) == score.n_tokens
            assert float(d["nll_sum"]) == pytest.approx(score.nll_sum, rel=1e-5)
            assert len(d["blocks"].split()) == math.ceil(score.n_tokens / BLOCK)
            if mode in ("first", "yarn"):
                scored = texts[doc] if len(ids[doc]) == length and ids[doc][0] == 1 else None
                scored = scored or model.tokenizer.decode(ids[doc][1:length], skip_special_tokens=True)
            else:  # whole documents: all the text when the first id, never predicted, is <s>
                whole = ids[doc][0] == 1
                scored = texts[doc] if whole else model.tokenizer.decode(ids[doc][1:], skip_special_tokens=True)
            assert (int(d["n_bytes"]), int(d["n_words"])) == text_counts(scored), (mode, doc, length)
        for r in rows(out / "results.csv"):
            own = [d for d in docs if d["cell"] == r["cell"]]
            scores = [Score(float(d["nll_sum"]), int(d["n_tokens"]), parse_blocks(d["blocks"])) for d in own]
            ppl = aggregate(mode, scores)
            assert (r["ppl"], r["nll"]) == (f"{ppl:.4f}", f"{math.log(ppl):.6f}")
            lo, hi, method = stats.ppl_interval(
                [s.nll_sum for s in scores],
                [s.n_tokens for s in scores],
                [s.blocks for s in scores],
                block=BLOCK,
                seed=stats.seed_of(r["cell"]),
                weighting=WEIGHTING[mode],
            )
            bounds = ("", "") if math.isnan(lo) else (f"{lo:.4f}", f"{hi:.4f}")  # none from too few units
            assert (r["ppl_lo"], r["ppl_hi"], r["interval"]) == (*bounds, method)
            nll, n_bytes = sum(s.nll_sum for s in scores), sum(int(d["n_bytes"]) for d in own)
            assert r["bits_per_byte"] == f"{nll / n_bytes / math.log(2):.6f}"
            assert r["word_ppl"] == f"{math.exp(nll / sum(int(d['n_words']) for d in own)):.4f}"
    rolling_at = {d["length"]: d["n_bytes"] for d in rows(tmp_path / "rolling" / "documents.csv") if d["doc"] == "doc0"}
    assert set(rolling_at.values()) == {str(len(texts["doc0"].encode()))}  # lm-eval's bytes: the document's


def test_the_cached_ids_of_each_mode_are_document_ids(setup, tmp_path):
    """The data layer's cache gives each mode's ``document_ids``, cached apart (one file per encoding)."""
    corpus = load_corpus(str(setup / "corpus"))
    for model_dir in (setup / "tiny", no_bos(setup, tmp_path / "tiny")):
        tokenizer = ropekit.load_model(model_dir).tokenizer
        for mode in MODE_CHANGES:
            prefix, special_tokens = encoding(tokenizer, mode)
            for _ in range(2):  # computed, then read from the cache
                tokens = tokenize(corpus, tokenizer, prefix=prefix, special_tokens=special_tokens, cache=tmp_path / "c")
                assert {d: t.tolist() for d, t in tokens.items()} == {
                    d.name: document_ids(tokenizer, d.text, mode) for d in corpus.documents
                }
    assert len(list((tmp_path / "c").iterdir())) == 2 * 2  # (first, strided) and (yarn, rolling) per tokenizer


@pytest.mark.parametrize("mode", list(MODE_CHANGES))
def test_the_same_spec_twice_gives_the_same_files_to_the_byte(setup, tmp_path, mode):
    built = spec(setup, lengths=[64, 256], ropes={"default": "default", "yarn": "yarn:4"}, **MODE_CHANGES[mode])
    for out in ("a", "b"):
        assert run_sweep(built, tmp_path / out, quiet=True).ok
    for name in ("results.csv", "documents.csv", "plans.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "timings.csv").read_text().splitlines()[0] == "cell,seconds"


def test_meta_holds_what_reruns_the_sweep(setup, tmp_path):
    ropes = {"default": "default", "y 4": {"rope_type": "yarn", "factor": 4.0}, "dyn": "dynamic:2"}
    with pytest.raises(SpecError, match=r"ropes: 'y 4' cannot name a rope \(it holds ' '\); a rope's name is letters"):
        spec(setup, ropes=ropes, lengths=[128, 64])  # a name the files, the report and --rope NAME=ROPE all carry
    out = tmp_path / "first run"
    built = spec(setup, ropes={"default": "default", "y4": ropes["y 4"], "dyn": "dynamic:2"}, lengths=[128, 64])
    assert run_sweep(built, out, quiet=True).ok
    meta = json.loads((out / "meta.json").read_text())
    assert spec_from_dict(meta["spec"]) == built and list(meta["spec"]["ropes"]) == ["default", "y4", "dyn"]
    assert meta["spec_sha256"] == built.sha256 and meta["dtype"]["resolved"] == "float32" and meta["threads"] >= 1
    assert meta["intervals"] | {"units": ""} == {
        "method": "percentile bootstrap",
        "min_units": stats.MIN_UNITS,
        "resamples": stats.N,
        "level": stats.LEVEL,
        "units": "",
        "block": BLOCK,
        "weighting": "as ppl: by tokens (yarn: by documents; blocks by tokens)",
        "seed": "seed_of(cell key): the first 4 bytes of the SHA-256 of the cell key, little-endian, seeding "
        "numpy.random.RandomState",
    }
    assert {"ropekit", "torch", "transformers", "numpy", "python"} <= set(meta["versions"])
    assert meta["corpus"]["sha256"] and all(m["sha256"] for m in meta["models"].values())
    # the command: shell-quoted, every key a flag, into DIR; run again it makes the same files
    command = meta["command"]
    assert command == reproduce_command(meta, out) and f"--out '{out}'" in command
    argv = shlex.split(command)
    assert argv[:2] == ["ropekit", "sweep"]
    rerun = tmp_path / "again"
    argv[argv.index("--out") + 1] = str(rerun)
    assert sweep_spec_from_args(build_parser().parse_args(argv[1:])) == replace(built, name="cli")
    assert main([*argv[1:], "--quiet", "--no-report"]) == 0
    for name in ("results.csv", "documents.csv"):
        assert (rerun / name).read_bytes() == (out / name).read_bytes()


def test_a_directory_of_an_older_ropekit_is_refused_untouched(setup, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.csv").write_text(
        "model,rope,layer_mix,length,n_docs,n_tokens,nll,ppl,status,seconds,detail,cell\n"
        "m,default,native,64,2,126,6.1,446.0,ok,1.5,,38d2c3087ca48e49\n"
    )
    (out / "documents.csv").write_text("cell,model,rope,layer_mix,length,doc,n_tokens,nll_sum\n")
    (out / "meta.json").write_text("{}\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for force in (False, True):
        with pytest.raises(StoreError) as err:
            run_sweep(spec(setup), out, quiet=True, force=force)
        message = str(err.value)
        assert "\n" not in message and "use a new --out" in message
        assert "columns model,rope,layer_mix,length,n_docs,n_tokens,nll,ppl,status,seconds,detail,cell" in message
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not even a lock file
    argv = ["sweep", "--quiet", "--no-report", "--out", str(out), "--model", str(setup / "tiny")]
    assert main([*argv, "--corpus", str(setup / "corpus"), "--lengths", "64"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ropekit sweep: error: {out / 'results.csv'} was written by another version of ropekit")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lengths": [1, 64]}, "a length is an integer >= 2"),
        ({"lengths": []}, "lengths is empty"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"n_docs": 0}, "n_docs=0"),
        ({"mode": "random"}, "mode='random'"),
        ({"mode": "strided"}, "needs stride"),
        ({"layer_mixes": ["LLXG@64"]}, "layer mix 'LLXG@64' is not understood"),
        ({"ropes": {"bad": {"rope_type": "yarn"}}}, "rope 'bad', layer mix 'native': rope_scaling"),
        ({"ropes": {"bad": "xpos:4"}}, "rope 'xpos:4' is not understood"),
        ({"layer_mixes": ["LLLG@0"]}, "sliding_window=0"),
        ({"models": ["no-such-model"]}, "models: model 'no-such-model' is not found"),
        ({"corpus": {"path": "x", "fmt": "text"}}, "corpus: unknown key 'fmt'"),
        ({"lengths": [64, 128, 64]}, "lengths [64, 128, 64] repeat 64; give each once"),
        ({"layer_mixes": ["native", "LG@32", "native"]}, "layer_mixes ['native', 'LG@32', 'native'] repeat native"),
        ({"models": ["m", "m"]}, "models ['m', 'm'] repeat m"),
        ({"dtype": "fp8"}, "dtype='fp8' is not allowed; expected auto or one of float32"),
    ],
)
def test_spec_errors_are_named(setup, tmp_path, changes, expected):
    with pytest.raises((SpecError, ValueError), match=re.escape(expected)):
        built = spec(setup, **changes)
        plan_cells(built, "corpus-hash")


def test_default_spec_is_valid_and_resolves_for_the_embedded_model():
    default = default_spec()
    assert default.models == ("smollm2-135m",) and max(default.lengths) == 16384 and min(default.lengths) == 512
    cells, _ = plan_cells(default, "x")
    assert len(cells) == 6 * 6
    yarn = next(c for c in cells if c.rope == "yarn")
    # SmolLM2: one rope for every layer, theta 1e5, trained at 8192; the preset doubles that.
    assert len({layer.rope for layer in yarn.config.layers}) == 1
    assert yarn.config.layers[0].rope.to_dict() == {
        "rope_type": "yarn",
        "rope_theta": 1e5,
        "factor": 2.0,
        "original_max_position_embeddings": 8192,
    }


def test_spec_file_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("models = [\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


def test_auto_dtype_is_recorded_and_its_cells_keyed_by_what_it_resolved_to(setup, tmp_path, monkeypatch):
    """The same DIR resumed on a machine where "auto" resolves otherwise must not mix bf16 and fp32
    numbers: the cell keys differ, and the sweep refuses (as for a changed spec) unless --force."""
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    fast.write_text("flags\t\t: sse2 avx2 avx512f avx512_bf16\n")
    slow.write_text("flags\t\t: sse2 avx2 avx512f\n")
    small = {"lengths": [64, 128], "layer_mixes": ["native"], "ropes": {"default": "default"}}
    auto, plain, out = spec(setup, dtype="auto", **small), spec(setup, **small), tmp_path / "out"

    def keys(s):
        return {c.key for c in plan_cells(s, "x")[0]}

    monkeypatch.setattr(precision, "CPUINFO", fast)
    bf16_keys, plain_keys = keys(auto), keys(plain)
    assert run_sweep(auto, out, quiet=True).computed == 2
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == {"asked": "auto", "resolved": "bfloat16", "reason": FAST_BF16.text()}
    assert meta["spec"]["dtype"] == "auto"
    bf16 = {r["length"]: r for r in rows(out / "results.csv")}

    monkeypatch.setattr(precision, "CPUINFO", slow)
    assert keys(auto).isdisjoint(bf16_keys) and keys(plain) == plain_keys  # only "auto" follows the machine
    with pytest.raises(SpecError, match=re.escape(f"holds numbers computed in bfloat16 ({FAST_BF16.text()}); here")):
        run_sweep(auto, out, quiet=True)
    forced = run_sweep(auto, out, quiet=True, force=True)
    assert forced.computed == 2 and forced.reused == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == {"asked": "auto", "resolved": "float32", "reason": "cpu lacks avx512_bf16 and amx_bf16"}
    fp32 = rows(out / "results.csv")
    assert len(fp32) == 2  # the bf16 rows were dropped
    for r in fp32:  # a tiny random model: bf16 and fp32 agree to well under 1 %, but not exactly
        ppl, ppl_bf16 = float(r["ppl"]), float(bf16[r["length"]]["ppl"])
        assert r["cell"] != bf16[r["length"]]["cell"]
        assert ppl == pytest.approx(ppl_bf16, rel=0.01) and ppl != ppl_bf16


def test_a_worker_runs_in_the_dtype_it_is_handed(setup, tmp_path, monkeypatch):
    """The local executor's workers take the dtype the process that started them resolved: they never
    time bf16 themselves (at once, each would see the others busy), nor resolve "auto" on loading."""
    from ropekit.models import Precision
    from ropekit.sweep.executors.registry import Launch, start_workers

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: sse2 avx2 avx512f avx512_bf16\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    auto = spec(setup, dtype="auto", lengths=[64], layer_mixes=["native"], ropes={"default": "default"})
    assert start_workers(auto, tmp_path / "out", Launch()).precision.dtype == torch.bfloat16  # as the stub found

    def refuse(**kw):
        raise AssertionError("a worker timed bf16")

    monkeypatch.setattr(precision, "machine_bf16", refuse)
    precision.auto_cpu.cache_clear()
    handed = Precision(torch.float32, "the parent's")
    assert run_sweep(auto, tmp_path / "out", quiet=True, precision=handed).computed == 1
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["dtype"] == {"asked": "auto", "resolved": "float32", "reason": "the parent's"}


def test_default_dtype_is_recorded_as_the_default(setup, tmp_path):
    run_sweep(spec(setup, lengths=[64], layer_mixes=["native"], ropes={"default": "default"}), tmp_path, quiet=True)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == {"asked": None, "resolved": "float32", "reason": "default on cpu"}
