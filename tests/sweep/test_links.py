"""Symbolic links inside a sweep's DIR (issue 28, item 2): nothing ropekit reads or writes there goes
through one. A link at any name a sweep, ``ropekit status`` or the report uses, file or folder, at any
depth, is refused in one line naming it before anything is written, and what it points to (a file and
a folder outside DIR) stays byte for byte; DIR itself may be a link, the user named it. A link that
appears once the sweep has checked DIR is not followed either (``O_NOFOLLOW``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ropekit.cache import LinkError
from ropekit.cli import build_parser, main, sweep_spec_from_args
from ropekit.sweep import ResultStore, run_sweep
from ropekit.sweep import store as store_module
from ropekit.sweep.claims import Claims, Unit

VICTIM = b"the victim's own bytes\nnot ropekit's\n"


def argv(setup: Path, out: Path, *extra: str) -> list[str]:
    """One cell: the default rope at 64 tokens, on one document."""
    return [
        "sweep",
        "--quiet",
        "--out",
        str(out),
        "--model",
        str(setup / "tiny"),
        "--corpus",
        str(setup / "corpus"),
        "--lengths",
        "64",
        "--rope",
        "default",
        "--n-docs",
        "1",
        *extra,
    ]


def tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` (links not followed) with a file's bytes: what must not change."""
    found = {".": path.read_bytes() if path.is_file() else None}
    for entry in sorted(path.rglob("*")) if path.is_dir() else []:
        found[str(entry.relative_to(path))] = None if entry.is_dir() or entry.is_symlink() else entry.read_bytes()
    return found


@pytest.fixture
def victims(tmp_path) -> tuple[Path, Path]:
    """A file and a folder outside DIR, for links in DIR to point to."""
    file, folder = tmp_path / "victim", tmp_path / "victims"
    file.write_bytes(VICTIM)
    folder.mkdir()
    (folder / "keep.txt").write_bytes(VICTIM)
    return file, folder


def link(out: Path, name: str, victims: tuple[Path, Path], folder: bool) -> Path:
    """``out/name`` made a link to the victim file (or folder), the folders above it made."""
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victims[1] if folder else victims[0])
    return path


def refusal(command: str, path: Path, out: Path, target: Path, instead: str = "") -> str:
    return (
        f"ropekit {command}: error: {path} is a symbolic link (to {target}); ropekit reads and writes nothing "
        f"through links in {out}: remove it{instead}\n"
    )


FILES = [
    ".lock",
    "results.csv",
    "documents.csv",
    "trials.csv",
    "timings.csv",
    "meta.json",
    "plans.json",
    "units.json",
    "report.md",
    "report.html",
    "claims/.lock",
    "claims/.clock",
    "shards/w/.lock",
    "shards/w/results.csv",
    "figures/perplexity.png",
]
FOLDERS = ["claims", "shards", "shards/w", "figures"]
CASES = [(name, False) for name in FILES] + [(name, True) for name in FOLDERS]


@pytest.mark.parametrize(("name", "folder"), CASES)
def test_a_sweep_refuses_a_link_in_dir_before_writing_anything(setup, tmp_path, victims, capsys, name, folder):
    out = tmp_path / "out"
    path = link(out, name, victims, folder)
    before, kept = tree(out), [tree(v) for v in victims]
    assert main(argv(setup, out)) == 2
    captured = capsys.readouterr()
    target = victims[1] if folder else victims[0]
    assert captured.err == refusal("sweep", path, out, target, ", or use another --out")
    assert "Traceback" not in captured.out + captured.err
    assert tree(out) == before and [tree(v) for v in victims] == kept


@pytest.mark.parametrize("name", [".lock", "results.csv", "meta.json", "claims", "shards/w/.lock"])
def test_run_sweep_refuses_it_too(setup, tmp_path, victims, name):
    """The library's entry point, without the command's check first: the store refuses it on opening."""
    out = tmp_path / "out"
    path = link(out, name, victims, name == "claims")
    spec = sweep_spec_from_args(build_parser().parse_args(argv(setup, out)))
    before, kept = tree(out), [tree(v) for v in victims]
    with pytest.raises(LinkError, match=f"^{path} is a symbolic link"):
        run_sweep(spec, out, quiet=True)
    assert tree(out) == before and [tree(v) for v in victims] == kept


