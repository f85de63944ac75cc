"""Input that is wrong, or has changed under a DIR, is refused in one line before anything is written:
a corpus or a model's files changed since DIR's cells read them, names that cannot round-trip
through the files (a newline, a path), a device torch does not see, weights that would not load, a
tokenizer that is code. Issue 28's trials, one test each."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ropekit.cli import main
from ropekit.sweep import SpecError, run_sweep, spec_from_dict
from ropekit.sweep.dryrun import dry_run


def inputs(setup: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny model and corpus that a test may change."""
    shutil.copytree(setup / "tiny", tmp_path / "tiny")
    shutil.copytree(setup / "corpus", tmp_path / "corpus")
    return tmp_path / "tiny", tmp_path / "corpus"


def one_cell(model: Path, corpus: Path, **changes) -> object:
    data = {"models": [str(model)], "corpus": str(corpus), "lengths": [64], "ropes": {"default": "default"}}
    return spec_from_dict({**data, "n_docs": 2, **changes})


def results(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def error_line(capsys) -> str:
    """The one line a refused command printed (stderr, nothing else, no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def test_a_changed_corpus_is_refused_and_force_computes_the_cells_again(setup, tmp_path, capsys):
    model, corpus = inputs(setup, tmp_path)
    out, built = tmp_path / "run", one_cell(model, corpus)
    assert run_sweep(built, out, quiet=True).ok
    before = (out / "results.csv").read_bytes()
    (corpus / "doc0.txt").write_text("Text put before it. " + (corpus / "doc0.txt").read_text())
    (corpus / "doc9.txt").write_text("A document added. " * 40)
    (corpus / "doc4.txt").unlink()
    refusal = (
        f"{out} holds cells computed from other inputs: corpus '{corpus}' has changed since (documents changed "
        "'doc0'; added 'doc9'; removed 'doc4'); use another --out, or --force to compute those cells again"
    )
    for attempt in (lambda: run_sweep(built, out, quiet=True), lambda: dry_run(built, out)):
        with pytest.raises(SpecError, match="^" + refusal.replace("(", r"\(").replace(")", r"\)")):
            attempt()
    args = ["sweep", "--model", str(model), "--corpus", str(corpus), "--lengths", "64", "--n-docs", "2"]
    assert main([*args, "--workers", "2", "--quiet", "--out", str(out)]) == 2  # before any worker starts
    assert error_line(capsys).startswith(f"ropekit sweep: error: {out} holds cells computed from other inputs")
    assert (out / "results.csv").read_bytes() == before  # the old row is not joined by a new one
    assert run_sweep(built, out, force=True, quiet=True).ok
    rows = results(out)
    assert len(rows) == 1 and rows[0]["ppl"] != next(csv.DictReader(before.decode().splitlines()))["ppl"]
    fresh = tmp_path / "fresh"  # what the corpus as it is gives
    assert run_sweep(built, fresh, quiet=True).ok and results(fresh) == rows


def test_a_corpus_no_stored_cell_read_may_change(setup, tmp_path):
    model, corpus = inputs(setup, tmp_path)
    out, built = tmp_path / "run", one_cell(model, corpus, tasks=["passkey"], passkey={"trials": 1, "depths": [50]})
    assert run_sweep(built, out, quiet=True).ok
    (corpus / "doc0.txt").write_text("Changed.")
    summary = run_sweep(built, out, quiet=True)
    assert summary.ok and summary.reused == 1 and summary.computed == 0


def test_changed_weights_are_refused_and_force_computes_that_models_cells_again(setup, tmp_path):
    model, corpus = inputs(setup, tmp_path)
    out, built = tmp_path / "run", one_cell(model, corpus)
    assert run_sweep(built, out, quiet=True).ok
    tensors = load_file(model / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.5
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SpecError, match=f"files of model '{model}' have changed .*; use another --out, or --force"):
        run_sweep(built, out, quiet=True)
    summary = run_sweep(built, out, force=True, quiet=True)
    assert summary.ok and summary.computed == 1 and len(results(out)) == 1


def test_a_spec_name_is_one_folder_below_runs(setup, tmp_path, monkeypatch, capsys):
    model, corpus = inputs(setup, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    common = f'models = ["{model}"]\ncorpus = "{corpus}"\nlengths = [64]\nn_docs = 1\n'
    (work / "escape.toml").write_text(f'name = "../../x"\n{common}ropes = ["default"]\n')
    assert main(["sweep", "escape.toml", "--quiet"]) == 2
    assert error_line(capsys) == (
        "ropekit sweep: error: name = '../../x' cannot name the sweep's folder runs/NAME (it holds a path "
        "separator); a name is one folder's name: printable, no / or \\, not . or .., at most 100 characters"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tiny", "work"]  # nothing made outside
    for stem in ("first", "second"):  # ropes as a list: named after the file, not after its last rope
        (work / f"{stem}.toml").write_text(f'{common}ropes = ["default", "yarn:2"]\n')
        assert main(["sweep", f"{stem}.toml", "--quiet"]) == 0
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["first", "second"]


@pytest.mark.parametrize(
    ("rope", "name", "problem"),
    [
        ("a/b=yarn:2", "a/b", "it holds '/'"),
        ("../x=yarn:2", "../x", "it holds '/'"),
        ("a,b=yarn:2", "a,b", "it holds ','"),
        ("a\nb=yarn:2", "a\\nb", "it holds a newline"),
        ("y" * 65 + "=yarn:2", "y" * 65, "it has 65 characters"),
    ],
)
def test_a_rope_name_the_records_cannot_carry_is_named_in_the_refusal(setup, tmp_path, capsys, rope, name, problem):
    args = ["sweep", "--model", str(setup / "tiny"), "--corpus", str(setup / "corpus"), "--lengths", "64"]
    assert main([*args, "--rope", rope, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == (
        f"ropekit sweep: error: rope {rope!r}: '{name}' cannot name a rope ({problem}); a name is letters, digits "
        "and . _ : + - (at most 64 characters)"
    )
    assert not (tmp_path / "run").exists()


def test_a_newline_in_a_spec_files_rope_name_or_a_document_name_is_refused(setup, tmp_path, capsys):
    model, corpus = inputs(setup, tmp_path)
    (tmp_path / "nl.toml").write_text(
        f'models = ["{model}"]\ncorpus = "{corpus}"\nlengths = [64]\n[ropes]\n"a/b\\nc" = "yarn:2"\n'
    )
    assert main(["sweep", str(tmp_path / "nl.toml"), "--quiet", "--out", str(tmp_path / "run")]) == 2
    refusal = "ropekit sweep: error: ropes: 'a/b\\nc' cannot name a rope (it holds a newline)"
    assert error_line(capsys).startswith(refusal)
    lines = [json.dumps({"id": "one", "text": "x " * 300}), json.dumps({"id": "two\nlines", "text": "y " * 300})]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    args = ["sweep", "--model", str(model), "--corpus", str(tmp_path / "docs.jsonl"), "--lengths", "64"]
    assert main([*args, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == (
        f"ropekit sweep: error: {tmp_path / 'docs.jsonl'} (line 2) names a document 'two\\nlines', which holds a "
        "newline; a name is one line"
    )
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    assert main([*args, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys).endswith("docs.jsonl line 1: its 'text' is 5, not a string of text")
    assert not (tmp_path / "run").exists()


def test_a_unicode_rope_name_round_trips(setup, tmp_path):
    built = one_cell(setup / "tiny", setup / "corpus", ropes={"é:ü": "yarn:2"})
    assert run_sweep(built, tmp_path, quiet=True).ok
    assert [r["rope"] for r in results(tmp_path)] == ["é:ü"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine torch sees no CUDA device on")
def test_a_device_torch_does_not_see_is_refused_before_anything_is_written(setup, tmp_path, capsys):
    args = ["sweep", "--model", str(setup / "tiny"), "--corpus", str(setup / "corpus"), "--lengths", "64"]
    assert main([*args, "--device", "cuda", "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys).endswith("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
    assert not (tmp_path / "run").exists()
    assert main([*args, "--quiet", "--out", str(tmp_path / "run")]) == 0  # the corrected command runs


def test_weights_that_would_not_load_are_refused_before_anything_is_written(setup, tmp_path, capsys):
    model, corpus = inputs(setup, tmp_path)
    tensors = load_file(model / "model.safetensors")
    broken = {
        "missing": ({k: v for k, v in tensors.items() if k != "model.layers.0.mlp.down_proj.weight"}, "is missing"),
        "shape": ({**tensors, "model.norm.weight": torch.ones(3)}, "has shape (3,), but the config implies"),
    }
    for name, (weights, _) in broken.items():
        shutil.copytree(model, tmp_path / name)
        save_file(weights, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    shutil.copytree(model, tmp_path / "corrupt")
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"not a safetensors file")
    for name, problem in [*((n, p) for n, (_, p) in broken.items()), ("corrupt", "is truncated or corrupted")]:
        args = ["sweep", "--model", str(tmp_path / name), "--corpus", str(corpus), "--lengths", "64"]
        for workers in ("1", "2"):  # two: refused before any worker starts
            assert main([*args, "--workers", workers, "--quiet", "--out", str(tmp_path / "run")]) == 2
            assert problem in error_line(capsys)
            assert not (tmp_path / "run").exists()


def test_a_tokenizer_that_is_code_is_refused_and_never_runs(setup, tmp_path, capsys):
    model, corpus = inputs(setup, tmp_path)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config |= {"tokenizer_class": "MyTokenizer", "auto_map": {"AutoTokenizer": ["code.MyTokenizer", None]}}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "code.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    (model / "tokenizer.json").unlink()
    args = ["sweep", "--model", str(model), "--corpus", str(corpus), "--lengths", "64"]
    assert main([*args, "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert error_line(capsys) == (
        f"ropekit sweep: error: {model}: its tokenizer is code of its own (auto_map in tokenizer_config.json), and "
        "ropekit never runs code from a checkpoint: give it a tokenizer.json, or use a model with a tokenizer.json"
    )
    assert not (tmp_path / "ran").exists() and not (tmp_path / "run").exists()


def test_a_mistyped_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--n-docs", "abc"])
    assert stop.value.code == 2
    assert error_line(capsys) == (
        "ropekit sweep: error: argument --n-docs: invalid int value: 'abc'; ropekit sweep --help lists the arguments"
    )


def test_ctrl_c_while_the_command_imports_is_one_line(monkeypatch, capsys):
    """The console script's ``main`` imports the CLI inside its own handler (ropekit/__main__.py)."""
    from ropekit import __main__ as entry

    class Interrupt:  # a Ctrl-C at the import of ropekit.cli, as the user's arrives while numpy loads
        def find_spec(self, name, path=None, target=None):
            if name == "ropekit.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "ropekit.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    assert entry.main() == 130
    assert error_line(capsys) == "ropekit: interrupted"
