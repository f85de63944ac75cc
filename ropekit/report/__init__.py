"""Figures and reports built from ropekit's tables."""

from .frequencies import plot_frequencies
from .style import rope_colors

__all__ = ["plot_frequencies", "rope_colors"]
