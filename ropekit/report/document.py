"""``ropekit report DIR``: one self-contained report.html and a report.md with its figures beside it.

    DIR/report.html          figures embedded as PNG data, opens offline
    DIR/report.md            links DIR/figures/*.png
    DIR/figures/NAME.{png,svg,pdf}

Sections: a summary that states the interval convention once and names each model's checkpoint in
words; perplexity vs length per (model, layer mix) with intervals, and a zoom where ropes differ by
a few per cent; relative to the baseline rope with paired intervals (a rope with the baseline's
numbers shown as identical, not as 1.000 [1.000, 1.000]), and which ropes are distinguishable from
it at each length; layer mixes for one rope (when there are several); bits per byte (when there are
several models: token perplexity depends on the tokenizer); what each rope does to the frequencies;
the numbers with their intervals; failed and pending cells; provenance (the command that re-runs the
sweep, wrapped to fit a page, bootstrap settings, spec, versions, device, hashes, dates, wall time).
A figure with nothing to draw (no cell scored yet, no two numbers to compare) is left out with a
sentence why; a directory written before intervals renders with them said to be unavailable. A
symbolic link at one of these (``WRITTEN``, the figures folder's files included) is refused before
anything is written: a file written through it would land outside DIR (``ropekit.cache.no_links``).

A sweep whose documents.csv holds blocks has a Loss by position section (modes first and yarn: mean NLL per
token in power-of-two position buckets at the longest length, the curve that shows whether distant
tokens still help; other modes say why not). A sweep with retrieval tasks adds a Retrieval section
(accuracy and answer log-probability vs length, accuracy by depth and length, the numbers pooled
over depths, failed cells, the conventions).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import stats
from ..cache import atomic_write, no_links
from ..modes import SHARED
from . import own
from .curves import (
    has_comparison,
    model_label,
    plot_bits_per_byte,
    plot_layer_mixes,
    plot_perplexity,
    plot_relative,
    preferred,
    scored,
)
from .frequencies import plot_frequencies
from .intervals import (
    IDENTICAL,
    MEASURED,
    bootstrap_settings,
    convention,
    distinguishable,
    paired_differences,
    with_bits_per_byte_intervals,
)
from .positions import loss_by_position, plot_loss_by_position
from .results import PENDING, READ, ReportError, Sweep, load_sweep, retrieval_plan
from .retrieval import plot_accuracy, plot_depth_heatmap, plot_logprob, pool_depths, retrieval_table, unplaced
from .ruler import THRESHOLD, ruler_summary
from .style import rope_colors
from .tables import DISTINGUISHABLE, bits_per_byte_table, perplexity_table
from .zoom import NEAR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")
WRITTEN = ("report.html", "report.md", "figures")  # what a report writes in DIR
DPI = 110


def check_links(folder: Path) -> None:
    """Refuse a symbolic link at what a report of ``folder`` reads or writes (module docstring)."""
    no_links(folder, *READ, *WRITTEN)


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[str] = field(default_factory=list)  # file stems under figures/
    tables: list[tuple[str, Any]] | None = None  # (caption, DataFrame)
    code: str | None = None
    table_class: str = "numbers"  # numbers: right-aligned cells; text: left-aligned
    command: str | None = None  # a shell command shown verbatim (the one that re-runs the sweep)


@dataclass
class Report:
    html: Path
    markdown: Path
    figures: list[Path]


def write_report(
    path: str | Path,
    *,
    formats: tuple[str, ...] = ("png",),
    baseline: str | None = None,
    mix_rope: str | None = None,
    positions: bool | None = None,
    ruler_threshold: float = THRESHOLD,
) -> Report:
    """Write DIR/report.html, DIR/report.md and DIR/figures/ for a sweep directory, complete or not.

    ``baseline``: the rope the relative figure divides by (default ``default`` if swept, else the
    first); ``mix_rope``: the rope whose layer mixes are compared (same default); ``positions``:
    whether to add the Loss by position section (default: when documents.csv holds blocks to split);
    ``ruler_threshold``: the RULER average (percent) an effective length must exceed (RULER's 85.6)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ReportError(f"format {', '.join(bad)} is not supported; expected some of {', '.join(FORMATS)}")
    sweep = load_sweep(path)
    check_links(sweep.path)
    owned = [rope for frame in sweep.own.values() for rope in frame["rope"]]
    ropes = list(dict.fromkeys([*sweep.results["rope"], *sweep.retrieval["rope"], *owned]))
    for name, value in (("baseline", baseline), ("mix rope", mix_rope)):
        if value is not None and value not in ropes:
            raise ReportError(f"{name} {value!r} is not a rope of this sweep; expected one of {', '.join(ropes)}")
    baseline = baseline or preferred(ropes, "default")
    colors = rope_colors(ropes)
    figures: dict[str, Figure] = {}
    if positions is None:  # perplexity cells whose documents.csv holds their blocks
        docs = sweep.documents
        positions = docs is not None and "blocks" in docs and bool(docs["blocks"].map(len).any())
    sections = _sections(sweep, baseline, mix_rope, colors, figures, positions, ruler_threshold)

    folder = sweep.path / "figures"
    folder.mkdir(exist_ok=True)
    written, png = [], {}
    for stem, fig in figures.items():  # every file written whole or not at all (a full disk)
        for fmt in dict.fromkeys(("png", *formats)):
            data = io.BytesIO()
            fig.savefig(data, dpi=DPI, format=fmt, metadata=_figure_metadata(fmt))
            atomic_write(folder / f"{stem}.{fmt}", data.getvalue())
            written.append(folder / f"{stem}.{fmt}")
            if fmt == "png":
                png[stem] = base64.b64encode(data.getvalue()).decode()
    title = f"ropekit sweep report: {sweep.meta.get('name', sweep.path.name)}"
    md, page = sweep.path / "report.md", sweep.path / "report.html"
    atomic_write(md, _markdown(title, sections))
    atomic_write(page, _html(title, sections, png))
    return Report(page, md, written)


def _figure_metadata(fmt: str) -> dict[str, Any]:
    # No creation dates in the files, so regenerating an unchanged report changes no bytes.
    return {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]


def _sections(
    sweep: Sweep, baseline: str, mix_rope: str | None, colors, figures: dict, positions: bool, threshold: float
) -> list[Section]:
    frame, meta = sweep.results, sweep.meta
    spec = sweep.spec
    owned = [_own_section(sweep, task, colors, figures) for task, rows in sweep.own.items() if len(rows)]
    if frame.empty:  # other tasks only
        import pandas as pd

        retrieval = [_retrieval_section(sweep, colors, figures, threshold)] if sweep.has_retrieval else []
        cells = pd.concat([f for f in (sweep.retrieval, *sweep.own.values()) if f is not None and len(f)])
        axes = ", ".join(
            f"{name}: {', '.join(dict.fromkeys(cells[column]))}"
            for name, column in (("models", "model"), ("ropes", "rope"), ("layer mixes", "layer_mix"))
        )
        said = f" {_retrieval_summary(sweep)}" if sweep.has_retrieval else ""
        summary = Section("Summary", f"No perplexity task; {axes}.{said}")
        return [summary, *retrieval, *owned, _frequency_section(sweep, colors, figures), _provenance(sweep)]
    corpus = meta.get("corpus", {})
    models = list(dict.fromkeys(frame["model"]))
    differences = paired_differences(sweep, baseline)
    described = meta.get("models", {})
    named = [f"{m} ({checkpoint_words(described[m])})" if m in described else m for m in models]
    summary = (
        f"{len(frame)} cells: {_tally(frame)}. "
        f"Models: {', '.join(named)}; corpus: {corpus.get('name', '?')} "
        f"({spec.get('n_docs', '?')} document(s) per length, mode {spec.get('mode', '?')}); "
        f"ropes: {', '.join(dict.fromkeys(frame['rope']))}; "
        f"layer mixes: {', '.join(dict.fromkeys(frame['layer_mix']))}."
    )
    if len(models) > 1:
        summary += (
            " Each model has its own tokenizer, so their token perplexities are not comparable: the models are "
            "compared by bits per byte (section Bits per byte)."
        )
    summary += " " + convention(sweep, differences)
    if sweep.has_retrieval:
        summary += " " + _retrieval_summary(sweep)
    sections = [Section("Summary", summary), *_curve_sections(sweep, baseline, mix_rope, colors, figures, differences)]
    if positions:
        sections.append(_position_section(sweep, colors, figures))
    if sweep.has_retrieval:
        sections.append(_retrieval_section(sweep, colors, figures, threshold))
    sections += owned
    if len(models) > 1:
        sections.append(_bits_per_byte_section(sweep, figures))
    sections.append(_frequency_section(sweep, colors, figures))
    methods = ", ".join(m for m in dict.fromkeys(frame.loc[frame["status"] == "ok", "interval"]) if m)
    sections.append(
        Section(
            "Numbers",
            "Perplexity per cell with its interval [lo, hi] where the directory has one; failed and pending cells "
            f"show their status.{f' Interval methods: {methods}.' if methods else ''}",
            [],
            [("perplexity [interval]", perplexity_table(frame, text=True, intervals=True))],
        )
    )
    problems = frame[frame["status"] != "ok"]
    if len(problems):
        columns = [c for c in ("model", "rope", "layer_mix", "length", "status", "detail") if c in problems]
        sections.append(
            Section("Failed and pending cells", "", [], [("", problems[columns].fillna("").reset_index(drop=True))])
        )
    sections.append(_provenance(sweep))
    return sections


def _curve_sections(
    sweep: Sweep, baseline: str, mix_rope: str | None, colors, figures: dict, differences
) -> list[Section]:
    """Perplexity, relative to the baseline rope, and layer mixes: each figure drawn where there is a
    number to plot (a comparison: two numbers at one length), else a sentence saying why not."""
    import numpy as np

    frame = sweep.results
    title = "Perplexity vs context length"
    banded = bool(np.isfinite(frame["ppl_lo"].to_numpy(float)).any())
    paired = bool(differences["verdict"].isin(MEASURED).any())
    if scored(frame).empty:
        tally = f"{len(frame)} cells, {_tally(frame)}"
        return [Section(title, f"No cell has a perplexity yet, so there is nothing to plot: {tally}.")]
    figures["perplexity"] = plot_perplexity(frame, colors=colors)
    sections = [
        Section(
            title,
            "Perplexity of the first L tokens of each document (lower is better), one line per rope config"
            f"{', shaded over its interval' if banded else ''}. The dotted line is the model's trained context; "
            "a cross on the top edge is a cell that failed, labelled with why." + _zoom_text(figures["perplexity"]),
            ["perplexity"],
        )
    ]
    if len(colors) > 1 and has_comparison(frame, "rope", baseline):
        figures["relative"] = plot_relative(frame, baseline, differences=differences, colors=colors)
        table = perplexity_table(frame, baseline=baseline, text=True, differences=differences)
        sections.append(
            Section(
                f"Relative to {baseline}",
                f"Each rope's perplexity divided by {baseline}'s at the same length: below 1 it does better "
                f"than {baseline}, above 1 worse."
                + (
                    " The band is the paired interval of the ratio, exp of the difference in mean NLL per token on "
                    f"the same documents; a ring in the figure and {DISTINGUISHABLE} in the table mark a ratio whose "
                    "interval excludes 1."
                    if paired
                    else ""
                )
                + _zoom_text(figures["relative"], baseline),
                ["relative"],
                [(f"perplexity / perplexity of {baseline} [interval]", table)],
            )
        )
        if paired:  # else the summary said once that there are no intervals
            sections.append(_distinguishable_section(differences, baseline))
    elif len(colors) > 1:
        sections.append(
            Section(
                f"Relative to {baseline}",
                f"Nothing to compare yet: no length at which {baseline} and another rope both have a perplexity "
                f"({_tallies(frame, 'rope')}).",
            )
        )
    mixes = list(dict.fromkeys(frame["layer_mix"]))
    if len(mixes) > 1:
        rope = mix_rope or preferred(colors, "default")
        rows = frame[frame["rope"] == rope]
        reference = preferred(mixes, "native")
        title = f"Layer mixes (rope {rope})"
        if has_comparison(rows, "layer_mix", reference):
            mix_differences = paired_differences(sweep, reference, series="layer_mix")
            figures["layer_mixes"] = plot_layer_mixes(frame, rope, differences=mix_differences)
            text = (
                f"The same weights under each sliding/global layer plan. Right: relative to {reference}, so the cost "
                "(above 1) or gain of a plan reads directly."
            )
            if banded or mix_differences["verdict"].isin(MEASURED).any():
                text += (
                    " Bands: each perplexity's interval (left) and the paired interval of each ratio on the same "
                    "documents (right, a ring where it excludes 1)."
                )
            sections.append(Section(title, text, ["layer_mixes"]))
        else:
            text = (
                f"Nothing to compare yet: no length at which rope {rope} has a perplexity under {reference} and "
                f"under another mix ({_tallies(rows, 'layer_mix')})."
            )
            sections.append(Section(title, text))
    return sections


def _zoom_text(fig, baseline: str | None = None) -> str:
    """What the zoom panel beside a figure shows, when it has one (``ropekit.report.zoom``)."""
    if not any(ax.get_gid() == "zoom" for ax in fig.axes):
        return ""
    if baseline:
        return (
            f" Right: the same, zoomed on the ratios within {NEAR * 100:g} % of 1, where the ropes differ by a few per "
            "cent; a triangle at an edge marks a ratio beyond the zoom, with its value."
        )
    return (
        f" Right: zoomed on the points within {NEAR * 100:g} % of the best at their length, each cell's interval an "
        "error bar, cut at the panel's edge where it runs past (one cell's interval spans how the text varies, "
        "which the paired comparison in the next section cancels); a triangle at an edge marks a point beyond the "
        "zoom, with its value."
    )


def _distinguishable_section(differences, baseline: str) -> Section:
    """Per length, which ropes' paired intervals exclude 0 (better or worse than the baseline) and
    which do not, as a sentence and a table."""
    title = f"Which ropes differ from {baseline}"
    with_interval = differences[differences["verdict"].isin(MEASURED)]
    apart = with_interval[with_interval["verdict"] != "not distinguishable"]
    lengths = ", ".join(f"{n:,}" for n in sorted(set(apart["length"])))
    text = (
        f"A rope is distinguishable from {baseline} at a length when the interval of its difference in mean NLL "
        f"per token excludes 0. {len(apart)} of the {len(with_interval)} comparisons with an interval exclude 0"
        + (
            f" (at length {lengths}); the table says which."
            if lengths
            else f": every rope is within noise of {baseline}."
        )
        + " What these documents cannot separate is in the resolution column: the median half-width of the ratios' "
        "intervals at that length; a rope whose perplexity is closer than that to the baseline's is, here, "
        "indistinguishable from it, which says as much about the amount of text as about the rope."
    )
    same = differences[differences["verdict"] == IDENTICAL]
    if len(same):
        ropes = ", ".join(dict.fromkeys(same["rope"]))
        text += (
            f" {ropes} has the same numbers as {baseline} on every document at some lengths (a rope that runs "
            f"{baseline}'s frequencies there, such as dynamic below its trained length): identical to it by "
            f"construction, a ratio of exactly 1 (shown as = {baseline}), not a measurement, and left out of "
            "the resolution."
        )
    table = distinguishable(differences).astype(str)
    return Section(title, text, [], [("", table)], table_class="text")


def _own_section(sweep: Sweep, task: str, colors, figures: dict) -> Section:
    """A task's own columns per rope and length, as it shows them (``report/own.py``)."""
    frame, shown = sweep.own[task], sweep.shown[task]
    stems = []
    if (frame["status"] == "ok").any():
        figures[task] = own.plot(frame, shown, colors=colors)
        stems = [task]
    name = shown["label"] + (f" and {shown['beside_label']}" if shown.get("beside") else "")
    return Section(shown["title"], shown.get("text", ""), stems, [(name, own.table(frame, shown))])


def _bits_per_byte_section(sweep: Sweep, figures: dict) -> Section:
    title = "Bits per byte"
    frame = with_bits_per_byte_intervals(sweep)
    if scored(frame)["bits_per_byte"].isna().all():
        return Section(
            title,
            "This directory stores no bits per byte (written before ropekit did), so its models cannot be compared "
            "here: their token perplexities are not comparable across tokenizers.",
        )
    figures["bits_per_byte"] = plot_bits_per_byte(frame)
    text = (
        "Several models: token perplexity depends on each model's tokenizer, so they are compared by bits per byte "
        "(total NLL over the text's UTF-8 bytes / ln 2, lower is better), shaded over its interval (over documents "
        "from 16 of them on, else over each document's blocks, its text and so its bytes fixed)."
    )
    return Section(title, text, ["bits_per_byte"], [("bits per byte [interval]", bits_per_byte_table(frame))])


EXACT = (
    "A trial is exact when greedy decoding would produce exactly the answer: the answer is scored teacher-forced "
    "in one forward pass over the prompt and the answer, and every answer token must be the argmax given the "
    "prompt and the answer tokens before it (what generate with do_sample=False produces for those tokens)."
)


def _retrieval_summary(sweep: Sweep) -> str:
    frame = sweep.retrieval
    plan = retrieval_plan(sweep.spec, sweep.meta)
    tasks = list(dict.fromkeys([*plan, *frame["task"]]))
    per = "; ".join(
        f"{task}: {plan[task]['trials']} trial{'' if plan[task]['trials'] == 1 else 's'}"
        + (f" at each of {len(plan[task]['depths'])} depths" if plan[task]["depths"] != [None] else " per length")
        for task in plan
    )
    return (
        f"Retrieval ({', '.join(tasks)}): {len(frame)} cells (model, layer mix, rope, task, length, depth), "
        f"{_tally(frame)}{f' ({per})' if per else ''}."
    )


def _partly(sweep, ruler) -> str:
    """The RULER tasks scored otherwise than by string_match_all (qa's string_match_part), said in a clause."""
    scores = sweep.meta.get("retrieval", {}).get("scores") or {}
    part = [task for task in ruler if scores.get(task) == "string_match_part"]
    return f" or, for {', '.join(part)}, 1 where any reference answer is in it (string_match_part)" if part else ""


# What each trial task is, for a meta.json written before it says so (ropekit/tasks/ describes them now).
DESCRIBED_BEFORE = {
    "passkey": "the landmark-attention format of the YaRN repository",
    "needle": "RULER's single needle in corpus text",
}


def _retrieval_section(sweep: Sweep, colors, figures: dict, threshold: float = THRESHOLD) -> Section:
    """Accuracy and log-probability vs length, the depth heatmap, the numbers pooled over depths, the
    failed cells, and what each number means."""
    frame, trials, s = sweep.retrieval, sweep.trials, bootstrap_settings(sweep)
    pooled = pool_depths(frame, trials, n=s.n, level=s.level)
    methods = set(pooled.loc[pooled["status"] == "ok", "interval"])
    described = sweep.meta.get("retrieval", {}).get("tasks") or DESCRIBED_BEFORE
    ruler = unplaced(frame)  # RULER's: needles at random depths, scored on what the model writes
    placed_tasks = set(frame["task"]) - ruler  # LongPPL's cells are not retrieval's: its own section says what it is
    tasks = "; ".join(f"{task}: {text}" for task, text in described.items() if task in placed_tasks)
    placed = (  # only where some task places its needle at a depth (RULER's place none)
        "Each prompt hides a key at a depth, the percent of the haystack before the needle (0: at its start, "
        f"100: at its end), in a prompt of exactly the cell's length ({tasks})."
    )
    pooling = (  # what a task with depths means by exact and accuracy (RULER's say theirs below)
        "Accuracy at a length is pooled over its scored depths: exact answers (round(accuracy x n_trials) per "
        f"depth) over trials, with the Wilson score {s.percent} interval of that proportion, the trials taken "
        "as independent."
    )
    text = [
        *([placed, EXACT, pooling] if tasks else []),
        "The mean answer log-probability is the mean over trials of the answer's total "
        f"log-probability in nats (teacher-forced), with a {s.percent} percentile bootstrap over the trials "
        f"pooled over depths ({s.n} resamples, seeded by the cells' keys) and none from fewer than "
        f"{stats.MIN_UNITS} trials (ropekit.stats' unit rule): a log-probability is bounded by 0 and spreads over "
        "orders of magnitude where a rope breaks, so a t interval's normal mean is not assumed.",
    ]
    if ruler:
        text.append(
            f"RULER's tasks ({', '.join(t for t in described if t in ruler) or ', '.join(sorted(ruler))}) "
            "have no depth (its needle tasks hide their needles at random depths), their prompts sized to the "
            "cell's length as RULER sizes them, and are scored on the text greedy decoding writes: the share of the "
            f"reference values it contains (RULER's string_match_all){_partly(sweep, ruler)}, averaged over trials, "
            f"with the Wilson {s.percent} interval of that mean (conservative for partial credit), or a percentile "
            "bootstrap over trials where partial credit has 16 trials or more (their exact trials are those that "
            "scored 1, every value found); their log-probability is of the values joined by commas, teacher-forced."
        )
        if sources := sweep.meta.get("retrieval", {}).get("sources"):
            read = "; ".join(
                f"{task}'s {what}: {s['source']}, sha256 {s['sha256'][:12]}"
                for task, kinds in sources.items()
                for what, s in kinds.items()
            )
            text.append(f"Besides the corpus, their prompts read {read}.")
    if any(m.startswith("none: ") and "fewer than" in m for m in methods):
        text.append(
            f"Here some lengths pool fewer than {stats.MIN_UNITS} trials: their log-probability has no interval "
            "and is drawn without a band."
        )
    if trials is None:
        text.append("This directory has no trials.csv, so no log-probability has an interval.")
    elif any("trials.csv holds" in m for m in methods):
        text.append("trials.csv lacks some trials of scored cells: those lengths' log-probabilities have no interval.")
    stems = []
    if (frame["status"] == "ok").any():
        scores = sweep.meta.get("retrieval", {}).get("scores")
        figures["accuracy"] = plot_accuracy(frame, colors=colors, level=s.level, scores=scores)
        placed = frame[frame["depth"].notna()]  # RULER's tasks place their needles at random: no depth
        if (placed["status"] == "ok").any():
            figures["depth_heatmap"] = plot_depth_heatmap(placed)
        figures["logprob"] = plot_logprob(frame, trials, colors=colors, n=s.n, level=s.level)
        stems = [stem for stem in ("accuracy", "depth_heatmap", "logprob") if stem in figures]
        text.append(
            "The dotted line is the model's trained context; a cross on the top edge is a length at which no "
            "depth has a number, labelled with why; grey heatmap cells have no number (failed, labelled, or "
            "pending)."
        )
    else:
        text.append(f"No retrieval cell has a number yet, so there is nothing to plot: {_tally(frame)}.")
    table = retrieval_table(frame, trials, n=s.n, level=s.level)
    tables = [(f"pooled over depths [{s.percent} interval]", table)]
    if ruler:
        summary = ruler_summary(frame, trials, threshold=threshold, level=s.level)
        tables.append((f"RULER average, percent [{s.percent} interval], and effective length", summary))
        text.append(
            "The RULER average at a length is the mean over the sweep's RULER tasks of each task's score, in "
            f"percent, with the average of the tasks' own intervals, each at the Bonferroni level of a {s.percent} "
            "interval for the average (Wilson's, or a bootstrap over trials for partial credit of 16 trials or "
            f"more); the effective length is the longest length at which it exceeds {threshold:g} there and at every "
            "shorter length (RULER's 85.6 by default: Llama-2-7B's average at 4k)."
        )
    failed = frame[~frame["status"].isin(["ok", PENDING])]
    if len(failed):
        columns = ["model", "rope", "layer_mix", "task", "length", "depth", "status", "detail"]
        failed = failed.assign(depth=["" if d != d else f"{d:g}" for d in failed["depth"]])  # NaN: no depth
        tables.append(("failed cells", failed[columns].astype(str).reset_index(drop=True)))
    return Section("Retrieval", " ".join(text), stems, tables)


def _position_section(sweep: Sweep, colors, figures: dict) -> Section:
    """Loss by position at the longest length with scored blocks, or why it is not drawn."""
    title, mode = "Loss by position", sweep.spec.get("mode", "first")
    if mode not in SHARED:
        return Section(
            title,
            f"Not drawn for mode {mode}: its windows restart the context, so a prediction's place in the document "
            "is not its place in the context; modes first and yarn read each document from its start in one pass.",
        )
    frame, documents, s = sweep.results, sweep.documents, bootstrap_settings(sweep)
    ok = set(frame.loc[frame["status"] == "ok", "cell"]) if "cell" in frame else set()
    if documents is not None:
        documents = documents[documents["cell"].isin(ok) & (documents["blocks"].map(len) > 0)]
    if documents is None or documents.empty:
        return Section(
            title,
            "No scored cell has its documents' blocks in documents.csv (none scored yet, or a directory written "
            "before ropekit stored them), so the loss cannot be split by position.",
        )
    length = int(documents["length"].astype(int).max())
    documents = documents[documents["length"].astype(int) == length]
    found = loss_by_position(documents, block=s.block, n=s.n, level=s.level)
    trained = {m: info.trained_context for m, info in sweep.models.items() if info is not None}
    figures["loss_by_position"] = plot_loss_by_position(
        documents, length=length, trained_context=trained, colors=colors, block=s.block, n=s.n, level=s.level
    )
    text = [
        f"Mean NLL per token by the position of the prediction at {length:,} tokens, pooled in log-spaced buckets "
        f"of {s.block}-prediction blocks (predictions 1-{s.block}, {s.block + 1}-{2 * s.block}, "
        f"{2 * s.block + 1}-{4 * s.block}, ...), each drawn at its last prediction: a loss that keeps falling "
        "with position says distant tokens still help; one that rises past the dotted trained context says the "
        f"rope breaks there. Bands: the {s.percent} percentile bootstrap of each bucket by ropekit.stats' unit "
        f"rule (its documents from {stats.MIN_UNITS} on, else its blocks within each document).",
    ]
    bare = found[found["nll_lo"].isna()].drop_duplicates(["first", "last"])
    if len(bare):
        spans = ", ".join(f"{a:,}-{b:,}" for a, b in zip(bare["first"], bare["last"], strict=True))
        text.append(
            f"No interval, so no band, for the buckets of fewer than {stats.MIN_UNITS} blocks (predictions {spans})."
        )
    longest = int(frame["length"].max())
    if length < longest:
        text.append(f"{length:,} is the longest length with a scored cell and its blocks; {longest:,} has none.")
    missing = [r for r in dict.fromkeys(frame["rope"]) if r not in set(found["rope"])]
    if missing:
        text.append(f"No line for {', '.join(missing)}: no scored cell at {length:,} tokens.")
    return Section(title, " ".join(text), ["loss_by_position"])


def _tallies(frame, column: str) -> str:
    """:func:`_tally` per value of ``column``, e.g. 'native: 3 scored, ...; LG@32: 0 scored, ...'."""
    return "; ".join(f"{value}: {_tally(rows)}" for value, rows in frame.groupby(column, sort=False))


def _tally(frame) -> str:
    """How far the cells of ``frame`` got, e.g. '0 scored, 3 failed (oom), 9 pending'."""
    counts = frame["status"].value_counts()
    failed = {status: int(n) for status, n in counts.items() if status not in ("ok", PENDING)}
    why = ", ".join(s if len(failed) == 1 else f"{n} {s}" for s, n in failed.items())
    ok, pending = int(counts.get("ok", 0)), int(counts.get(PENDING, 0))
    return f"{ok} scored, {sum(failed.values())} failed{f' ({why})' if why else ''}, {pending} pending"


def _frequency_section(sweep: Sweep, colors, figures: dict) -> Section:
    """The frequency figure of each model, from what plans.json keeps of its ropes at the sweep's longest
    length (no torch), or, for a directory from before it kept them, computed by the rope code."""
    from ..rope.table import stored_table

    lengths = sweep.spec.get("lengths") or sorted(set(sweep.results["length"]))
    seq_len = max(lengths)
    notes = []
    for i, (model, info) in enumerate(sweep.models.items()):
        if info is None:
            notes.append(f"{model}: the directory holds no plans.json for it, so its frequencies are not shown.")
            continue
        if not info.ropes:
            continue
        stored = info.frequencies
        if set(stored) == set(info.ropes) and all(r["length"] == seq_len for r in stored.values()):
            table = stored_table(stored)
        else:
            from ..rope import RopeSpec, frequency_table

            table = frequency_table({name: RopeSpec.from_record(r) for name, r in info.ropes.items()}, seq_len)
        stem = "frequencies" if i == 0 else f"frequencies_{i}"
        figures[stem] = plot_frequencies(
            table,
            original_length=info.trained_context,
            title=f"{model_label(model)}: rope of the global layers at {seq_len:,} tokens",
            colors=colors,
        )
    text = (
        f"Per rotary pair of the global layers' rope at {seq_len:,} tokens (dynamic and longrope depend on the "
        "length): wavelength in tokens and how much each rope stretches it relative to default. Bands with "
        "wavelength past the trained context never completed a turn in training."
    )
    stems = [s for s in figures if s.startswith("frequencies")]
    return Section("What each rope does to the frequencies", " ".join([text, *notes]), stems)


# A GGUF file's name ends in its weights' type (llama.cpp's naming: Model-Name.Q4_1.gguf, model-q4_k_m.gguf).
GGUF_TYPE = re.compile(r"^(?P<name>.+?)[.-](?P<kind>I?Q\d\w*|BF16|F16|F32)$", re.IGNORECASE)


def checkpoint_words(record: dict[str, Any]) -> str:
    """Which checkpoint a model of meta.json is, in words, as ``ropekit models`` names the embedded
    ones: ``SmolLM2-135M-Instruct, Q4_1 GGUF`` from its file's name; a hub id with its revision; a
    folder by its name (safetensors)."""
    if "hub_id" in record:
        return f"{record['hub_id']}@{record.get('revision', 'main')}, safetensors"
    path = Path(str(record.get("path", "?")))
    if path.suffix.lower() != ".gguf":
        return f"{path.name}, safetensors folder"
    match = GGUF_TYPE.match(path.stem)
    return f"{match['name']}, {match['kind'].upper()} GGUF" if match else f"{path.stem}, GGUF"


def _hub(model: dict[str, Any]) -> str:
    """A hub model's snapshot, as meta.json records it."""
    return f"{model['hub_id']}@{model['revision']} = commit {model['commit']}, " if "commit" in model else ""


def _provenance(sweep: Sweep) -> Section:
    meta = sweep.meta
    versions = meta.get("versions", {})
    corpus = meta.get("corpus", {})
    rows = [
        ("sweep directory", str(sweep.path)),
        ("spec sha256", meta.get("spec_sha256", "?")),
        (
            "corpus",
            f"{corpus.get('name', '?')} ({corpus.get('documents', '?')} documents), sha256 {corpus.get('sha256', '?')}",
        ),
        *[
            (f"model {m}", f"{checkpoint_words(v)}: {_hub(v)}{v.get('path', '?')}, sha256 {v.get('sha256', '?')}")
            for m, v in meta.get("models", {}).items()
        ],
        ("device", f"{meta.get('device', '?')} ({meta.get('machine', '?')}, {meta.get('threads', '?')} threads)"),
        ("dtype", _dtype(meta)),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        ("bootstrap", _bootstrap(meta)),
        ("started", meta.get("started", "?")),
        ("finished", meta.get("finished", "not finished")),
        ("wall time", _wall(meta)),
        ("report written", datetime.now(timezone.utc).isoformat(timespec="seconds")),
    ]
    import pandas as pd

    table = pd.DataFrame(rows, columns=["", "value"])
    command = meta.get("command")
    if command:
        text = "The exact command that re-runs this sweep:"
    elif "command" in meta:  # a spec whose task tables differ where one flag would set them all
        text = "No command line carries this spec (its task tables differ): the spec below, as a spec file, re-runs it."
    else:
        text = "This directory does not record the command that ran it (written before ropekit stored it)."
    if command:
        command = wrap_command(command)
    return Section("Provenance", text, [], [("", table)], json.dumps(meta.get("spec", {}), indent=1), "text", command)


def wrap_command(command: str | list[str], width: int = 88) -> str:
    """The command as a shell reads it, broken into lines of at most ``width`` characters with ``\\``
    continuations (a flag kept with its value), so that it wraps on any screen and on paper and still
    runs when pasted."""
    import shlex

    words = shlex.split(command) if isinstance(command, str) else list(command)
    groups: list[str] = []
    for word in map(shlex.quote, words):
        if groups and not word.startswith("-") and groups[-1].startswith("-") and " " not in groups[-1]:
            groups[-1] += f" {word}"  # a flag's value on its line
        else:
            groups.append(word)
    lines = [""]
    for group in groups:
        if lines[-1] and len(lines[-1]) + 1 + len(group) > width - 2:
            lines.append("  ")
        lines[-1] += ("" if not lines[-1].strip() else " ") + group
    return " \\\n".join(lines)


def _dtype(meta: dict[str, Any]) -> str:
    dtype = meta.get("dtype")
    if isinstance(dtype, dict):  # what was asked for, what it resolved to here, and why
        return f"{dtype.get('resolved')} (asked {dtype.get('asked') or 'default'}: {dtype.get('reason')})"
    return str(dtype or "not stored")


def _bootstrap(meta: dict[str, Any]) -> str:
    settings = meta.get("intervals") or meta.get("bootstrap")  # the sweep's meta.json; older reports' name
    if not settings:
        return "not stored (directory written before ropekit stored intervals)"
    if isinstance(settings, dict):
        return ", ".join(f"{k} {v}" for k, v in settings.items())
    return str(settings)


def _wall(meta: dict[str, Any]) -> str:
    if "wall_seconds" not in meta:
        return "not finished"
    this, total = meta["wall_seconds"], meta.get("total_wall_seconds", meta["wall_seconds"])
    return f"{this:.0f} s" if total == this else f"{this:.0f} s (last run), {total:.0f} s over all runs"


def _markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        if s.command:
            out += ["```sh", s.command, "```", ""]
        for stem in s.figures:
            out += [f"![{s.title}](figures/{stem}.png)", ""]
        for caption, table in s.tables or []:
            if caption:
                out += [f"*{caption}*", ""]
            out += [_flat(table).to_markdown(index=False, disable_numparse=True), ""]
        if s.code:
            out += ["Spec:", "", "```json", s.code, "```", ""]
    return "\n".join(out)


def _flat(table):
    """Index levels as ordinary columns, so both renderings show them as headed columns."""
    return table.reset_index() if any(table.index.names) else table


# Figures fill the column (drawn curves.WIDTH inches wide at DPI, a little wider than the column, so
# never blown up); long lines wrap rather than scroll, on screen and in print: the command, the spec,
# hashes and paths in the text tables. A numbers table wider than a narrow window scrolls in its own box.
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
img { width: 100%; height: auto; display: block; margin: .8em 0; }
.table { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } table.numbers td { text-align: right; } table.numbers td:first-child { text-align: left; }
table.text td { overflow-wrap: anywhere; }
details { margin: 1em 0; } summary { cursor: pointer; }
pre { background: #f6f6f6; padding: .8em; font-size: .8em; white-space: pre-wrap; overflow-wrap: anywhere; }
@media print { body { max-width: none; margin: 0; } img { break-inside: avoid; } .table { overflow: visible; } }
"""


def _html(title: str, sections: list[Section], png: dict[str, str]) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{e(s.text)}</p>")
        if s.command:
            out.append(f'<pre class="command"><code>{e(s.command)}</code></pre>')
        for stem in s.figures:
            out.append(f'<img alt="{e(s.title)}" src="data:image/png;base64,{png[stem]}">')
        for caption, table in s.tables or []:
            if caption:
                out.append(f"<p><em>{e(caption)}</em></p>")
            rendered = _flat(table).to_html(index=False, na_rep="", border=0, classes=s.table_class)
            out.append(f'<div class="table">{rendered}</div>')
        if s.code:
            out.append(f"<details><summary>Spec (as the sweep resolved it)</summary><pre>{e(s.code)}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)
