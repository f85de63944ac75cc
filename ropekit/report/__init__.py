"""Figures and reports built from ropekit's tables.

frame = load_results("experiments/default")      # results.csv + pending cells, tidy
plot_perplexity(frame); plot_relative(frame, "default"); plot_layer_mixes(frame, "native")
sweep = load_sweep("experiments/default")        # + documents.csv and meta.json
diffs = paired_differences(sweep, "default")     # each rope minus default on the same documents
plot_relative(sweep.results, "default", differences=diffs); distinguishable(diffs)
plot_bits_per_byte(with_bits_per_byte_intervals(sweep))   # models with different tokenizers
plot_frequencies(ropekit.rope.frequency_table(specs, seq_len))
perplexity_table(frame, baseline="default", text=True, differences=diffs)
write_report("experiments/default")              # report.html, report.md, figures/
plot_accuracy(sweep.retrieval); plot_depth_heatmap(sweep.retrieval)   # passkey / needle at length
plot_logprob(sweep.retrieval, sweep.trials); retrieval_table(sweep.retrieval, sweep.trials)
ruler_summary(sweep.retrieval, sweep.trials)        # RULER's average per length, effective length
plot_loss_by_position(sweep.documents)            # modes first and yarn: does distant context help?
"""

from .curves import plot_bits_per_byte, plot_layer_mixes, plot_perplexity, plot_relative
from .document import FORMATS, Report, write_report
from .frequencies import plot_frequencies
from .intervals import Bootstrap, bootstrap_settings, distinguishable, paired_differences, with_bits_per_byte_intervals
from .positions import loss_by_position, plot_loss_by_position
from .results import PENDING, ReportError, Sweep, load_results, load_sweep
from .retrieval import plot_accuracy, plot_depth_heatmap, plot_logprob, pool_depths, retrieval_table, wilson
from .ruler import ruler_summary
from .style import rope_colors, series_styles
from .tables import bits_per_byte_table, perplexity_table

__all__ = [
    "FORMATS",
    "PENDING",
    "Bootstrap",
    "Report",
    "ReportError",
    "Sweep",
    "bits_per_byte_table",
    "bootstrap_settings",
    "distinguishable",
    "load_results",
    "load_sweep",
    "loss_by_position",
    "paired_differences",
    "perplexity_table",
    "plot_accuracy",
    "plot_bits_per_byte",
    "plot_depth_heatmap",
    "plot_frequencies",
    "plot_layer_mixes",
    "plot_logprob",
    "plot_loss_by_position",
    "plot_perplexity",
    "plot_relative",
    "pool_depths",
    "retrieval_table",
    "ruler_summary",
    "rope_colors",
    "series_styles",
    "wilson",
    "with_bits_per_byte_intervals",
    "write_report",
]
