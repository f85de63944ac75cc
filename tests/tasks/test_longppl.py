"""The ``longppl`` task proven against its source, PKU-ML/LongPPL ``longppl/longppl.py`` (``merge_intervals``,
``find_key_token``, ``cal_overlap``, ``compute_longppl``, rewritten below), run on transformers' own model: the
same key tokens, LongPPL and perplexity to 1e-5 relative (float32), on a tiny random model and on SmolLM2;
then through a sweep: trials, rows, resume, dry run, report and bad input."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ropekit
from ropekit.cli import results_table
from ropekit.modes import BLOCK
from ropekit.report import write_report
from ropekit.sweep import SpecError, dry_run, run_sweep, spec_from_dict
from ropekit.sweep.cells import plan_cells
from ropekit.sweep.cost import Rates, pass_seconds
from ropekit.tasks import TaskSettingsError, get_task, longppl
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus

RATES = Rates(matmul=1e11, causal=5e10, band=2e10, logits=1e9)  # injected: nothing is measured


# --- PKU-ML/LongPPL longppl/longppl.py, as the source computes it (batch of one, CPU) ---------------------
def source_merge_intervals(intervals):
    if intervals.size(0) == 0:
        return intervals
    start = intervals[:, 0]
    end = intervals[:, 1]
    adjacent = (start[1:] - end[:-1]) == 0
    keep_start_mask = torch.cat([torch.tensor([True]), ~adjacent])
    merged_start = start[keep_start_mask]
    keep_end_mask = torch.cat([~adjacent, torch.tensor([True])])
    merged_end = end[keep_end_mask]
    return torch.stack([merged_start, merged_end], dim=1)


def source_find_key_token(text, evaluator_model, evaluator_tokenizer, trunc_len, sliding_window, alpha=2, beta=-2):
    text_encoded = evaluator_tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    input_ids = text_encoded["input_ids"]
    with torch.no_grad():
        output_full = evaluator_model(input_ids)
    loss_f = torch.nn.CrossEntropyLoss(reduction="none")
    _, max_len = input_ids.shape
    key_tokens = []
    with torch.no_grad():
        for start_token in range(0, max_len - trunc_len, sliding_window):
            if start_token + trunc_len + sliding_window > max_len:
                sliding_window = max_len - start_token - trunc_len
            input_ids_short = input_ids[:, start_token : start_token + trunc_len + sliding_window]
            output_short = evaluator_model(input_ids_short)
            loss_full = loss_f(
                output_full.logits[0, start_token + trunc_len - 1 : start_token + trunc_len + sliding_window - 1, :],
                input_ids[0, start_token + trunc_len : start_token + trunc_len + sliding_window],
            )
            loss_short = loss_f(
                output_short.logits[0, trunc_len - 1 : trunc_len + sliding_window - 1, :],
                input_ids_short[0, trunc_len : trunc_len + sliding_window],
            )
            loss_discrepancy = (torch.logical_and((loss_short - loss_full) > alpha, loss_full < (beta * -1))).squeeze()
            for i, is_key in enumerate(loss_discrepancy):
                if is_key:
                    key_tokens.append(start_token + trunc_len + i)
    return source_merge_intervals(text_encoded["offset_mapping"][0, key_tokens])


def source_cal_overlap(offset_mapping, key_text_slices):
    key_tokens = []
    i, j = 0, 0
    while i < len(offset_mapping) and j < len(key_text_slices):
        a_start, a_end = offset_mapping[i]
        b_start, b_end = key_text_slices[j]
        if a_start >= b_start and a_end <= b_end:
            key_tokens.append(i - 1)
            i += 1
        elif a_start < b_start:
            i += 1
        else:
            j += 1
    return key_tokens


def source_compute_longppl(
    text, model, evaluator_model, tokenizer, evaluator_tokenizer, trunc_len, sliding_window, alpha=2, beta=-2
):
    encoded_input = tokenizer(text, return_tensors="pt", add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoded_input["input_ids"]
    offset_mapping = encoded_input["offset_mapping"][0]
    key_text_slices = source_find_key_token(
        text, evaluator_model, evaluator_tokenizer, trunc_len, sliding_window, alpha, beta
    )
    key_tokens = source_cal_overlap(offset_mapping, key_text_slices)
    with torch.no_grad():
        output_full = model(input_ids)
    loss_f = torch.nn.CrossEntropyLoss(reduction="none")
    loss_overall = loss_f(output_full.logits[0, :-1, :], input_ids[0, 1:]).to(torch.float).cpu().numpy()
    if key_tokens is None or len(key_tokens) == 0:
        return {
            "longppl": None,
            "n_key_token": None,
            "ppl": np.exp(loss_overall.mean()),
            "n_token": input_ids.shape[-1],
        }
    loss_key = loss_overall[key_tokens]
    return {
        "longppl": np.exp(loss_key.mean()),
        "n_key_token": len(key_tokens),
        "ppl": np.exp(loss_overall.mean()),
        "n_token": input_ids.shape[-1],
        "key_tokens": key_tokens,
    }


# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    base = tmp_path_factory.mktemp("longppl")
    hf = make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (420, 300, 380))
    make_checkpoint(
        base / "judge", {"model_type": "llama", "max_position_embeddings": 256, "rope_theta": 500.0}, seed=1
    )
    add_tokenizer(base / "judge")
    return base, hf


def assert_like_source(model, hf, tokenizer, documents, length, settings, trial=0, judge=None):
    """ropekit's numbers for one document equal the source's on transformers' model (``judge``: the
    evaluator's transformers model and ropekit's, when it is another model)."""
    built = longppl.build(tokenizer, settings, length, None, trial, documents)
    ours = longppl.score(model, tokenizer, settings, built)
    text = tokenizer.decode(list(built.prompt_ids))
    evaluator, ropekit_evaluator = judge or (hf, model)
    trunc, stride = settings.windows(ropekit_evaluator.config.plan_record()["trained_context"])
    theirs = source_compute_longppl(
        text, hf, evaluator, tokenizer, ropekit_evaluator.tokenizer, trunc, stride, settings.alpha, settings.beta
    )
    assert ours["n_tokens"] == theirs["n_token"] - 1 == length - 2  # L - 1 tokens read, L - 2 predicted
    assert math.exp(ours["nll_sum"] / ours["n_tokens"]) == pytest.approx(float(theirs["ppl"]), rel=1e-5)
    assert ours["n_key"] == (theirs["n_key_token"] or 0)
    if ours["n_key"]:
        assert math.exp(ours["key_nll_sum"] / ours["n_key"]) == pytest.approx(float(theirs["longppl"]), rel=1e-5)
    return ours


@pytest.mark.parametrize(
    ("length", "trunc", "stride", "keys"), [(128, None, None, True), (200, 40, 16, True), (96, 24, 100, False)]
)
def test_tiny_model_numbers_equal_the_sources(tiny, length, trunc, stride, keys):
    """Random weights predict no token well, so alpha 0.5 and beta -10 make key tokens (no gain lies within
    1e-3 of 0.5 here; at 0 some are exactly 0, and float noise flips them): the defaults (128 trained: 32,
    sliding by 8), odd windows, and one window as long as the text, which leaves no token a gain (no key token,
    the source's None)."""
    base, hf = tiny
    model = ropekit.load_model(base / "tiny", dtype=torch.float32)
    tokenizer = model.tokenizer
    documents = [tokenizer.encode(p.read_text(), add_special_tokens=False) for p in sorted((base / "corpus").iterdir())]
    settings = get_task("longppl").table(
        {"trials": 2, "alpha": 0.5, "beta": -10.0, "trunc_len": trunc, "trunc_stride": stride}
    )
    ours = assert_like_source(model, hf, tokenizer, documents, length, settings)
    assert ours["n_key"] > 10 if keys else ours["n_key"] == 0
    assert sum(ours["blocks"]) == pytest.approx(ours["nll_sum"], rel=1e-9)
    assert sum(b[1] for b in ours["key_blocks"]) == ours["n_key"] and len(ours["blocks"]) == -(
        -ours["n_tokens"] // BLOCK
    )


def test_another_evaluator_model_as_the_sources_evaluator_model(tiny):
    """evaluator = another checkpoint (of another seed and theta, trained on 256: truncation 64, sliding by 16):
    its key tokens, found by the source's find_key_token with transformers' copy of it as evaluator_model."""
    from transformers import AutoModelForCausalLM

    base, hf = tiny
    model = ropekit.load_model(base / "tiny", dtype=torch.float32)
    tokenizer = model.tokenizer
    documents = [tokenizer.encode(p.read_text(), add_special_tokens=False) for p in sorted((base / "corpus").iterdir())]
    settings = get_task("longppl").table({"trials": 1, "alpha": 0.5, "beta": -10.0, "evaluator": str(base / "judge")})
    judge = AutoModelForCausalLM.from_pretrained(base / "judge", dtype=torch.float32, attn_implementation="eager")
    ours = assert_like_source(
        model, hf, tokenizer, documents, 250, settings, judge=(judge.eval(), longppl.evaluator_of(model, settings))
    )
    assert ours["trunc_len"] == 64 and ours["n_key"] > 10


@pytest.mark.slow
def test_smollm2_numbers_equal_the_sources():
    """The embedded SmolLM2, the source's alpha 2 and beta -2, a 128-token truncation sliding by 64 over 768
    tokens: the first 384 of the corpus's first text (A Lover's Complaint) twice. The second copy is what a
    long context helps; the text itself, cut at 1024 tokens with a 256-token truncation, had no token that
    gains 2 nats. A real model's key tokens, LongPPL and perplexity as the source's."""
    from ropekit.data import shakespeare
    from tests.models.test_embedded import hf_model

    model = ropekit.load_model("smollm2-135m", dtype=torch.float32)
    tokenizer = model.tokenizer
    text = tokenizer.encode(shakespeare().documents[0].text, add_special_tokens=False)[:384]
    settings = get_task("longppl").table({"trials": 1, "trunc_len": 128, "trunc_stride": 64})
    ours = assert_like_source(model, hf_model("smollm2-135m"), tokenizer, [text * 2], 768, settings)
    assert 50 <= ours["n_key"] < 384


def test_the_default_truncation_scales_with_the_trained_context():
    settings = get_task("longppl").table(None)
    assert settings.windows(131072) == (4096, 1024)  # the source's, for Llama 3.1 8B
    assert settings.windows(8192) == (2048, 512)  # SmolLM2-135M
    assert get_task("longppl").table({"trunc_len": 100}).windows(8192) == (100, 25)
    assert longppl.BLOCK == BLOCK


def test_a_longppl_sweep_rows_resume_dry_run_and_report(tiny, tmp_path, capsys):
    base, _ = tiny
    data = {
        "models": [str(base / "tiny")],
        "corpus": str(base / "corpus"),
        "lengths": [96, 200],
        "n_docs": 3,
        "ropes": {"default": "default", "yarn": "yarn:2"},
        "tasks": ["perplexity", "longppl"],
        "longppl": {"trials": 3, "alpha": 0.5, "beta": -10.0},
    }
    spec = spec_from_dict(data)
    out = tmp_path / "out"
    assert run_sweep(spec, out, quiet=True).ok
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["task"] == "longppl"]
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4 and len(trials) == 12 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        numbers = [json.loads(t["scores"]) for t in trials if t["cell"] == row["cell"]]
        longce = sum(n["key_nll_sum"] for n in numbers) / sum(n["n_key"] for n in numbers)
        assert float(row["longce"]) == pytest.approx(longce, abs=1e-6)
        assert float(row["longppl"]) == pytest.approx(math.exp(longce), rel=1e-4)
        assert int(row["n_key_tokens"]) == sum(n["n_key"] for n in numbers) > 0
        assert row["depth"] == "" and row["accuracy"] == "" and row["n_docs"] == "3"
    # the cell's numbers are the document's own, as the task scores it alone
    model = ropekit.load_model(base / "tiny", dtype=torch.float32)
    settings = spec.retrieval_tasks["longppl"]
    documents = [
        model.tokenizer.encode(p.read_text(), add_special_tokens=False) for p in sorted((base / "corpus").iterdir())
    ]
    first = next(t for t in trials if t["rope"] == "default" and t["length"] == "200" and t["trial"] == "0")
    alone = longppl.score(
        model, model.tokenizer, settings, longppl.build(model.tokenizer, settings, 200, None, 0, documents)
    )
    stored = json.loads(first["scores"])
    assert stored["n_key"] == alone["n_key"] and stored["key_blocks"][-1][1] == alone["key_blocks"][-1][1]
    assert (stored["nll_sum"], stored["key_nll_sum"]) == pytest.approx(
        (alone["nll_sum"], alone["key_nll_sum"]), rel=1e-6
    )
    before = (out / "results.csv").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every stored line reads back: none is computed again
        again = run_sweep(spec, out, quiet=True)
    assert again.computed == 0 and (out / "results.csv").read_bytes() == before
    # the dry run prices a document as the task says it runs: its forward, the evaluator's and its windows
    dry = dry_run(spec_from_dict({**data, "tasks": ["longppl"]}), tmp_path / "priced", rates=RATES)
    priced = [p for p in dry.passes if p.doc == "longppl trial 0"]
    config = plan_cells(spec, "")[0][0].config
    windows = [pass_seconds(config, min(40, 200 - s), RATES) for s in range(0, 200 - 32, 8)]
    expected = pass_seconds(config, 199, RATES) + pass_seconds(config, 200, RATES) + sum(windows)
    assert any(p.seconds == pytest.approx(expected, rel=1e-9) for p in priced)
    printed = results_table(out, width=200)
    # (9 blocks of 64 predictions: fewer than 16 units, so no interval, and no [95 %] in the heads)
    assert "LongPPL (ppl; LongCE; key tokens)" in printed and "; key tokens " in printed
    write_report(out)
    text = (out / "report.md").read_text()
    assert "## LongPPL" in text and "## Retrieval" not in text and (out / "figures" / "longppl.png").exists()


