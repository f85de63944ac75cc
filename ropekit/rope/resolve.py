"""A rope argument, read once and resolved against a model: the one meaning of ``--rope``, a sweep
spec's ``[ropes]`` entry, ``ropekit inspect``'s arguments and ``load_model(rope_scaling=...)``.

Forms (on the command line each optionally ``NAME=...``):

* ``TYPE[:FACTOR]``: the type's preset (its registry record), built for each layer type from that
  type's own rope (theta, head, trained length);
* ``native``: the checkpoint's own rope;
* a rope dict (JSON on the command line, a table in TOML), flat or keyed by layer type;
* the path of a model's ``config.json`` (or its folder): that model's rope settings.

Against a model, an override means what the same settings mean to transformers in that model's
config.json: a flat dict applies to every layer type that has a rope, except where the family says
otherwise (Gemma 3: global layers only); a dict keyed by layer type applies exactly per type, and a
type it does not name keeps its own rope. Each layer type keeps its own theta and geometry unless
the dict sets them. NoPE layers stay NoPE under a flat dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..names import ROPE_NAME_HELP, ROPE_NAME_LENGTH, rope_name_problem
from .config import (
    RopeConfigError,
    RopeSpec,
    flat_rope_layer_types,
    load_config_dict,
    parse_rope,
    rope_from_config,
    split_layer_types,
)
from .presets import parse_preset, preset_from_text
from .registry import get_rope

NATIVE = "native"


def rope_argument(text: str) -> tuple[str, str | dict]:
    """A command-line rope ``[NAME=]ROPE`` as (name, rope): the name given, else the naming rule
    :func:`rope_name`; the rope is the parsed object when it is JSON, else the stripped text. A
    ``NAME`` that cannot name a rope (``ropekit/names.py``) is refused, unless the whole text is a
    JSON object or a file that exists."""
    name, sep, value = text.partition("=")
    if not sep or name.lstrip().startswith("{") or _exists(text):
        name, value = "", text
    elif problem := rope_name_problem(name):
        raise RopeConfigError(f"rope {text!r}: {name!r} cannot name a rope ({problem}); a name is {ROPE_NAME_HELP}")
    value = value.strip()
    if value.startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RopeConfigError(f"rope {text!r} is not valid JSON: {err}") from None
    return name or rope_name(value), value


def rope_name(rope: str | Mapping[str, Any]) -> str:
    """The name of an unnamed rope: a preset or ``native`` as typed (``yarn``, ``yarn:4``), a
    config.json path by its model folder, a dict by its type and factor (``yarn:4``; a rope over
    another by both, ``resonance:yarn:4``), a dict keyed by layer type by its global layers' rope."""
    if isinstance(rope, Mapping):
        inner = split_layer_types(rope, "rope")
        if inner is not None:
            rope = inner.get("full_attention") or next((r for r in inner.values() if r), {})
            return rope_name(rope) if rope else "nope"
        rope_type = str(rope.get("rope_type", rope.get("type", "default")))
        if isinstance(rope.get("rope"), Mapping):  # a rope over another (resonance): named as its preset
            return f"{rope_type}:{rope_name(rope['rope'])}"
        factor = rope.get("factor", rope.get("alpha"))  # the number its preset takes (ntk's is alpha)
        suffix = (
            "" if not factor else f":{factor:g}" if isinstance(factor, int | float) else f":{factor}"
        )  # checked later
        return _fit(rope_type + suffix)
    if _is_config_path(rope):
        path = Path(rope)
        folder = path if path.is_dir() else path.parent if path.name == "config.json" else path.with_suffix("")
        return _fit(folder.name)
    return _fit(str(rope))


def _fit(name: str) -> str:
    """A name made from a rope, as a rope's name must read (``ropekit/names.py``): each run of other
    characters one ``-``, at most its length. A rope that does not parse is refused later, as a rope."""
    return re.sub(r"[^\w.:+-]+", "-", name)[:ROPE_NAME_LENGTH] or "-"


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # a NUL, a name too long for the file system
        return False


