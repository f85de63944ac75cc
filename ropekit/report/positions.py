"""Loss by position: whether distant tokens still help (the loss keeps falling with position) or a rope
breaks past the trained length (it rises there), from the perplexity passes already run.

Each document of a cell keeps ``blocks`` in documents.csv: the NLL sums of its consecutive blocks of
``block`` (64) predictions from the first prediction on, the last block holding what is left (its
count: the document's n_tokens minus ``block`` times the other blocks). They are bucketed log-spaced
in powers of two aligned to blocks: predictions [1, 64], [65, 128], [129, 256], [257, 512], ... (block
k covers predictions 64k+1 .. 64k+64; bucket j >= 1 holds blocks 2**(j-1) .. 2**j - 1). A bucket's
figure is its total NLL over its predictions, over all the cell's documents (in modes first and yarn
every document of a cell has the same length, so weighing by tokens or by documents agree), and its
interval the percentile bootstrap of ``stats.ppl_interval`` on the bucket's part of each document,
in nats per token: the unit rule of ropekit.stats, so its documents when the cell has at least
``stats.MIN_UNITS`` of them, else the bucket's blocks resampled within each document, and no interval
from fewer than ``stats.MIN_UNITS`` blocks; seeded by the cell key and the bucket.

Only modes ``first`` and ``yarn`` read a document from its start in one pass, so that a block's place
in the document is its place in the context; strided and rolling windows restart the context, and
their blocks say nothing about position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import stats
from .curves import draw_band, figure_grid, finish_figure, mark_trained, model_label
from .intervals import BLOCK
from .style import rope_colors

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .curves import Styles

COLUMNS = ["model", "layer_mix", "rope", "length", "cell", "first", "last", "n_blocks", "n_tokens"]
COLUMNS += ["nll", "nll_lo", "nll_hi", "interval"]


def loss_by_position(
    documents: pd.DataFrame, *, block: int = BLOCK, n: int = stats.N, level: float = stats.LEVEL
) -> pd.DataFrame:
    """One row per cell of ``documents`` (documents.csv as ``Sweep.documents`` reads it) and bucket:
    its ``first`` and ``last`` prediction, blocks and predictions pooled, mean NLL per token with its
    interval (NaN bounds, and ``interval`` saying why, when there is none). A cell with a document
    lacking its blocks (a directory written before ropekit stored them) is left out."""
    import numpy as np
    import pandas as pd

    rows = []
    for cell, docs in documents.groupby("cell", sort=False):
        docs = docs.sort_values("doc", kind="stable")
        tokens = [int(t) for t in docs["n_tokens"]]
        sizes = [stats.block_tokens(t, block) for t in tokens]
        if any(not b or len(b) != len(s) for b, s in zip(docs["blocks"], sizes, strict=True)):
            continue
        first = docs.iloc[0]
        for j in range((max(len(s) for s in sizes) - 1).bit_length() + 1):  # the bucket of the last block, too
            start, stop = (0, 1) if j == 0 else (2 ** (j - 1), 2**j)  # the bucket's blocks
            parts = [(list(b[start:stop]), s[start:stop]) for b, s in zip(docs["blocks"], sizes, strict=True)]
            parts = [(b, s) for b, s in parts if b]  # a shorter document may end before this bucket
            if not parts:
                continue
            nll_sums, counts = [sum(b) for b, _ in parts], [sum(s) for _, s in parts]
            lo, hi, method = stats.ppl_interval(
                nll_sums,
                counts,
                [b for b, _ in parts],
                block=block,
                seed=stats.seed_of(f"{cell} positions {j}"),
                n=n,
                level=level,
            )
            rows.append(
                {
                    **{c: first[c] for c in ("model", "layer_mix", "rope")},
                    "length": int(first["length"]),
                    "cell": cell,
                    "first": start * block + 1,
                    "last": start * block + max(counts),
                    "n_blocks": sum(len(b) for b, _ in parts),
                    "n_tokens": sum(counts),
                    "nll": sum(nll_sums) / sum(counts),
                    "nll_lo": math.log(lo) if np.isfinite(lo) else math.nan,
                    "nll_hi": math.log(hi) if np.isfinite(hi) else math.nan,
                    "interval": method,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_loss_by_position(
    documents: pd.DataFrame,
    *,
    length: int | None = None,
    trained_context: int | Mapping[str, int] | None = None,
    colors: Styles | None = None,
    title: str | None = None,
    block: int = BLOCK,
    n: int = stats.N,
    level: float = stats.LEVEL,
) -> Figure:
    """Mean NLL per token against the prediction's position (each bucket drawn at its last prediction,
    log2 axis), one line per rope with its interval where the bucket has one, one panel per (model,
    layer mix), at ``length`` (default: the longest in ``documents``). Pass the documents of cells of
    modes first or yarn only (see the module's docstring). ``trained_context`` (one for all models, or
    per model) is drawn as a dotted line."""
    lengths = documents["length"].astype(int)
    length = length or int(lengths.max())
    found = loss_by_position(documents[lengths == length], block=block, n=n, level=level)
    colors = colors or rope_colors(documents["rope"])
    panels = list(found.groupby(["model", "layer_mix"], sort=False))
    fig, axes = figure_grid(max(len(panels), 1), sharey=True)
    for ax, ((model, mix), rows) in zip(axes, panels, strict=False):
        for rope, part in rows.groupby("rope", sort=False):
            color, linestyle, marker = colors[rope]
            x, y = part["last"].to_numpy(), part["nll"].to_numpy(float)
            ax.plot(x, y, color=color, linestyle=linestyle, marker=marker, markersize=4, label=rope)
            draw_band(ax, x, y, part["nll_lo"].to_numpy(float), part["nll_hi"].to_numpy(float), color)
        ticks = sorted(set(rows["last"]))
        _position_axis(ax, ticks)
        trained = trained_context.get(model) if isinstance(trained_context, Mapping) else trained_context
        mark_trained(ax, trained, ticks[-1])
        ax.set_ylabel("mean NLL per token (nats)")
        ax.set_title(f"{model_label(model)}, layer mix {mix}")
        ax.grid(True, which="major", alpha=0.3)
    if not panels:
        axes[0].text(0.5, 0.5, "no blocks to bucket", transform=axes[0].transAxes, ha="center", gid="empty")
    title = title or f"Loss by position at {length:,} tokens"
    finish_figure(fig, axes, found.assign(status="ok"), title)  # every line drawn is a scored cell
    return fig


def _position_axis(ax, ticks: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    # every tick a plain count: a bucket ends at 8,192 but the last at 16,383 (L - 1 predictions), which
    # "k" labels would write as "8k, 16,383"
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)):,}"))
    ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
    ax.set_xlabel("position of the prediction (last of each bucket, log2 scale)")