def test_a_fixed_evaluator_picks_the_same_key_tokens_for_every_rope(tiny):
    """evaluator_rope = yarn:2: a default-rope cell's key tokens are those the yarn model picks for itself."""
    base, _ = tiny
    model = ropekit.load_model(base / "tiny", dtype=torch.float32)
    yarn = ropekit.load_model(base / "tiny", dtype=torch.float32, rope_scaling="yarn:2")
    tokenizer = model.tokenizer
    documents = [tokenizer.encode(p.read_text(), add_special_tokens=False) for p in sorted((base / "corpus").iterdir())]
    own = get_task("longppl").table({"trials": 1, "alpha": 0.5, "beta": -10.0})
    fixed = get_task("longppl").table({"trials": 1, "alpha": 0.5, "beta": -10.0, "evaluator_rope": "yarn:2"})
    trial = longppl.build(tokenizer, own, 200, None, 0, documents)
    by_yarn, judged = longppl.score(yarn, tokenizer, own, trial), longppl.score(model, tokenizer, fixed, trial)
    assert [b[1] for b in judged["key_blocks"]] == [b[1] for b in by_yarn["key_blocks"]]
    assert judged["nll_sum"] == pytest.approx(longppl.score(model, tokenizer, own, trial)["nll_sum"], rel=1e-9)
    assert judged["nll_sum"] != pytest.approx(by_yarn["nll_sum"], rel=1e-6)