def test_the_dry_run_and_the_slurm_folder(setup, tmp_path, victims, capsys, monkeypatch):
    out = tmp_path / "out"
    path = link(out, "results.csv", victims, False)
    assert main(argv(setup, out, "--dry-run")) == 2
    assert capsys.readouterr().err == refusal("sweep", path, out, victims[0], ", or use another --out")
    path.unlink()
    path = link(out, "slurm", victims, True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # refused before sbatch is looked for
    assert main(argv(setup, out, "--executor", "slurm", "--workers", "2")) == 2
    assert capsys.readouterr().err == refusal("sweep", path, out, victims[1], ", or use another --out")
    assert [tree(v) for v in victims] == [{".": VICTIM}, {".": None, "keep.txt": VICTIM}]


@pytest.fixture(scope="module")
def swept(setup, tmp_path_factory) -> Path:
    """A finished one-cell sweep with its report, run with DIR a link to a folder (the user's choice)."""
    base = tmp_path_factory.mktemp("linked")
    (base / "real").mkdir()
    (base / "dir").symlink_to(base / "real")
    assert main(argv(setup, base / "dir")) == 0
    assert (base / "real" / "results.csv").is_file() and (base / "real" / "report.html").is_file()
    assert main(["status", str(base / "dir")]) == 0
    assert main(["report", str(base / "dir")]) == 0
    return base / "real"


def test_dir_itself_a_link_works(setup, swept, capsys):
    assert main(argv(setup, swept.parent / "dir")) == 0  # resumed through the link: nothing to compute
    assert "1 cells in" in capsys.readouterr().out and not (swept / "shards").exists()


@pytest.mark.parametrize(
    ("name", "folder"),
    [("meta.json", False), ("results.csv", False), ("documents.csv", False), ("claims", True), (".lock", False)],
)
def test_status_reads_nothing_through_a_link(swept, tmp_path, victims, capsys, name, folder):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    (out / "shards" / "w").mkdir(parents=True)  # a shard to merge: status would take DIR/.lock
    path = link(out, name, victims, folder)
    before, kept = tree(out), [tree(v) for v in victims]
    capsys.readouterr()
    assert main(["status", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == refusal("status", path, out, victims[1] if folder else victims[0])
    assert captured.out == "" and tree(out) == before and [tree(v) for v in victims] == kept


def test_export_writes_nothing_through_a_link(swept, tmp_path, victims, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    path = link(out, "export", victims, True)
    assert main(["export", str(out)]) == 2
    assert capsys.readouterr().err == refusal("export", path, out, victims[1])
    assert [tree(v) for v in victims] == [{".": VICTIM}, {".": None, "keep.txt": VICTIM}]


def test_a_link_that_appears_later_is_not_followed(setup, tmp_path, victims):
    """Links made after the entry points' checks: the files are opened with O_NOFOLLOW."""
    out = tmp_path / "out"
    spec = sweep_spec_from_args(build_parser().parse_args(argv(setup, out)))
    with ResultStore(out, spec) as store:
        (out / "timings.csv").unlink()
        path = link(out, "timings.csv", victims, False)
        with pytest.raises(LinkError, match=f"^{path} is a symbolic link"):
            store.add_timing("cell", 1.0)
        with pytest.raises(LinkError, match=f"^{path} is a symbolic link"):
            store_module._cut(path, 3)
    (out / ".lock").unlink()
    path = link(out, ".lock", victims, False)
    with pytest.raises(LinkError, match=f"^{path} is a symbolic link"):
        store_module._lock(out)
    path.unlink()
    claims = Claims(out, "w")
    clock = link(out, "claims/.clock", victims, False)
    with pytest.raises(LinkError, match=f"^{clock} is a symbolic link"):
        claims.now()
    clock.unlink()
    unit = Unit("tiny", [("native", "default")], ["a-cell"])
    temporary = link(out, f"claims/{unit.id}.w.tmp", victims, False)
    with pytest.raises(LinkError, match=f"^{temporary} is a symbolic link"):
        claims.claim([unit], lambda u: False)
    shard = link(out, "shards/gone", victims, True)  # a shard folder that is a link is none
    assert store_module.shards(out) == [] and store_module.Merger(out).merge() == {}
    assert shard.is_symlink() and os.listdir(victims[1]) == ["keep.txt"]
    assert [tree(v) for v in victims] == [{".": VICTIM}, {".": None, "keep.txt": VICTIM}]


def test_a_link_inside_a_folder_of_dir_that_stays_in_dir_is_no_refusal(tmp_path, victims):
    """submitit links its files to one another inside ``DIR/slurm`` (a resumed Slurm sweep reads that folder
    again); a link there that leads out of DIR is refused, as anywhere."""
    from ropekit.cache import no_links

    out = tmp_path / "out"
    (out / "slurm" / "1_0").mkdir(parents=True)
    (out / "slurm" / "1_0" / "1_0_log.out").write_text("log")
    (out / "slurm" / "1_log.out").symlink_to(out / "slurm" / "1_0" / "1_0_log.out")
    no_links(out, "slurm")
    escape = out / "slurm" / "1_0" / "escape"
    escape.symlink_to(victims[0])
    with pytest.raises(LinkError, match=f"^{escape} is a symbolic link \\(to {victims[0]}\\)"):
        no_links(out, "slurm")
