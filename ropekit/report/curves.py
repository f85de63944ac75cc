"""Perplexity against context length: absolute, relative to a baseline rope, across layer mixes, and
bits per byte across models.

Every function takes the results DataFrame (:func:`ropekit.report.load_results`, or any frame with
the columns model, rope, layer_mix, length, ppl, status) and returns a matplotlib Figure. Each line
carries its interval as a band (error bars at a length with no neighbour to join): perplexity's
from the ``ppl_lo``/``ppl_hi`` columns, a relative figure's from the paired differences of
:func:`ropekit.report.paired_differences` (passed as ``differences``; a ring marks a length where the
interval excludes 1). A line without interval columns is drawn alone. Lengths
are on a log2 axis; a failed cell is a cross at the top of its panel labelled with its status
(``oom``, ``nan``, ``no_docs``), never a silently missing point; pending cells are counted in the
title; a panel with no number to draw (every cell failed or pending) says so. When the frame has a
``trained_context`` column its value is marked as a dotted line. Perplexity and its ratio to a
baseline get a zoom panel beside each whole one where some rope lies far from the rest
(``ropekit.report.zoom``), and the legend names ropes with identical numbers. Every figure is
``WIDTH`` inches wide, the report's column at its DPI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .results import PENDING
from .style import Style, plain_log_ticks, rope_colors, series_styles, tokens_label
from .zoom import NEAR, identical, label_outside, mark_outside, ratio_ticks, window

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Styles = Mapping[str, Style]
WIDTH = 12.0  # inches: every figure as wide as the report's column (report.document: CSS, DPI)
PANEL_HEIGHT = 3.9


def plot_perplexity(frame: pd.DataFrame, *, colors: Styles | None = None, title: str | None = None) -> Figure:
    """Perplexity vs context length, one line per rope with its interval, one panel per (model, layer mix)."""
    return _curves(frame, "rope", None, colors or rope_colors(frame["rope"]), title or "Perplexity vs context length")


def plot_relative(
    frame: pd.DataFrame,
    baseline: str = "default",
    *,
    differences: pd.DataFrame | None = None,
    colors: Styles | None = None,
    title: str | None = None,
) -> Figure:
    """Each rope's perplexity divided by ``baseline``'s at the same (model, layer mix, length), as
    the YaRN and LongRoPE papers compare methods: below 1 is better than the baseline. With
    ``differences`` (``paired_differences(sweep, baseline)``) each ratio carries its paired interval."""
    _require(frame, "rope", baseline)
    return _curves(
        frame,
        "rope",
        baseline,
        colors or rope_colors(frame["rope"]),
        title or f"Perplexity relative to {baseline}",
        differences,
    )


def plot_layer_mixes(
    frame: pd.DataFrame,
    rope: str | None = None,
    reference: str | None = None,
    *,
    differences: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """For one rope (default: ``default`` if swept, else the first), one line per layer mix: left
    perplexity with its interval, right relative to the ``reference`` mix (default: ``native`` if
    swept, else the first), with the paired interval of ``differences``
    (``paired_differences(sweep, reference, series="layer_mix")``). One row of panels per model."""
    rope = rope or preferred(frame["rope"], "default")
    _require(frame, "rope", rope)
    rows = frame[frame["rope"] == rope]
    mixes = list(dict.fromkeys(rows["layer_mix"]))
    reference = reference or preferred(mixes, "native")
    _require(rows, "layer_mix", reference)
    styles = series_styles(mixes, first=reference)
    models = list(dict.fromkeys(rows["model"]))
    fig, axes = figure_grid(len(models) * 2, columns=2)
    for i, model in enumerate(models):
        part = rows[rows["model"] == model]
        for ax, baseline in ((axes[2 * i], None), (axes[2 * i + 1], reference)):
            draw_panel(ax, part, "layer_mix", baseline, styles, differences)
            ax.set_title(f"{model_label(model)}: {'perplexity' if baseline is None else 'relative to ' + reference}")
    finish_figure(fig, axes, rows, title or f"Layer mixes, rope {rope}")
    return fig


def plot_bits_per_byte(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bits per byte vs context length, one panel per rope, one line per model (and layer mix when
    there are several): total NLL over the text's UTF-8 bytes, which, unlike token perplexity, does not
    depend on the tokenizer, so models compare. Bands from ``bits_per_byte_lo``/``bits_per_byte_hi``
    (:func:`ropekit.report.with_bits_per_byte_intervals`) when present."""
    several_mixes = frame["layer_mix"].nunique() > 1
    labels = [
        model_label(m) + (f", {x}" if several_mixes else "")
        for m, x in zip(frame["model"], frame["layer_mix"], strict=True)
    ]
    frame = frame.drop(columns=["trained_context"], errors="ignore").assign(line=labels)
    ropes = list(dict.fromkeys(frame["rope"]))
    styles = series_styles(frame["line"])
    fig, axes = figure_grid(len(ropes), sharey=True)
    for ax, rope in zip(axes, ropes, strict=False):
        draw_panel(ax, frame[frame["rope"] == rope], "line", None, styles, value="bits_per_byte")
        ax.set_title(f"rope {rope}")
    finish_figure(fig, axes, frame, title or "Bits per byte vs context length (comparable across tokenizers)")
    return fig


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells with a finite perplexity: what a figure can draw."""
    import numpy as np

    return frame[(frame["status"] == "ok") & np.isfinite(frame["ppl"].to_numpy(float))]


def has_comparison(frame: pd.DataFrame, series: str, baseline: str) -> bool:
    """Whether another ``series`` value (rope or layer mix) has a perplexity at a cell where
    ``baseline`` has one: what a figure relative to ``baseline`` needs to show anything."""
    rows = scored(frame)
    at = ["model", "layer_mix" if series == "rope" else "rope", "length"]
    base = rows.loc[rows[series] == baseline, at]
    return not base.merge(rows.loc[rows[series] != baseline, at]).empty


def preferred(values, name: str):
    """``name`` when it is among ``values`` (``default`` rope, ``native`` mix), else the first."""
    values = list(dict.fromkeys(values))
    return name if name in values else values[0]


def model_label(model: str) -> str:
    """An embedded name as it is; a checkpoint path by its file or folder name, to fit a title."""
    return model.rstrip("/").rsplit("/", 1)[-1]


def _require(frame: pd.DataFrame, column: str, value: str) -> None:
    values = list(dict.fromkeys(frame[column]))
    if value not in values:
        raise ValueError(f"{column} {value!r} is not in the results; expected one of {', '.join(map(str, values))}")


def _curves(
    frame: pd.DataFrame,
    series: str,
    baseline: str | None,
    styles: Styles,
    title: str,
    differences: pd.DataFrame | None = None,
) -> Figure:
    """One row per (model, layer mix): the whole panel, and beside it the zoom where its lines differ by
    a few per cent (``ropekit.report.zoom``) when some point lies far from the rest. Each column shares
    its y scale, so the rows compare at a glance."""
    panels = list(frame.groupby(["model", "layer_mix"], sort=False))
    windows = [window(_points(rows, series, baseline, differences), baseline is not None) for _, rows in panels]
    zoomed = [w for w in windows if w is not None]
    fig, grid = figure_rows(len(panels), 2 if zoomed else 1)
    notes: list[str] = []
    for axes, ((model, mix), rows) in zip(grid, panels, strict=True):
        draw_panel(axes[0], rows, series, baseline, styles, differences)
        axes[0].set_title(f"{model_label(model)}, layer mix {mix}")
        notes += [n for n in identical(rows, series, "ppl") if n not in notes]
        if zoomed:
            limits = (min(w[0] for w in zoomed), max(w[1] for w in zoomed))
            draw_panel(axes[1], rows, series, baseline, styles, differences, zoom=limits)
            near = "1" if baseline else "the best at each length"
            axes[1].set_title(f"zoom: within {round(NEAR * 100)} % of {near}", fontsize=10)
            axes[1].set_gid("zoom")
    if baseline is not None and grid[0][0].get_yscale() == "log":
        ratio_ticks(grid[0][0])  # the column shares one axis: once its limits are final
    finish_figure(fig, [ax for axes in grid for ax in axes], frame, title, notes)
    return fig


def _points(rows: pd.DataFrame, series: str, baseline: str | None, differences) -> pd.DataFrame:
    """The panel's points as ``zoom.window`` reads them: series, length, y (a ratio to ``baseline``
    when given) and its interval's bounds."""
    import pandas as pd

    parts = []
    base = rows[rows[series] == baseline].set_index("length")["ppl"] if baseline else None
    for name, part in rows.groupby(series, sort=False):
        ok = part[part["status"] == "ok"].sort_values("length")
        y = ok["ppl"].to_numpy(float)
        if base is not None:
            y = y / base.reindex(ok["length"]).to_numpy(float)
        lo, hi, _ = _interval(ok, series, name, baseline, differences, "ppl")
        parts.append(pd.DataFrame({"series": name, "length": ok["length"].to_numpy(), "y": y, "lo": lo, "hi": hi}))
    return pd.concat(parts) if parts else pd.DataFrame(columns=["series", "length", "y", "lo", "hi"], dtype=float)


