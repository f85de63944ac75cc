"""Retrieval at length (passkey, needle): accuracy and the answer's log-probability against context
length, and accuracy by needle depth, from a sweep's retrieval rows (``Sweep.retrieval``) and trials
(``Sweep.trials``).

A trial is ``exact`` when greedy decoding would produce exactly the answer's tokens: the answer is
scored teacher-forced in one forward pass (``ropekit.score_answer``), and each answer token is the
argmax given the prompt and the answer tokens before it. A row of results.csv is one (model, layer
mix, rope, task, length, depth) cell of ``n_trials`` trials; ``depth`` is the percent of the haystack
before the needle (0: at its start, 100: at its end).

A task that places no needle at a depth (RULER's, scored on the text greedy decoding writes) has one
cell per length, whose accuracy and interval are its row's (``ropekit/sweep/trials.py``). Pooled over
depths (:func:`pool_depths`), a length's accuracy is the sum of exact answers over the
sum of trials of its scored depths (exact answers recovered as round(accuracy * n_trials)), with the
Wilson score interval of that proportion (Wilson 1927; it stays inside [0, 1] and is not degenerate at
0 or all correct, where the normal interval is), the trials taken as independent. The mean answer
log-probability (nats) is the trials' mean, with a percentile bootstrap over the trials of trials.csv
(``stats.N`` resamples drawn as ``ropekit.stats`` draws units, seeded by the pooled cells' keys) and,
by ``stats.MIN_UNITS``, none from fewer than 16 trials: a t interval would assume the trials' mean is
nearly normal, which log-probabilities bounded above by 0 and spread over orders of magnitude when a
rope breaks are not, at 5 to 55 trials. A depth that failed or is pending is left out of its length's
pool (the table counts the depths pooled); a length with no depth scored is a labelled cross.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import stats
from .curves import draw_panel, figure_grid, finish_figure, model_label, tokens_label
from .results import PENDING
from .style import rope_colors

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .curves import Styles

GROUP = ["model", "layer_mix", "task", "rope", "length"]  # a pooled point: all depths of one length
POOLED = [*GROUP, "depths", "planned", "n_trials", "n_exact", "accuracy", "accuracy_lo", "accuracy_hi"]
POOLED += ["mean_logprob", "mean_logprob_lo", "mean_logprob_hi", "interval", "status", "trained_context"]


def unplaced(frame: pd.DataFrame) -> set[str]:
    """The tasks whose cells have no depth: RULER's, which place their needles at random and are scored on
    what the model writes (``ropekit/tasks/ruler.py``)."""
    return set(frame.loc[frame["depth"].isna(), "task"])


def wilson(k: int, n: int, level: float = stats.LEVEL) -> tuple[float, float]:
    """``stats.wilson`` (the sweep's rows use it), NaN for no trials."""
    return (math.nan, math.nan) if n == 0 else stats.wilson(k, n, level)


def pool_depths(
    frame: pd.DataFrame, trials: pd.DataFrame | None = None, *, n: int = stats.N, level: float = stats.LEVEL
) -> pd.DataFrame:
    """One row per (model, layer_mix, task, rope, length): its scored ``depths`` of the ``planned``,
    trials, exact answers, accuracy with its Wilson interval, mean log-probability with its bootstrap
    interval (from ``trials``, :attr:`Sweep.trials`) and the ``interval``'s method (``none: ...`` says
    why there is none), ``status`` ``ok`` when a depth is scored, else the first failure, else pending."""
    import numpy as np
    import pandas as pd

    rows = []
    for key, part in frame.groupby(GROUP, sort=False):
        ok = part[part["status"] == "ok"]
        failed = part.loc[~part["status"].isin(["ok", PENDING]), "status"]
        n_trials = int(ok["n_trials"].sum())
        n_exact = int(np.round(ok["accuracy"] * ok["n_trials"]).sum())
        accuracy = (n_exact / n_trials, *wilson(n_exact, n_trials, level)) if n_trials else (math.nan,) * 3
        if len(ok) == 1 and ok["depth"].isna().all():  # a task of no depth (RULER's): its cell's score as it is
            accuracy = tuple(float(ok[column].iloc[0]) for column in ("accuracy", "accuracy_lo", "accuracy_hi"))
            n_exact = _full_scores(ok, trials, n_exact)
        lo, hi, method = _logprob_interval(ok, trials, n_trials, n, level)
        trained = part["trained_context"].dropna() if "trained_context" in part else ()
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "depths": len(ok),
                "planned": len(part),
                "n_trials": n_trials,
                "n_exact": n_exact,
                **dict(zip(("accuracy", "accuracy_lo", "accuracy_hi"), accuracy, strict=True)),
                "mean_logprob": float((ok["mean_logprob"] * ok["n_trials"]).sum() / n_trials) if n_trials else math.nan,
                "mean_logprob_lo": lo,
                "mean_logprob_hi": hi,
                "interval": method,
                "status": "ok" if len(ok) else failed.iloc[0] if len(failed) else PENDING,
                "trained_context": int(trained.iloc[0]) if len(trained) else None,
            }
        )
    pooled = pd.DataFrame(rows, columns=POOLED)
    pooled["trained_context"] = pooled["trained_context"].astype("Int64")
    return pooled


