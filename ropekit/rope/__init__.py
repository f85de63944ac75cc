"""RoPE core: parse configs into specs, compute frequencies per type, apply the rotation."""

from .config import (
    LAYER_TYPES,
    SCALINGS,
    Default,
    Dynamic,
    Linear,
    Llama3,
    LongRope,
    RopeConfigError,
    RopeSpec,
    Yarn,
    load_config_dict,
    parse_rope,
    rope_from_config,
)
from .frequencies import FREQUENCIES, rope_frequencies, spec_frequencies, yarn_mscale, yarn_ramp_bounds
from .presets import named_ropes, preset
from .rotary import LAYOUTS, apply_rotary, interleaved_to_half, rope_table
from .table import frequency_table

__all__ = [
    "FREQUENCIES",
    "LAYER_TYPES",
    "LAYOUTS",
    "SCALINGS",
    "Default",
    "Dynamic",
    "Linear",
    "Llama3",
    "LongRope",
    "RopeConfigError",
    "RopeSpec",
    "Yarn",
    "apply_rotary",
    "frequency_table",
    "interleaved_to_half",
    "load_config_dict",
    "named_ropes",
    "parse_rope",
    "preset",
    "rope_frequencies",
    "rope_from_config",
    "rope_table",
    "spec_frequencies",
    "yarn_mscale",
    "yarn_ramp_bounds",
]
