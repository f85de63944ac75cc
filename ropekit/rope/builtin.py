"""ropekit's rope types, each registered as one record (ropekit/rope/registry.py): the six of
transformers, each with its parameter class (config.py), frequency function (frequencies.py),
preset (presets.py) and geometry check (config.py); and those that act in attention (rerope,
leaky_rerope, self_extend: positions.py). A new type, here or in a plugin, is one more record."""

from __future__ import annotations

from . import config, frequencies, positions, presets
from .registry import RopeType, register_rope

BUILTIN = (
    RopeType("default", config.Default, frequencies.default, presets.default_preset),
    RopeType("linear", config.Linear, frequencies.linear, presets.linear_preset),
    RopeType("dynamic", config.Dynamic, frequencies.dynamic, presets.dynamic_preset, config.check_dynamic),
    RopeType("yarn", config.Yarn, frequencies.yarn, presets.yarn_preset),
    RopeType("longrope", config.LongRope, frequencies.longrope, presets.longrope_preset, config.check_longrope),
    RopeType("llama3", config.Llama3, frequencies.llama3, presets.llama3_preset),
)
for record in (*BUILTIN, *positions.RECORDS):
    register_rope(record)
