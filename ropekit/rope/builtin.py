"""ropekit's six rope types, each registered as one record (ropekit/rope/registry.py): the
parameter class (config.py), the frequency function (frequencies.py), the preset (presets.py)
and the geometry check (config.py). A new type, here or in a plugin, is one more record."""

from __future__ import annotations

from . import config, frequencies, presets
from .registry import RopeType, register_rope

BUILTIN = (
    RopeType("default", config.Default, frequencies.default, presets.default_preset),
    RopeType("linear", config.Linear, frequencies.linear, presets.linear_preset),
    RopeType("dynamic", config.Dynamic, frequencies.dynamic, presets.dynamic_preset, config.check_dynamic),
    RopeType("yarn", config.Yarn, frequencies.yarn, presets.yarn_preset),
    RopeType("longrope", config.LongRope, frequencies.longrope, presets.longrope_preset, config.check_longrope),
    RopeType("llama3", config.Llama3, frequencies.llama3, presets.llama3_preset),
)
for record in BUILTIN:
    register_rope(record)