def test_a_shared_evaluator_finds_a_texts_key_tokens_once(tiny, tmp_path, monkeypatch):
    """evaluator_rope = native over two ropes: a worker finds each (length, document)'s key tokens once and the
    second rope reads them back, its numbers as a scoring alone gives them; the dry run prices the evaluator's
    passes once, beside each rope's own forward."""
    base, _ = tiny
    longppl_table = {"trials": 2, "alpha": 0.5, "beta": -10.0, "evaluator_rope": "native"}
    data = {
        "models": [str(base / "tiny")],
        "corpus": str(base / "corpus"),
        "lengths": [200],
        "ropes": {"default": "default", "yarn": "yarn:2"},
        "tasks": ["longppl"],
        "longppl": longppl_table,
    }
    spec = spec_from_dict(data)
    found = []
    real = longppl.key_positions
    monkeypatch.setattr(longppl, "key_positions", lambda *a: found.append(len(a[1])) or real(*a))
    longppl._FOUND.clear()
    assert run_sweep(spec, tmp_path / "out", quiet=True).ok
    assert len(found) == 2  # two documents, each once, for both ropes
    trials = list(csv.DictReader((tmp_path / "out" / "trials.csv").open()))
    model = ropekit.load_model(base / "tiny", dtype=torch.float32, rope_scaling="yarn:2")
    documents = [
        model.tokenizer.encode(p.read_text(), add_special_tokens=False) for p in sorted((base / "corpus").iterdir())
    ]
    settings = spec.retrieval_tasks["longppl"]
    longppl._FOUND.clear()
    alone = longppl.score(
        model, model.tokenizer, settings, longppl.build(model.tokenizer, settings, 200, None, 1, documents)
    )
    stored = json.loads(next(t for t in trials if t["rope"] == "yarn" and t["trial"] == "1")["scores"])
    assert [b[1] for b in stored["key_blocks"]] == [b[1] for b in alone["key_blocks"]] and stored["n_key"] > 0
    assert [b[0] for b in stored["key_blocks"]] == pytest.approx([b[0] for b in alone["key_blocks"]], rel=1e-6)
    dry = dry_run(spec, tmp_path / "priced", rates=RATES)
    config = plan_cells(spec, "")[0][0].config
    own, shared = (
        pass_seconds(config, 199, RATES),
        sum(pass_seconds(config, n, RATES) for n in longppl.evaluator_passes(config, settings, 200)),
    )
    priced = sorted(p.seconds for p in dry.passes if p.doc == "longppl trial 0")
    assert priced == pytest.approx([own, own + shared], rel=1e-9)


def test_bad_input_is_one_line(tiny, tmp_path):
    base, _ = tiny
    data = {
        "models": [str(base / "tiny")],
        "corpus": str(base / "corpus"),
        "lengths": [400],
        "ropes": {"default": "default"},
        "tasks": ["longppl"],
    }
    with pytest.raises(SpecError, match=r"length=400: the corpus has 1 document\(s\) of at least 399 tokens"):
        run_sweep(spec_from_dict({**data, "longppl": {"trials": 2}}), tmp_path / "a", quiet=True)
    assert not (tmp_path / "a").exists()
    for table, said in [
        ({"alpha": "x"}, "longppl.alpha = 'x'"),
        ({"trunc_len": 0}, "longppl.trunc_len = 0"),
        ({"evaluator_rope": "nonsense:2"}, "longppl.evaluator_rope = 'nonsense:2'"),
        ({"depths": [10]}, "unknown key 'depths'"),
    ]:
        with pytest.raises((SpecError, TaskSettingsError), match=said):
            spec_from_dict({**data, "longppl": table})
