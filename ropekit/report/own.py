"""The report's section for each task that fills results.csv columns of its own (a task that scores its own
way: LongPPL, a plugin's), shown as the task says in meta.json's ``retrieval.own`` (the sweep writes each
task's ``OwnColumns`` there, ``ropekit/tasks/registry.py``): a table of its figure [interval], the column
beside it [interval] and its other columns, per rope and length, and the figure against length."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def shown_tasks(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each task with columns of its own, and how its section shows them (``OwnColumns.to_dict``), from
    meta.json."""
    return dict((meta.get("retrieval") or {}).get("own") or {})


def numbers(shown: dict[str, Any]) -> list[str]:
    """The columns its section reads: its figure and the column beside it, each with its interval, and the rest."""
    pairs = [c for c in (shown["figure"], shown.get("beside")) if c]
    more = [column for column, _ in shown.get("more", [])]
    return list(dict.fromkeys([c + end for c in pairs for end in ("", "_lo", "_hi")] + more))


def frame_of(task: str, rows: list[dict[str, str]], spec: dict[str, Any], shown: dict[str, Any]) -> pd.DataFrame:
    """The task's rows with their numbers parsed, and a pending row for every cell the spec plans without one
    (``load_sweep`` puts them in the spec's order)."""
    import pandas as pd

    columns = numbers(shown)
    frame = pd.DataFrame(rows, columns=["model", "rope", "layer_mix", "length", "status", "detail", *columns])
    if task in spec.get("tasks", []):
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
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame.loc[frame["status"] != "ok", columns] = float("nan")
    return frame


def _bounded(r, column: str) -> str:
    """A number and its interval, when the task fills one: ``1.23 [1.10, 1.40]``."""
    import pandas as pd

    value = r[column]
    if pd.isna(value):
        return "-"
    lo, hi = r.get(column + "_lo"), r.get(column + "_hi")
    return f"{value:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) and pd.notna(hi) else "")


def head(frame: pd.DataFrame, column: str, label: str) -> str:
    """A column's name in the tables: its label, and ``[95 %]`` where the task fills its interval."""
    bounded = column + "_lo" in frame and frame[column + "_lo"].notna().any()
    return label + (" [95 %]" if bounded else "")


def _plain(value) -> str:
    import pandas as pd

    if pd.isna(value):
        return "-"
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4f}"


def table(frame: pd.DataFrame, shown: dict[str, Any]) -> pd.DataFrame:
    """A row per cell: the figure [interval], the column beside it [interval], the other columns; else its
    status."""
    import pandas as pd

    heads = {shown["figure"]: head(frame, shown["figure"], shown["label"])}
    if shown.get("beside"):
        heads[shown["beside"]] = head(frame, shown["beside"], shown["beside_label"])
    more = dict(shown.get("more", []))  # column -> its name in the table
    out = []
    for _, r in frame.iterrows():
        row = {"model": r["model"], "layer_mix": r["layer_mix"], "rope": r["rope"], "length": r["length"]}
        if r["status"] != "ok":
            out.append(
                {**row, **dict.fromkeys([*heads.values(), *more.values()], ""), heads[shown["figure"]]: r["status"]}
            )
            continue
        cells = {head: _bounded(r, column) for column, head in heads.items()}
        out.append({**row, **cells, **{name: _plain(r[c]) for c, name in more.items()}})
    return pd.DataFrame(out, columns=["model", "layer_mix", "rope", "length", *heads.values(), *more.values()])


def plot(frame: pd.DataFrame, shown: dict[str, Any], *, colors: dict | None = None) -> Figure:
    """The figure (solid, its interval as error bars where it has one) and the column beside it (dashed)
    against length, a panel per model, a line per rope (its colour from ``colors``, the report's) and layer
    mix (when there are several)."""
    import numpy as np

    from .curves import figure_grid, length_axis
    from .style import series_styles

    figure, beside, label = shown["figure"], shown.get("beside"), shown["label"]
    several = frame["layer_mix"].nunique() > 1
    frame = frame.assign(
        line=[f"{r}, {m}" if several else r for r, m in zip(frame["rope"], frame["layer_mix"], strict=True)]
    )
    styles = series_styles(frame["line"])
    panels = list(frame.groupby("model", sort=False))
    fig, axes = figure_grid(len(panels), sharey=False)
    for ax, (model, rows) in zip(axes, panels, strict=False):
        for line, cells in rows[rows["status"] == "ok"].groupby("line", sort=False):
            style = (colors or {}).get(cells["rope"].iloc[0]) if not several else None
            color = (style or styles[line]).color
            x, y = cells["length"].to_numpy(), cells[figure].to_numpy(float)
            if figure + "_lo" in cells:
                lo, hi = cells[figure + "_lo"].to_numpy(float), cells[figure + "_hi"].to_numpy(float)
                yerr = np.nan_to_num([y - lo, hi - y])
                ax.errorbar(x, y, yerr=yerr, color=color, marker="o", capsize=3, label=f"{line}: {label}")
            else:
                ax.plot(x, y, color=color, marker="o", label=f"{line}: {label}")
            if beside:
                named = f"{line}: {shown['beside_label']}"
                ax.plot(x, cells[beside].to_numpy(float), color=color, linestyle="--", alpha=0.7, label=named)
        length_axis(ax, rows["length"])
        if shown.get("log", True):
            ax.set_yscale("log")
        ax.set_ylabel(label + (f" (solid), {shown['beside_label']} (dashed)" if beside else ""))
        ax.set_title(model.rstrip("/").rsplit("/", 1)[-1], fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the panel: no line hidden
    fig.suptitle(f"{label}{' and ' + shown['beside_label'] if beside else ''} vs context length")
    return fig


def printed(frame: pd.DataFrame, shown: dict[str, Any], width: int) -> list[str]:
    """The terminal's blocks, one per (model, layer mix): the figure [interval] per length (rows) and rope
    (columns), the other columns after it; a cell's status where it has none."""
    blocks = []
    rows = table(frame, shown)
    first = head(frame, shown["figure"], shown["label"])
    rest = [c for c in rows.columns[4:] if c != first]
    for (model, mix), block in rows.groupby(["model", "layer_mix"], sort=False):
        ok = block[rest[0]] != "" if rest else block[first] != ""
        after = block[rest].apply(lambda r: "; ".join(f"{c} {v}" for c, v in r.items()), axis=1) if rest else ""
        cell = (block[first] + (" (" + after + ")" if rest else "")).where(ok, block[first])
        pivot = block.assign(cell=cell).pivot(index="length", columns="rope", values="cell")
        pivot = pivot[list(dict.fromkeys(block["rope"]))]
        said = f" ({'; '.join(rest)})" if rest else ""
        text = f"{model}, layer mix {mix}: {first}{said}\n"
        blocks.append(text + pivot.to_string(line_width=width - 1))
    return blocks
