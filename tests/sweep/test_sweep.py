"""Sweeps end to end on a tiny checkpoint: results, resume (also after SIGKILL), failures, specs."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ropekit.eval import perplexity
from ropekit.models import precision
from ropekit.sweep import SpecError, default_spec, load_spec, run_sweep, spec_from_dict
from ropekit.sweep import run as run_module
from ropekit.sweep.run import plan_cells

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


def comparable(rows_: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows_]


def test_sweep_writes_every_cell_and_resumes_without_recomputing(setup, tmp_path):
    summary = run_sweep(spec(setup), tmp_path, quiet=True)
    assert summary.ok and summary.cells == 2 * 3 * 4 == summary.computed
    result = rows(tmp_path / "results.csv")
    assert len(result) == 24 and {r["status"] for r in result} == {"ok"}
    for r in result:
        assert int(r["n_docs"]) == 2 and int(r["n_tokens"]) == 2 * (int(r["length"]) - 1)
        assert float(r["ppl"]) == pytest.approx(math.exp(float(r["nll"])), rel=1e-5)
    docs = rows(tmp_path / "documents.csv")
    assert len(docs) == 48
    # documents are chosen in corpus order among those long enough: 512 tokens -> doc1 and doc3
    assert sorted({d["doc"] for d in docs if d["length"] == "512"}) == ["doc1", "doc3"]
    # any aggregate can be recomputed from the per-document sums
    one = [d for d in docs if d["cell"] == result[0]["cell"]]
    nll = sum(float(d["nll_sum"]) for d in one) / sum(int(d["n_tokens"]) for d in one)
    assert nll == pytest.approx(float(result[0]["nll"]), rel=1e-6)
    again = run_sweep(spec(setup), tmp_path, quiet=True)
    assert again.computed == 0 and again.reused == 24
    assert comparable(rows(tmp_path / "results.csv")) == comparable(result)


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
    assert comparable(rows(out / "results.csv")) == comparable(rows(reference / "results.csv"))
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

    monkeypatch.setattr(run_module, "score_plan", flaky)
    summary = run_sweep(spec(setup, layer_mixes=["native"]), tmp_path, quiet=True)
    status = {(r["rope"], r["length"]): r["status"] for r in rows(tmp_path / "results.csv")}
    assert len(status) == 12 and not summary.ok
    assert status[("yarn", "512")] == "oom" and status[("dyn", "256")] == "nan"
    assert sorted((r["rope"], r["length"], r["status"]) for r in summary.failed) == [
        ("dyn", 256, "nan"),
        ("yarn", 512, "oom"),
    ]
    assert sum(s == "ok" for s in status.values()) == 10
    monkeypatch.setattr(run_module, "score_plan", real)
    retry = run_sweep(spec(setup, layer_mixes=["native"]), tmp_path, quiet=True)
    assert retry.ok and retry.computed == 2 and retry.reused == 10


def test_lengths_no_document_reaches_are_reported(setup, tmp_path):
    summary = run_sweep(
        spec(setup, lengths=[64, 4096], ropes={"default": "default"}, layer_mixes=["native"]), tmp_path, quiet=True
    )
    assert [(r["length"], r["status"]) for r in summary.failed] == [(4096, "no_docs")]


def test_strided_mode(setup, tmp_path):
    summary = run_sweep(
        spec(setup, lengths=[64, 128], mode="strided", stride=32, ropes={"d": "default"}, layer_mixes=["native"]),
        tmp_path,
        quiet=True,
    )
    assert summary.ok
    import ropekit
    from ropekit.data import load_corpus, tokenize

    tokens = tokenize(load_corpus(str(setup / "corpus")), ropekit.load_model(setup / "tiny").tokenizer)
    for r in rows(tmp_path / "results.csv"):  # whole documents: every token after the first, once
        chosen = [len(ids) for ids in tokens.values() if len(ids) >= int(r["length"])][:2]
        assert int(r["n_tokens"]) == sum(n - 1 for n in chosen)


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
        ({"ropes": {"bad": "ntk:4"}}, "rope 'ntk:4' is not understood"),
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
    assert meta["dtype"] == {"asked": "auto", "resolved": "bfloat16", "reason": "cpu has avx512_bf16"}
    assert meta["spec"]["dtype"] == "auto"
    bf16 = {r["length"]: r for r in rows(out / "results.csv")}

    monkeypatch.setattr(precision, "CPUINFO", slow)
    assert keys(auto).isdisjoint(bf16_keys) and keys(plain) == plain_keys  # only "auto" follows the machine
    with pytest.raises(SpecError, match=re.escape("holds numbers computed in bfloat16 (cpu has avx512_bf16); here")):
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


def test_default_dtype_is_recorded_as_the_default(setup, tmp_path):
    run_sweep(spec(setup, lengths=[64], layer_mixes=["native"], ropes={"default": "default"}), tmp_path, quiet=True)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == {"asked": None, "resolved": "float32", "reason": "default on cpu"}