def _ok_trials(trials: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    """The trials of the cells ``ok`` that were scored (trials.csv from before failed trials has no status)."""
    mine = trials[trials["cell"].isin(set(ok["cell"]))]
    return mine[mine["status"] == "ok"] if "status" in mine else mine


def _full_scores(ok: pd.DataFrame, trials: pd.DataFrame | None, rounded: int) -> int:
    """A RULER cell's trials that scored 1 (every reference value in the output) as trials.csv's ``match``
    holds them; ``rounded`` (round(accuracy x n_trials)) where it holds none: partial credit makes that
    a count of no trials (two trials of 0.6 round to 1)."""
    import pandas as pd

    if trials is None or "match" not in trials:
        return rounded
    match = pd.to_numeric(_ok_trials(trials, ok)["match"], errors="coerce")
    return int((match == 1).sum()) if len(match) and match.notna().all() else rounded


def _logprob_interval(ok: pd.DataFrame, trials: pd.DataFrame | None, expected: int, n: int, level: float):
    """(lo, hi, method): the percentile bootstrap of the mean over the trials of the cells ``ok``."""
    import numpy as np

    if not expected:
        return math.nan, math.nan, ""
    if trials is None:
        return math.nan, math.nan, "none: no trials.csv"
    values = _ok_trials(trials, ok).sort_values(["cell", "trial"])["logprob"].to_numpy(float)
    if len(values) != expected:
        return math.nan, math.nan, f"none: trials.csv holds {len(values)} of its {expected} trials"
    if len(values) < stats.MIN_UNITS:
        return math.nan, math.nan, f"none: {len(values)} trials, fewer than {stats.MIN_UNITS}"
    seed = stats.seed_of("logprob " + " ".join(sorted(ok["cell"])))
    draws = stats.Units("trials", (values,), (np.ones(len(values)),)).draws(seed, n)[0]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values[draws].mean(1), [tail, 100 - tail])
    return float(lo), float(hi), f"bootstrap-trials-{n}"


def plot_accuracy(
    frame: pd.DataFrame,
    *,
    colors: Styles | None = None,
    title: str | None = None,
    level: float = stats.LEVEL,
    scores: dict[str, str] | None = None,
) -> Figure:
    """Accuracy (exact answers, pooled over depths) vs context length, one line per rope with its
    Wilson interval, one panel per (model, layer mix, task); the trained context dotted. A task scored on
    what the model writes (RULER's: no depth) plots its mean score, named by ``scores`` (meta.json's
    ``retrieval.scores``; RULER's string_match_all where it has none)."""
    pooled = pool_depths(frame, level=level)
    title = title or "Retrieval accuracy vs context length"
    return _pooled_figure(frame, pooled, "accuracy", colors, title, scores or {})


def plot_logprob(
    frame: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    *,
    colors: Styles | None = None,
    title: str | None = None,
    n: int = stats.N,
    level: float = stats.LEVEL,
) -> Figure:
    """The answer's mean log-probability (nats, pooled over depths) vs context length, one line per rope
    with the percentile bootstrap interval over the trials of ``trials`` (trials.csv; none from fewer
    than ``stats.MIN_UNITS`` trials, none without trials.csv), one panel per (model, layer mix, task)."""
    pooled = pool_depths(frame, trials, n=n, level=level)
    return _pooled_figure(frame, pooled, "mean_logprob", colors, title or "Answer log-probability vs context length")


def _require_rows(frame: pd.DataFrame) -> None:
    if frame.empty:
        raise ValueError(
            "no retrieval rows to plot: the sweep ran no passkey or needle task (Sweep.retrieval is empty)"
        )


def _pooled_figure(frame, pooled, value: str, colors, title: str, scores: dict[str, str] | None = None) -> Figure:
    _require_rows(frame)
    colors = colors or rope_colors(frame["rope"])
    panels = list(pooled.groupby(["model", "layer_mix", "task"], sort=False))
    fig, axes = figure_grid(len(panels), sharey=True)
    ruler = unplaced(frame)
    for ax, ((model, mix, task), rows) in zip(axes, panels, strict=False):
        draw_panel(ax, rows, "rope", None, colors, value=value)
        ax.set_title(f"{model_label(model)}, layer mix {mix}: {task}")
        if value == "accuracy":
            ax.set_ylim(-0.04, 1.04)
            score = (scores or {}).get(task, "string_match_all")
            ax.set_ylabel(
                f"score ({score}, mean over trials)" if task in ruler else "accuracy (exact, pooled over depths)"
            )
        else:
            ax.set_ylabel("answer log-probability (nats)")
    finish_figure(fig, axes, frame, title)
    return fig


