"""What each rope config does to each frequency band, as a figure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .curves import WIDTH
from .style import plain_log_ticks, rope_colors

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def plot_frequencies(
    table: pd.DataFrame,
    *,
    original_length: int | None = None,
    title: str | None = None,
    colors: Mapping[str, tuple[str, str]] | None = None,
) -> Figure:
    """Wavelength and scale against default per rotary dimension, one line per rope.

    ``table`` is :func:`ropekit.rope.frequency_table`'s output. Left: wavelength in tokens (log2),
    with the trained context marked: bands whose wavelength exceeds it never completed a turn in
    training. Right: how much each band is stretched relative to default (1 = untouched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    ax_wave, ax_scale = fig.subplots(1, 2)
    styles = colors or rope_colors(table["rope"])
    for name, rows in table.groupby("rope", sort=False):
        color, linestyle, _ = styles[name]
        label = f"{name} (attn x{rows['attention_scale'].iloc[0]:.3g})"
        ax_wave.plot(rows["dim"], rows["wavelength"], color=color, linestyle=linestyle, marker=".", label=label)
        ax_scale.plot(rows["dim"], rows["scale"], color=color, linestyle=linestyle, marker=".", label=label)
    ax_wave.set_yscale("log", base=2)
    ax_wave.set(
        xlabel="rotary pair index (high → low frequency)",
        ylabel="wavelength (tokens)",
        title="Wavelength per dimension",
    )
    if original_length:
        ax_wave.axhline(original_length, color="0.5", linestyle=":", linewidth=1)
        ax_wave.annotate(
            f"trained context {original_length:,}",
            (0, original_length),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=8,
            color="0.35",
        )
    ax_scale.set_yscale("log", base=2)
    ax_scale.set(
        xlabel="rotary pair index (high → low frequency)",
        ylabel="wavelength / default wavelength",
        title="Stretch against default",
    )
    plain_log_ticks(ax_scale)
    for ax in (ax_wave, ax_scale):
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax_wave.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