def _is_config_path(text: str) -> bool:
    """Whether a rope argument names a config.json (or its folder); one that looks like a path
    (a ``/`` or a ``.json`` ending) but does not exist is refused as such."""
    if not ("/" in text or text.endswith(".json")):
        return False
    if not Path(text).exists():
        raise RopeConfigError(f"rope {text!r}: the config file {text} does not exist")
    return True


def config_rope_settings(config: Any) -> dict[str, Any]:
    """A model config's rope as an override: keyed by layer type (each with its theta), or flat
    when every layer type has the same rope."""
    specs = rope_from_config(config)
    settings = {lt: None if spec is None else spec.to_dict() for lt, spec in specs.items()}
    return settings["full_attention"] if len({json.dumps(v) for v in settings.values()}) == 1 else settings


def model_ropes(config: Any, rope: str | Mapping[str, Any] | None = None) -> dict[str, RopeSpec | None]:
    """The rope of each layer type of a model config (``full_attention``, ``sliding_attention``;
    None = NoPE) under an optional override ``rope`` in any of the module's forms."""
    cfg = load_config_dict(config)
    native = rope_from_config(cfg)
    if rope is None or rope == NATIVE:
        return native
    flat_types = flat_rope_layer_types(cfg.get("model_type"))
    if isinstance(rope, str):
        if _is_config_path(rope):
            rope = config_rope_settings(rope)
        else:
            rope_type, factor = parse_preset(rope)
            record = get_rope(rope_type)
            rope = {lt: record.preset(native[lt], factor) for lt in flat_types if native[lt] is not None}
    if not isinstance(rope, Mapping):
        raise RopeConfigError(
            f"rope_scaling={rope!r} is not allowed; expected a dict like {{'rope_type': 'yarn', 'factor': 2.0}}, "
            "TYPE[:FACTOR], 'native' or a config.json path"
        )
    per_type = split_layer_types(rope, "rope_scaling")
    where = "rope_scaling[{!r}]" if per_type is not None else "rope_scaling"
    if per_type is None:
        per_type = {lt: rope for lt in flat_types if native[lt] is not None}
    out = dict(native)
    for layer_type, value in per_type.items():
        if value is None:
            out[layer_type] = None  # NoPE, asked for by name
            continue
        base = native[layer_type] or next((s for s in native.values() if s is not None), None)
        if base is None:
            raise RopeConfigError(f"{where.format(layer_type)}: this model has no rope to take a head geometry from")
        out[layer_type] = parse_rope(
            value,
            head_dim=base.head_dim,
            rope_theta=base.rope_theta,
            max_position_embeddings=base.max_position_embeddings,
            # p-RoPE's partial_rotary_factor says which of the whole head's frequencies turn, not how much of the
            # head turns (Gemma 4's global layers): a rope in its place turns the whole head unless it says so
            partial_rotary_factor=1.0 if get_rope(base.rope_type).whole_head else base.partial_rotary_factor,
            where=where.format(layer_type),
        )
    return out


def named_ropes(
    text: str,
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    partial_rotary_factor: float = 1.0,
) -> dict[str, RopeSpec]:
    """One ``ropekit inspect`` argument into named specs for the given head geometry; a config.json
    path gives that model's own rope with its own geometry, one entry per layer type when they
    differ (``NAME/sliding_attention``)."""
    name, value = rope_argument(text)
    geometry = {
        "head_dim": head_dim,
        "rope_theta": rope_theta,
        "max_position_embeddings": max_position_embeddings,
        "partial_rotary_factor": partial_rotary_factor,
    }
    if isinstance(value, dict):
        return {name: parse_rope(value, **geometry)}
    if _is_config_path(value) or Path(value).name == "config.json":
        specs = {lt: s for lt, s in rope_from_config(value).items() if s is not None}
        if len(set(specs.values())) == 1:
            return {name: next(iter(specs.values()))}
        return {f"{name}/{lt}": s for lt, s in specs.items()}
    return {name: parse_rope(preset_from_text(value, **geometry), **geometry)}
