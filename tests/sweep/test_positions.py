"""Attention-level ropes and the NoPE temperature in a sweep, end to end on the tiny checkpoint
(trained at 128): each cell is what ``token_nll`` gives the same model directly, and a pass of the
default rope is never served for ReRoPE or Self-Extend, whose frequencies are the default's."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import ropekit
from ropekit.cli import main
from ropekit.data import load_corpus, tokenize
from ropekit.sweep import run_sweep, spec_from_dict

ROPES = {
    "default": "default",
    "r": "rerope:32",
    "se": "self_extend:4,32",
    "logn": {"rope_type": "default", "log_n": 16},
}
LENGTHS = [32, 64, 256]


def test_attention_level_ropes_in_a_sweep(setup, tmp_path, capsys):
    spec = spec_from_dict(
        {
            "models": [str(setup / "tiny")],
            "corpus": str(setup / "corpus"),
            "lengths": LENGTHS,
            "ropes": ROPES,
            "layer_mixes": ["native", "LLLG@48+nope+tt:16,0.5"],
            "n_docs": 2,
        }
    )
    summary = run_sweep(spec, tmp_path, quiet=True)
    assert summary.ok and summary.cells == len(ROPES) * 2 * len(LENGTHS)
    with (tmp_path / "results.csv").open() as f:
        ppl = {(r["rope"], r["layer_mix"], int(r["length"])): float(r["ppl"]) for r in csv.DictReader(f)}
    for mix in ("native", "LLLG@48+nope+tt:16,0.5"):
        # inside the window (32) ReRoPE and Self-Extend are the default rope; past it they are not
        assert ppl[("r", mix, 32)] == ppl[("se", mix, 32)] == ppl[("default", mix, 32)]
        for length in (64, 256):
            assert len({ppl[(rope, mix, length)] for rope in ROPES}) == len(ROPES)
    tokens = None
    for (rope, mix, length), value in ppl.items():
        if length == 32:
            continue
        model = ropekit.load_model(setup / "tiny", rope_scaling=ROPES[rope], layer_mix=mix)
        tokens = tokens or tokenize(load_corpus(str(setup / "corpus")), model.tokenizer)
        docs = [ids for ids in tokens.values() if len(ids) >= max(LENGTHS)][:2]  # every length reads the same
        nll = torch.cat([ropekit.token_nll(model, torch.as_tensor(ids[:length], dtype=torch.long)) for ids in docs])
        assert value == pytest.approx(math.exp(float(nll.double().mean())), rel=1e-6), (rope, mix, length)
    assert main(["report", str(tmp_path)]) == 0  # the plans, with their far regions and temperatures, read back
    assert (tmp_path / "report.html").exists()