def figure_rows(n: int, columns: int) -> tuple[Figure, list[list[Axes]]]:
    """``n`` rows of ``columns`` panels, the figure as wide as the report, each column sharing its y axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, PANEL_HEIGHT * n + 0.6), layout="constrained")
    axes = fig.subplots(n, columns, squeeze=False, sharey="col")
    return fig, [list(row) for row in axes]


def figure_grid(n: int, columns: int = 3, sharey: bool = False) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    cols = min(n, columns)
    rows = -(-n // cols)
    fig = Figure(figsize=(WIDTH, PANEL_HEIGHT * rows + 0.6), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def draw_panel(
    ax: Axes,
    rows: pd.DataFrame,
    series: str,
    baseline: str | None,
    styles: Styles,
    differences: pd.DataFrame | None = None,
    value: str = "ppl",
    zoom: tuple[float, float] | None = None,
) -> None:
    """One panel: a line per value of ``series`` (rope, layer mix or model), divided by the ``baseline``
    series when given, each with its interval band; failed cells as labelled crosses along the top edge.
    With ``zoom`` (a y range) only the points inside it are drawn, on a linear axis, each point outside
    a triangle at the edge with its value; a perplexity's interval there is an error bar per point,
    nudged sideways per line (bands of several lines would cover the panel as one)."""
    import numpy as np

    base = rows[rows[series] == baseline].set_index("length")[value] if baseline else None
    failed_at: dict[int, int] = {}
    outside: list[tuple] = []
    drawn = False
    names = list(dict.fromkeys(rows[series]))
    for k, (name, part) in enumerate(rows.groupby(series, sort=False)):
        color, linestyle, marker = styles[name]
        ok = part[part["status"] == "ok"].sort_values("length")
        x, y = ok["length"].to_numpy(), ok[value].to_numpy(float)
        if base is not None:
            y = y / base.reindex(ok["length"]).to_numpy(float)
        keep = np.isfinite(y)
        lo, hi, excludes = _interval(ok, series, name, baseline, differences, value)
        nudge = 2 ** (0.05 * (k - (len(names) - 1) / 2))  # on the log2 length axis
        if zoom is not None:
            outside += mark_outside(ax, x[keep], y[keep], color, nudge, zoom)
            keep &= (y >= zoom[0]) & (y <= zoom[1])
        drawn = drawn or keep.any()
        if zoom is None:
            ax.plot(x[keep], y[keep], color=color, linestyle=linestyle, marker=marker, markersize=5, label=name)
        else:  # a gap where a point lies outside the zoom
            shown = np.where(keep, y, np.nan)
            ax.plot(x, shown, color=color, linestyle=linestyle, marker=marker, markersize=5, label=name)
        if zoom is not None and baseline is None:
            draw_bars(ax, x[keep] * nudge, y[keep], lo[keep], hi[keep], color)
        else:
            draw_band(ax, x[keep], y[keep], lo[keep], hi[keep], color)
        ring = keep & excludes
        if ring.any():
            ax.plot(
                x[ring],
                y[ring],
                marker="o",
                markersize=11,
                markerfacecolor="none",
                markeredgewidth=1.2,
                color=color,
                linestyle="none",
                gid="excludes",
            )
        for _, cell in part[~part["status"].isin(["ok", PENDING])].iterrows():
            _mark_failure(ax, int(cell["length"]), str(cell["status"]), color, failed_at)
    length_axis(ax, rows["length"])
    trained = rows["trained_context"].dropna() if "trained_context" in rows else ()
    mark_trained(ax, int(trained.iloc[0]) if len(trained) else None, max(rows["length"]))
    if not drawn:
        ax.text(0.5, 0.5, "no number yet", transform=ax.transAxes, ha="center", color="0.45", gid="empty")
    if zoom is not None:
        ax.set_ylim(*zoom)
        label_outside(ax, outside, "{:.2f}" if baseline else "{:.3g}")
    if baseline is not None:
        ax.axhline(1.0, color="0.6", linewidth=0.8)
    if baseline is None and value != "ppl":
        ax.set_ylabel(value.replace("_", " "))
    elif baseline is None:
        if drawn and zoom is None:  # matplotlib cannot draw a log axis with no data ("Data cannot be log-scaled")
            ax.set_yscale("log")
            plain_log_ticks(ax)
        ax.set_ylabel("perplexity" + (" (log scale)" if zoom is None else ""))
    else:
        low, high = ax.dataLim.y0, ax.dataLim.y1
        if zoom is None and low > 0 and high / low > 4:  # ratios spanning decades read best on a log axis
            ax.set_yscale("log")
            ratio_ticks(ax)
        ax.set_ylabel(f"perplexity / perplexity of {baseline}")
    ax.grid(True, which="major", alpha=0.3)


def _interval(ok, series: str, name: str, baseline: str | None, differences, value: str):
    """Bounds of each of ``ok``'s cells (sorted by length) and whether the interval excludes the
    baseline: the value's own ``*_lo``/``*_hi`` columns, or for a ratio the paired difference's exp."""
    import numpy as np

    nan = np.full(len(ok), np.nan)
    if baseline is None:
        columns = (f"{value}_lo", f"{value}_hi")
        bounds = [ok[c].to_numpy(float) if c in ok else nan for c in columns]
        return bounds[0], bounds[1], np.zeros(len(ok), bool)
    if differences is None or name == baseline or differences.empty:
        return nan, nan, np.zeros(len(ok), bool)
    other = "layer_mix" if series == "rope" else "rope"
    first = ok.iloc[0] if len(ok) else None
    if first is None:
        return nan, nan, np.zeros(0, bool)
    mine = differences[
        (differences["model"] == first["model"])
        & (differences[other] == first[other])
        & (differences[series] == name)
        & (differences["baseline"] == baseline)
    ].set_index("length")
    found = mine.reindex(ok["length"])
    excludes = found["verdict"].isin(["better", "worse"]).to_numpy()
    return found["ratio_lo"].to_numpy(float), found["ratio_hi"].to_numpy(float), excludes


def draw_band(ax: Axes, x, y, lo, hi, color: str) -> None:
    """A shaded band between ``lo`` and ``hi`` where neighbouring lengths both have one, an error bar
    at a length whose neighbours have none (one length alone draws no band)."""
    import numpy as np

    has = np.isfinite(lo) & np.isfinite(hi)
    before, after = np.r_[False, has[:-1]], np.r_[has[1:], False]
    alone = has & ~before & ~after
    if (has & ~alone).any():
        low, high = np.where(has, lo, y), np.where(has, hi, y)
        ax.fill_between(x, low, high, where=has & ~alone, color=color, alpha=0.18, linewidth=0, gid="interval")
    if alone.any():
        bars = ax.errorbar(
            x[alone],
            y[alone],
            yerr=[y[alone] - lo[alone], hi[alone] - y[alone]],
            fmt="none",
            ecolor=color,
            elinewidth=1.2,
            capsize=3,
        )
        for artist in bars.lines[2]:
            artist.set_gid("interval")


def draw_bars(ax: Axes, x, y, lo, hi, color: str) -> None:
    """An error bar per point with an interval (a zoom panel's, cut at its edges where it runs past)."""
    import numpy as np

    has = np.isfinite(lo) & np.isfinite(hi)
    if not has.any():
        return
    bars = ax.errorbar(
        x[has],
        y[has],
        yerr=[y[has] - lo[has], hi[has] - y[has]],
        fmt="none",
        ecolor=color,
        elinewidth=1.1,
        capsize=2.5,
        alpha=0.7,
    )
    for artist in bars.lines[2]:
        artist.set_gid("interval")


def mark_trained(ax: Axes, trained: int | None, right: float) -> None:
    """The model's trained context (None: unknown, nothing drawn) as a dotted line, labelled on the
    inner side of the line (``right``: the largest x drawn)."""
    if trained is None:
        return
    if trained > right:  # past the lengths drawn: said at the right edge, not drawn outside the panel
        ax.annotate(
            f"trained {tokens_label(trained)} →",
            (1, 0),
            xycoords="axes fraction",
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="0.35",
            gid="trained",
        )
        return
    ax.axvline(trained, color="0.45", linestyle=":", linewidth=1.2, gid="trained")
    at_right_edge = trained >= right
    ax.annotate(
        f"trained {tokens_label(trained)}",
        (trained, 0),
        xycoords=("data", "axes fraction"),
        xytext=(-3 if at_right_edge else 3, 3),
        textcoords="offset points",
        ha="right" if at_right_edge else "left",
        fontsize=8,
        color="0.35",
    )


def _mark_failure(ax: Axes, length: int, status: str, color: str, failed_at: dict[int, int]) -> None:
    """A cross at the top edge of the panel above ``length``, stacked when several fail there."""
    k = failed_at[length] = failed_at.get(length, -1) + 1
    y = 0.95 - 0.07 * k
    transform = ax.get_xaxis_transform()  # x in data, y in axes fraction
    ax.plot([length], [y], transform=transform, marker="X", markersize=8, color=color, linestyle="none", gid="failed")
    ax.annotate(status, (length, y), xycoords=transform, xytext=(6, -3), textcoords="offset points", fontsize=7)


def length_axis(ax: Axes, lengths: Sequence[int]) -> None:
    """A log2 axis of context lengths, a tick at each length labelled as the tables label it (1k, 16k)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = sorted(set(int(n) for n in lengths))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: tokens_label(x)))
    ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
    ax.set_xlabel("context length (tokens, log2 scale)")


def finish_figure(fig: Figure, axes: list[Axes], frame: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> None:
    """The legend (each line once, then what the bands, rings, crosses and edge triangles mean, then
    ``notes``: lines drawn over one another, ``zoom.identical``) and the title with the pending count."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if any(c.get_gid() == "interval" for ax in axes for c in ax.collections):
        handles.append(Patch(color="0.2", alpha=0.18, linewidth=0))
        bars = any(c.get_gid() == "interval" and isinstance(c, LineCollection) for ax in axes for c in ax.collections)
        labels.append("band, bar: interval" if bars else "band: interval")
    if any(line.get_gid() == "excludes" for ax in axes for line in ax.get_lines()):
        handles.append(Line2D([], [], marker="o", markersize=10, markerfacecolor="none", color="0.2", linestyle="none"))
        labels.append("ring: interval excludes 1")
    if any(line.get_gid() == "outside" for ax in axes for line in ax.get_lines()):
        handles.append(Line2D([], [], marker="^", markersize=6, color="0.2", linestyle="none"))
        labels.append("beyond the zoom (its value)")
    if (~frame["status"].isin(["ok", PENDING])).any():
        handles.append(Line2D([], [], marker="X", color="0.2", linestyle="none", markersize=8))
        labels.append("failed cell (status)")
    for note in notes:  # no mark of its own: the sentence is the entry
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(f"{note}\n(identical: drawn over it)")
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=9)
    pending = int((frame["status"] == PENDING).sum())
    if pending:
        title += f"  ({pending} of {len(frame)} cells pending)"
    fig.suptitle(title)
