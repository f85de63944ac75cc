"""Figures and reports built from ropekit's tables.

frame = load_results("experiments/default")      # results.csv + pending cells, tidy
plot_perplexity(frame); plot_relative(frame, "default"); plot_layer_mixes(frame, "native")
plot_frequencies(ropekit.rope.frequency_table(specs, seq_len))
perplexity_table(frame, baseline="default")
write_report("experiments/default")              # report.html, report.md, figures/
"""

from .curves import plot_layer_mixes, plot_perplexity, plot_relative
from .document import FORMATS, Report, write_report
from .frequencies import plot_frequencies
from .results import PENDING, ReportError, Sweep, load_results, load_sweep
from .style import rope_colors, series_styles
from .tables import perplexity_table

__all__ = [
    "FORMATS",
    "PENDING",
    "Report",
    "ReportError",
    "Sweep",
    "load_results",
    "load_sweep",
    "perplexity_table",
    "plot_frequencies",
    "plot_layer_mixes",
    "plot_perplexity",
    "plot_relative",
    "rope_colors",
    "series_styles",
    "write_report",
]
