"""ropekit: long-context RoPE scaling, measured against transformers."""

from .rope import RopeConfigError, RopeSpec, parse_rope, rope_frequencies, rope_from_config

__version__ = "0.1.0"

__all__ = ["RopeConfigError", "RopeSpec", "__version__", "parse_rope", "rope_frequencies", "rope_from_config"]
