"""ropekit's rope types, each registered as one record (ropekit/rope/registry.py).

The seven of transformers first: the parameter class (config.py), the frequency function
(frequencies.py), the preset (presets.py) and the geometry check (config.py). Then the
frequency-only methods beyond them (methods.py), and those that act in attention (rerope,
leaky_rerope, self_extend: positions.py). A new type, here or in a plugin, is one more record.
"""

from __future__ import annotations

from . import config, frequencies, methods, positions, presets
from .registry import RopeType, register_rope

UPSTREAM = {"upstream": True}  # transformers' seven (ROPE_INIT_FUNCTIONS)
BUILTIN = (
    RopeType("default", config.Default, frequencies.default, presets.default_preset, **UPSTREAM),
    RopeType("linear", config.Linear, frequencies.linear, presets.linear_preset, **UPSTREAM),
    RopeType(
        "dynamic", config.Dynamic, frequencies.dynamic, presets.dynamic_preset, config.check_theta_exponent, **UPSTREAM
    ),
    RopeType("yarn", config.Yarn, frequencies.yarn, presets.yarn_preset, **UPSTREAM),
    RopeType(
        "longrope", config.LongRope, frequencies.longrope, presets.longrope_preset, config.check_longrope, **UPSTREAM
    ),
    RopeType("llama3", config.Llama3, frequencies.llama3, presets.llama3_preset, **UPSTREAM),
    RopeType(
        "proportional",
        config.Proportional,
        frequencies.proportional,
        presets.proportional_preset,
        config.check_proportional,
        whole_head=True,
        **UPSTREAM,
    ),
)
METHODS = (
    RopeType("ntk", methods.Ntk, methods.ntk, methods.ntk_preset, config.check_theta_exponent),
    RopeType("dynamic_yarn", methods.DynamicYarn, methods.dynamic_yarn, methods.dynamic_yarn_preset),
    RopeType(
        "ntk_by_parts",
        methods.NtkByParts,
        methods.ntk_by_parts,
        methods.ntk_by_parts_preset,
        config.check_theta_exponent,
    ),
    RopeType(
        "resonance",
        methods.Resonance,
        methods.resonance,
        methods.resonance_preset,
        methods.check_resonance,
        methods.resonance_arguments,
    ),
    RopeType("ntk_mixed", methods.NtkMixed, methods.ntk_mixed, methods.ntk_mixed_preset),
)
for record in (*BUILTIN, *METHODS, *positions.RECORDS):
    register_rope(record)
