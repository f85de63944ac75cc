"""The rope types: one record each, in one registry that code outside ropekit adds to.

A record holds everything a type is: its parameter class (a frozen dataclass whose fields are the
type's upstream keys), its frequency function ``(spec, seq_len) -> (inv_freq, attention_scale)``,
its preset (the ``rope_scaling`` dict that stretches a rope's trained context by a factor), the
checks that need the head geometry and, for a type that acts in attention (ReRoPE, Self-Extend:
``ropekit/rope/positions.py``), where it rotates queries and keys far apart. ropekit's six types are registered by
``ropekit/rope/builtin.py``; a notebook adds one with :func:`register_rope`, an installed package
through the ``ropekit.ropes`` entry-point group (each entry point names a :class:`RopeType`), so
``ropekit inspect`` and ``ropekit sweep`` find it without an import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..plugins import Registry

if TYPE_CHECKING:
    import torch

    from .config import RopeSpec
    from .positions import FarPositions

ENTRY_POINTS = "ropekit.ropes"

FrequencyFn = Callable[["RopeSpec", "int | None"], "tuple[torch.Tensor, float]"]
PresetFn = Callable[["RopeSpec", Any], "dict[str, Any]"]
ArgumentsFn = Callable[[str], Any]
AttentionFn = Callable[["RopeSpec", int], "FarPositions"]


@dataclass(frozen=True)
class RopeType:
    """One rope type.

    ``preset(spec, factor)`` returns the rope dict (upstream keys, ``rope_type`` included) that
    stretches ``spec``'s trained context (``spec.original_length``) by ``factor``; ``factor`` is
    None when the user gave none (the type picks its default, or refuses). ``factor`` is the text
    after ``TYPE:`` as ``arguments`` reads it: a number unless the type says otherwise (``rerope:W``
    a window, ``self_extend:G,W`` two integers); ``arguments`` raises ``ValueError`` naming the
    form it expects. ``check(spec)`` raises ``RopeConfigError`` for a head geometry the type cannot
    rotate. ``attention(spec, length)``, for a type that acts in attention, gives its far region at a
    length (:class:`ropekit.rope.positions.FarPositions`: a window, and the positions queries and keys
    are rotated at when they are at least that far apart); None for a frequency-only type.
    ``upstream``: transformers has the type too, so ``ropekit export`` may write it into a config.
    ``whole_head``: the type rotates the whole head and its ``partial_rotary_factor`` says which pairs
    turn (the rest get frequency 0: Gemma 4's p-RoPE, ``proportional``), instead of which channels are
    rotated at all (``rotary_dim = head_dim * partial_rotary_factor``, the others left as they are).
    """

    name: str
    params: type
    frequencies: FrequencyFn
    preset: PresetFn | None = None
    check: Callable[[RopeSpec], None] | None = None
    arguments: ArgumentsFn | None = None
    attention: AttentionFn | None = None
    upstream: bool = False  # transformers' ROPE_INIT_FUNCTIONS has it: configs outside ropekit may carry it
    whole_head: bool = False  # partial_rotary_factor zeroes frequencies over the whole head (p-RoPE)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"rope type name {self.name!r} is not allowed; expected an identifier such as 'my_rope'")
        if not (dataclasses.is_dataclass(self.params) and isinstance(self.params, type)):
            raise ValueError(f"rope type {self.name!r}: params must be a dataclass whose fields are its keys")
        if not hasattr(self.params, "rope_type"):  # specs of it know their type
            self.params.rope_type = self.name
        if getattr(self.params, "rope_type", self.name) != self.name:
            raise ValueError(
                f"rope type {self.name!r}: its params class says rope_type={self.params.rope_type!r}; make them agree"
            )
        if not callable(self.frequencies):
            raise ValueError(f"rope type {self.name!r}: frequencies must be a function (spec, seq_len)")
        if self.attention is not None and not callable(self.attention):
            raise ValueError(f"rope type {self.name!r}: attention must be a function (spec, length)")


ROPES: Registry[RopeType] = Registry("rope type", RopeType, ENTRY_POINTS, ["ropekit.rope.builtin"])


def register_rope(
    name: str | RopeType,
    params: type | None = None,
    frequencies: FrequencyFn | None = None,
    *,
    preset: PresetFn | None = None,
    check: Callable[[RopeSpec], None] | None = None,
    arguments: ArgumentsFn | None = None,
    attention: AttentionFn | None = None,
    replace: bool = False,
) -> RopeType:
    """Add a rope type (a :class:`RopeType`, or its fields) to the registry and return its record.

    The parameter class gets ``rope_type = name`` when it has none, so specs of it know their
    type. A name already registered is refused unless ``replace=True``.
    """
    record = (
        name if isinstance(name, RopeType) else RopeType(name, params, frequencies, preset, check, arguments, attention)
    )
    return ROPES.register(record, replace=replace)


def rope_types() -> dict[str, RopeType]:
    """Every registered rope type, installed plugins included, by name (ropekit's six first)."""
    return ROPES.all()


def get_rope(name: str) -> RopeType | None:
    """The record of a rope type, looking in installed plugins when it is not registered yet."""
    return ROPES.get(name)
