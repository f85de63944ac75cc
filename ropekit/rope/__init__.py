"""RoPE core: parse configs into specs, compute frequencies per type, apply the rotation.

Each rope type is one record in the registry (``registry.py``; ropekit's own in ``builtin.py``:
the six, the frequency-only methods beyond them in ``methods.py``); those that act in attention,
and the query scalings (log-n, Llama 4's NoPE temperature), give their positions in
``positions.py``; a rope argument (preset, dict, config path) is resolved against a model in
``resolve.py``.

Names load on first use (``ropekit/lazy.py``): parsing a spec needs no torch, computing frequencies does.
"""

from ..lazy import exports

__all__ = [
    "LAYER_TYPES",
    "LAYOUTS",
    "NATIVE",
    "Default",
    "Dynamic",
    "DynamicYarn",
    "FarPositions",
    "FarTables",
    "Linear",
    "Llama3",
    "LongRope",
    "NopeTemperature",
    "Ntk",
    "NtkByParts",
    "NtkMixed",
    "RopeConfigError",
    "RopeSpec",
    "Resonance",
    "RopeType",
    "Yarn",
    "apply_rotary",
    "config_rope_settings",
    "describe_positions",
    "far_tables",
    "frequency_table",
    "get_rope",
    "interleaved_to_half",
    "load_config_dict",
    "model_ropes",
    "named_ropes",
    "parse_rope",
    "position_key",
    "position_table",
    "preset",
    "query_scale",
    "register_rope",
    "rope_argument",
    "rope_frequencies",
    "rope_from_config",
    "rope_name",
    "rope_table",
    "rope_types",
    "spec_frequencies",
    "yarn_mscale",
    "yarn_ramp_bounds",
]

__getattr__, __dir__ = exports(
    __name__,
    {
        ".config": (
            "LAYER_TYPES",
            "Default",
            "Dynamic",
            "Linear",
            "Llama3",
            "LongRope",
            "RopeConfigError",
            "RopeSpec",
            "Yarn",
            "load_config_dict",
            "parse_rope",
            "rope_from_config",
        ),
        ".frequencies": (
            "rope_frequencies",
            "spec_frequencies",
            "yarn_mscale",
            "yarn_ramp_bounds",
        ),
        ".methods": (
            "DynamicYarn",
            "Ntk",
            "NtkByParts",
            "NtkMixed",
            "Resonance",
        ),
        ".positions": (
            "FarPositions",
            "NopeTemperature",
            "describe_positions",
            "position_key",
            "query_scale",
        ),
        ".presets": ("preset",),
        ".registry": (
            "RopeType",
            "get_rope",
            "register_rope",
            "rope_types",
        ),
        ".resolve": (
            "NATIVE",
            "config_rope_settings",
            "model_ropes",
            "named_ropes",
            "rope_argument",
            "rope_name",
        ),
        ".rotary": (
            "LAYOUTS",
            "FarTables",
            "apply_rotary",
            "far_tables",
            "interleaved_to_half",
            "position_table",
            "rope_table",
        ),
        ".table": ("frequency_table",),
    },
)
