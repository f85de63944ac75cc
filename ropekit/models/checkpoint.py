"""Where a model's files are: what the user typed (``load_model``'s ``name_or_path``, a spec's
``models``, ``--model``) resolved once into a :class:`Checkpoint`.

Precedence, first match wins:

1. an existing local checkpoint: a ``.gguf`` file, a folder with ``config.json``, or a ``config.json``;
2. an embedded name (:data:`ropekit.models.EMBEDDED`, listed by ``ropekit models``);
3. a hub id ``org/name`` or ``org/name@revision`` (ropekit/models/hub.py), looked up in
   huggingface_hub's cache.

Embedded names have no ``/``, so they never collide with a hub id. A local folder ``org/name``
holding a checkpoint is loaded rather than the hub id, as transformers' ``from_pretrained`` does;
a local path of that name that is not a checkpoint is refused, not passed over for the hub. A
revision applies to hub ids only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .embedded import EMBEDDED, embedded_path
from .hub import HubSnapshot, hub_snapshot, looks_like_hub_id, parse_hub_id
from .sources import CheckpointError

FORMS = (
    "an embedded name ({}), a .gguf file, a folder with config.json and *.safetensors, or a hub id org/name[@revision]"
)


@dataclass(frozen=True)
class Checkpoint:
    """A model resolved: ``kind`` ``gguf`` (a file) or ``folder`` (config.json and safetensors) at
    ``path``, named ``name`` as typed; ``hub`` the snapshot when it came from a hub id."""

    name: str
    kind: str
    path: Path
    hub: HubSnapshot | None = None

    def record(self) -> dict[str, Any]:
        """What a sweep's meta.json says of where the model came from (its content hash aside)."""
        return {"path": str(self.path), **(self.hub.record() if self.hub else {})}


def locate(name_or_path: str | os.PathLike | Checkpoint, revision: str | None = None) -> Checkpoint:
    """The checkpoint ``name_or_path`` names, by the module's precedence (a :class:`Checkpoint`
    is returned as it is: resolved once, used by every later step)."""
    if isinstance(name_or_path, Checkpoint):
        if revision is not None:
            raise CheckpointError(f"revision={revision!r} was given for {name_or_path.name!r}, already resolved")
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    local = _local_checkpoint(path)
    if local is None and text in EMBEDDED:
        local = "gguf", embedded_path(text)
    if local is not None:
        if revision is not None:
            raise CheckpointError(f"revision={revision!r} applies to hub ids; {text!r} is a local or embedded model")
        return Checkpoint(text, *local)
    if path.exists():
        what = "folder without config.json" if path.is_dir() else "file that is neither a .gguf nor a config.json"
        shadow = f"; it shadows the hub id {text!r}: load it from another directory" if looks_like_hub_id(text) else ""
        raise CheckpointError(f"model {text!r} is not found: {text} is a {what}{shadow}")
    if not looks_like_hub_id(text):
        raise CheckpointError(f"model {text!r} is not found: expected {FORMS.format(', '.join(EMBEDDED))}")
    snapshot = hub_snapshot(parse_hub_id(text, revision))
    return Checkpoint(text, "folder", snapshot.path, snapshot)


def _local_checkpoint(path: Path) -> tuple[str, Path] | None:
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir() and (path / "config.json").exists():
        return "folder", path
    if path.is_file() and path.name == "config.json":
        return "folder", path.parent
    return None
