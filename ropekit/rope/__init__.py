"""RoPE core: parse configs into specs, compute frequencies per type, apply the rotation.

Each rope type is one record in the registry (``registry.py``; ropekit's six and the methods beyond
them, ``methods.py``, in ``builtin.py``);
a rope argument (preset, dict, config path) is resolved against a model in ``resolve.py``.
"""

from . import builtin  # noqa: F401  (registers the built-in types)
from .config import (
    LAYER_TYPES,
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
from .frequencies import rope_frequencies, spec_frequencies, yarn_mscale, yarn_ramp_bounds
from .methods import DynamicYarn, Ntk, NtkByParts, NtkMixed, Resonance
from .presets import preset
from .registry import RopeType, get_rope, register_rope, rope_types
from .resolve import NATIVE, config_rope_settings, model_ropes, named_ropes, rope_argument, rope_name
from .rotary import LAYOUTS, apply_rotary, interleaved_to_half, rope_table
from .table import frequency_table

__all__ = [
    "LAYER_TYPES",
    "LAYOUTS",
    "NATIVE",
    "Default",
    "Dynamic",
    "DynamicYarn",
    "Linear",
    "Llama3",
    "LongRope",
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
    "frequency_table",
    "get_rope",
    "interleaved_to_half",
    "load_config_dict",
    "model_ropes",
    "named_ropes",
    "parse_rope",
    "preset",
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
