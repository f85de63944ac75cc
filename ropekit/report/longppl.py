"""The report's LongPPL section (the sweep's ``longppl`` task, ``ropekit/tasks/longppl.py``): LongPPL against
perplexity per rope and length, each with its interval, and the key tokens each cell scored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

TASK = "longppl"
NUMBERS = ("longppl", "longppl_lo", "longppl_hi", "longce", "n_key_tokens", "ppl", "ppl_lo", "ppl_hi")
TEXT = (
    "LongPPL (Fang et al., ICLR 2025; PKU-ML/LongPPL) is the perplexity of the key tokens only: those that an "
    "evaluator predicts more than alpha nats better from the whole context than from a truncated one and, with "
    "the whole context, with log-probability above beta (the source's alpha 2, beta -2 by default; the truncated "
    "context min(4096, a quarter of the evaluator's trained context), sliding by a quarter of it). The evaluator "
    "is each cell's own model and rope unless the spec's evaluator_rope names one for them all. A cell scores "
    "its documents' first L - 1 tokens (the evaluator, with BOS, reads L): LongPPL = exp(LongCE), LongCE the mean "
    "NLL over the key tokens of all its documents; beside it, dashed, the perplexity of every token of the same "
    "text. Intervals: the 95 % percentile bootstrap of ropekit.stats' unit rule (documents from 16 on, else each "
    "document's 64-prediction blocks, a block's key tokens with it); none from fewer than 16 units."
)


def split(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """results.csv's rows: those of other tasks, and LongPPL's."""
    return [r for r in rows if r.get("task") != TASK], [r for r in rows if r.get("task") == TASK]


def frame_of(rows: list[dict[str, str]], spec: dict[str, Any]) -> pd.DataFrame:
    """LongPPL's rows with their numbers parsed, and a pending row for every cell the spec plans without one
    (``load_sweep`` puts them in the spec's order)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["model", "rope", "layer_mix", "length", "status", "detail", *NUMBERS])
    if TASK in spec.get("tasks", []):
        have = {(r["model"], r["rope"], r["layer_mix"], int(r["length"])) for r in rows}
        pending = [
            {"model": m, "rope": r, "layer_mix": x, "length": n, "status": "pending"}
            for m in spec.get("models", [])
            for x in spec.get("layer_mixes", [])
            for r in spec.get("ropes", {})
            for n in spec.get("lengths", [])
            if (m, r, x, n) not in have
        ]
        frame = pd.concat([frame, pd.DataFrame(pending)], ignore_index=True) if pending else frame
    frame["length"] = frame["length"].astype(int)
    for column in NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame.loc[frame["status"] != "ok", list(NUMBERS)] = float("nan")
    return frame


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """A row per cell: LongPPL [interval], LongCE, key tokens, perplexity [interval]; else its status."""
    import pandas as pd

    def bounded(value, lo, hi) -> str:
        if pd.isna(value):
            return "-"
        return f"{value:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) and pd.notna(hi) else "")

    out = []
    for _, r in frame.iterrows():
        row = {"model": r["model"], "layer_mix": r["layer_mix"], "rope": r["rope"], "length": r["length"]}
        if r["status"] != "ok":
            out.append({**row, "LongPPL [95 %]": r["status"], "LongCE": "", "key tokens": "", "ppl [95 %]": ""})
            continue
        out.append(
            {
                **row,
                "LongPPL [95 %]": bounded(r["longppl"], r["longppl_lo"], r["longppl_hi"]),
                "LongCE": "-" if pd.isna(r["longce"]) else f"{r['longce']:.4f}",
                "key tokens": f"{int(r['n_key_tokens'])}",
                "ppl [95 %]": bounded(r["ppl"], r["ppl_lo"], r["ppl_hi"]),
            }
        )
    return pd.DataFrame(out)


def plot(frame: pd.DataFrame, *, colors: dict | None = None) -> Figure:
    """LongPPL (solid, with its interval as error bars) and perplexity (dashed) against length, a panel per
    model, a line per rope (its colour from ``colors``, the report's) and layer mix (when there are several)."""
    from .curves import figure_grid
    from .style import series_styles

    several = frame["layer_mix"].nunique() > 1
    frame = frame.assign(
        line=[f"{r}, {m}" if several else r for r, m in zip(frame["rope"], frame["layer_mix"], strict=True)]
    )
    styles = series_styles(frame["line"])
    panels = list(frame.groupby("model", sort=False))
    fig, axes = figure_grid(len(panels), sharey=False)
    for ax, (model, rows) in zip(axes, panels, strict=False):
        for line, cells in rows[rows["status"] == "ok"].groupby("line", sort=False):
            rope = cells["rope"].iloc[0]
            style = (colors or {}).get(rope) if not several else None
            color = (style or styles[line]).color
            x, y = cells["length"].to_numpy(), cells["longppl"].to_numpy(float)
            lo, hi = cells["longppl_lo"].to_numpy(float), cells["longppl_hi"].to_numpy(float)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], color=color, marker="o", capsize=3, label=f"{line}: LongPPL")
            ax.plot(x, cells["ppl"].to_numpy(float), color=color, linestyle="--", alpha=0.7, label=f"{line}: ppl")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("LongPPL (solid), perplexity (dashed)")
        ax.set_title(model.rstrip("/").rsplit("/", 1)[-1], fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("LongPPL and perplexity vs context length")
    return fig


def printed(frame: pd.DataFrame, width: int) -> list[str]:
    """The terminal's blocks, one per (model, layer mix): LongPPL [interval] per length (rows) and rope
    (columns), the key tokens and the plain perplexity after them; a cell's status where it has none."""
    blocks = []
    rows = table(frame)
    for (model, mix), block in rows.groupby(["model", "layer_mix"], sort=False):
        cells = block.assign(
            cell=lambda b: b["LongPPL [95 %]"] + " (" + b["key tokens"] + " keys; ppl " + b["ppl [95 %]"] + ")"
        )
        cells["cell"] = cells["cell"].where(cells["LongCE"] != "", cells["LongPPL [95 %]"])
        pivot = cells.pivot(index="length", columns="rope", values="cell")[list(dict.fromkeys(block["rope"]))]
        text = f"{model}, layer mix {mix}: LongPPL [95 % interval] (key tokens; plain perplexity [95 %])\n"
        blocks.append(text + pivot.to_string(line_width=width - 1))
    return blocks
