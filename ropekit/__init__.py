"""ropekit: long-context RoPE scaling, measured against transformers.

The root imports nothing until a name is read (``ropekit/lazy.py``), so ``import ropekit.stats``,
``ropekit status`` and ``ropekit report`` never load torch.
"""

from .lazy import exports

__version__ = "0.1.0"

__all__ = [
    "AnswerScore",
    "CheckpointError",
    "ModelConfigError",
    "RopeConfigError",
    "RopeSpec",
    "RopeType",
    "__version__",
    "load_model",
    "parse_rope",
    "register_rope",
    "rope_frequencies",
    "rope_from_config",
    "score_answer",
    "token_nll",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        ".eval": ("AnswerScore", "score_answer", "token_nll"),
        ".models": ("CheckpointError", "ModelConfigError", "load_model"),
        ".rope": (
            "RopeConfigError",
            "RopeSpec",
            "RopeType",
            "parse_rope",
            "register_rope",
            "rope_frequencies",
            "rope_from_config",
        ),
    },
)
