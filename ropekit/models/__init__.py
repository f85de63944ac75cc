"""Models: checkpoint loading, families, the per-layer plan and the shared decoder."""

from .config import (
    FAMILIES,
    MIX_HELP,
    LayerSpec,
    ModelConfig,
    ModelConfigError,
    checkpoint_config,
    model_config,
    parse_layer_mix,
    pattern_layer_types,
    plan_config,
)
from .decoder import Decoder, sliding_attention
from .load import EMBEDDED, CheckpointError, cache_dir, embedded_path, load_model, read_model_config, reconfigure

__all__ = [
    "EMBEDDED",
    "FAMILIES",
    "MIX_HELP",
    "CheckpointError",
    "Decoder",
    "LayerSpec",
    "ModelConfig",
    "ModelConfigError",
    "checkpoint_config",
    "cache_dir",
    "embedded_path",
    "load_model",
    "model_config",
    "parse_layer_mix",
    "pattern_layer_types",
    "plan_config",
    "read_model_config",
    "reconfigure",
    "sliding_attention",
]