def plot_depth_heatmap(frame: pd.DataFrame, *, title: str | None = None, cmap: str = "viridis") -> Figure:
    """Accuracy by needle depth (rows, % of the haystack before the needle) and context length
    (columns), one panel per (model, layer mix, task, rope), each cell annotated with its accuracy;
    a cell without one is grey, labelled ``pending`` or, hatched, with its failure (``OOM``). Where the model's
    trained context falls between two lengths a dotted line divides them."""
    from matplotlib import colormaps

    _require_rows(frame)
    palette = colormaps[cmap].with_extremes(bad="0.88")
    panels = list(frame.groupby(["model", "layer_mix", "task", "rope"], sort=False))
    fig, axes = figure_grid(len(panels))
    image = None
    for ax, ((model, mix, task, rope), rows) in zip(axes, panels, strict=False):
        image = _heatmap(ax, rows, palette)
        ax.set_title(f"{model_label(model)}, {mix}, {task}: rope {rope}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy (exact)")
    title = title or "Retrieval accuracy by needle depth and context length"
    pending = int((frame["status"] == PENDING).sum())
    fig.suptitle(title + (f"  ({pending} of {len(frame)} cells pending)" if pending else ""))
    return fig


def _heatmap(ax: Axes, rows: pd.DataFrame, palette):
    import numpy as np
    from matplotlib.patches import Rectangle

    depths, lengths = sorted(set(rows["depth"])), sorted(set(rows["length"]))
    values = np.full((len(depths), len(lengths)), np.nan)
    for cell in rows.itertuples(index=False):
        i, j = depths.index(cell.depth), lengths.index(cell.length)
        if cell.status == "ok":
            values[i, j] = cell.accuracy
            text, gid, color = f"{cell.accuracy:.2f}", "value", "white" if cell.accuracy < 0.5 else "black"
        elif cell.status == PENDING:
            text, gid, color = PENDING, PENDING, "0.4"
        else:  # hatched, so a failure stands out from the (grey) cells still to run
            text, gid, color = cell.status.upper(), "failed", "0.1"
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.6", linewidth=0))
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color, gid=gid)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=palette, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [tokens_label(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth (% of haystack)")
    trained = rows["trained_context"].dropna() if "trained_context" in rows else ()
    within = sum(n <= trained.iloc[0] for n in lengths) if len(trained) else 0
    if 0 < within < len(lengths):  # between the last length trained on and the first past it
        ax.axvline(within - 0.5, color="0.3", linestyle=":", linewidth=1.5, gid="trained")
        ax.annotate(
            f"trained {tokens_label(trained.iloc[0])}",
            (within - 0.5, 0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=7,
            color="0.2",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0},
        )
    return image


def retrieval_table(
    frame: pd.DataFrame, trials: pd.DataFrame | None = None, *, n: int = stats.N, level: float = stats.LEVEL
) -> pd.DataFrame:
    """Per (model, layer_mix, task, rope, length), pooled over depths: the depths pooled, exact answers
    of trials, accuracy with its Wilson interval and the mean answer log-probability with its bootstrap
    interval, as text; a length without a scored depth shows its status (``OOM``, ``PENDING``)."""
    import pandas as pd

    pooled = pool_depths(frame, trials, n=n, level=level)
    percent = f"{level * 100:g} %"

    def shown(value, lo, hi, digits):
        if not math.isfinite(value):
            return "–"
        bounds = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        return f"{value:.{digits}f}{bounds}"

    rows = []
    for r in pooled.itertuples(index=False):
        scored = r.status == "ok"
        rows.append(
            {
                **{c: getattr(r, c) for c in GROUP},
                "depths": r.depths if r.depths == r.planned else f"{r.depths} of {r.planned}",
                "exact / trials": f"{r.n_exact} / {r.n_trials}" if scored else r.status.upper(),
                f"accuracy [Wilson {percent}]": shown(r.accuracy, r.accuracy_lo, r.accuracy_hi, 2) if scored else "–",
                f"mean logprob, nats [{percent}]": (
                    shown(r.mean_logprob, r.mean_logprob_lo, r.mean_logprob_hi, 2) if scored else "–"
                ),
            }
        )
    return pd.DataFrame(rows).astype(str) if rows else pd.DataFrame(columns=GROUP)
