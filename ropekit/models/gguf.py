"""Reading a GGUF file: its config, its dequantised tensors under transformers names, its tokenizer,
and the cache that saves doing that twice.

GGUF names come from the ``gguf`` package's own name map and config keys from transformers' key
table. Parsing a GGUF file's metadata and dequantising its tensors costs seconds on every load
(more than the forward pass of a short sweep), so the first load writes the dequantised tensors,
under their transformers names, as one safetensors file with the config beside it, in a folder
named after the GGUF file's SHA-256 (:func:`dequantised`); later loads read that folder like a
transformers checkpoint. The converted tokenizer is saved in the same folder. Both folders are
renamed into place only once complete, so a killed write leaves no half cache.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..cache import Notice, atomic_folder, cache_dir, file_sha256
from ..rope import interleaved_to_half
from ..rope.config import canonical_model_type
from .config import ModelConfig
from .decoder import norm_weights
from .families import family_of_gguf
from .sources import CheckpointError, checkpoint_name

CACHE_FORMAT = "gguf-fp32-v1"


def read_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` of the file (a memory map: tensors are read when asked for)."""
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path} is not a readable GGUF file (truncated or corrupted?): {err}") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    values = [field.contents(i) for i in range(len(field.data))] if hasattr(field, "contents") else None
    if values is None:
        from transformers.modeling_gguf_pytorch_utils import _gguf_parse_value

        values = [_gguf_parse_value(field.parts[i], field.types) for i in field.data]
    return values[0] if len(values) == 1 else values


def gguf_config(reader: Any) -> dict[str, Any]:
    """A transformers-style config dict from GGUF metadata, through transformers' own key table
    (the tokenizer fields, slow to parse, are left for the tokenizer)."""
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = _field(reader, "general.architecture")
    model_type = canonical_model_type(family_of_gguf(arch))
    name = str(_field(reader, "general.name") or "").lower()
    if arch == "llama" and "mistral" in name:
        model_type = "mistral"
    table = GGUF_CONFIG_MAPPING.get(arch, {})
    config: dict[str, Any] = {"model_type": model_type, **GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {})}
    for key, target in table.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None and target is not None:
            config[target] = value
    names = {t.name: t for t in reader.tensors}
    config["tie_word_embeddings"] = "output.weight" not in names
    if "vocab_size" not in config and "token_embd.weight" in names:
        config["vocab_size"] = int(names["token_embd.weight"].shape[-1])
    return config


class GGUFSource:
    """Dequantised tensors of a GGUF file under their transformers names, with transformers' values.

    llama.cpp's converter permutes the q/k rows of Llama-architecture exports for interleaved
    rope, and stores RMSNorm weights as the effective multiplier (Gemma's ``1 + w``, where
    transformers stores ``w``); both are undone here, as transformers' ``load_gguf_checkpoint``
    does. Each tensor is dequantised once (Phi-3's fused projections are asked for thrice) and
    kept in ``read``, for the cache.
    """

    def __init__(self, path: Path, reader: Any, config: ModelConfig):
        import gguf

        self.reader, self.config = reader, config
        self.arch = _field(reader, "general.architecture")
        arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.arch), None)
        if arch_id is None:
            raise CheckpointError(f"{path}: GGUF architecture {self.arch!r} is not known to the gguf package")
        self.names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
        self.tensors = {t.name: t for t in reader.tensors}
        self.norms = {checkpoint_name(name, config) for name in norm_weights(config)}
        self.read: dict[str, torch.Tensor] = {}

    def get(self, name: str) -> torch.Tensor | None:
        if name not in self.read:
            values = self._dequantise(name)
            if values is None:
                return None
            self.read[name] = values
        return self.read[name]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape as transformers stores it, from the file's tensor table alone."""
        tensor = self._tensor(name)
        return None if tensor is None else tuple(int(d) for d in reversed(tensor.shape))

    def _tensor(self, name: str) -> Any:
        """The GGUF tensor record of a transformers name, or None."""
        base, _, suffix = name.rpartition(".")
        gguf_base = self.names.get_name(base)
        return self.tensors.get(f"{gguf_base}.{suffix}") if gguf_base else None

    def _dequantise(self, name: str) -> torch.Tensor | None:
        import gguf

        base = name.rpartition(".")[0]
        tensor = self._tensor(name)
        if tensor is None:
            return None
        try:
            array = gguf.dequantize(tensor.data, tensor.tensor_type)
            # Unquantised tensors come back as views of the read-only file map: copy those only.
            values = torch.from_numpy(array if array.flags.writeable else array.copy())
        except (ValueError, NotImplementedError) as err:
            raise CheckpointError(f"GGUF tensor {tensor.name} cannot be dequantised: {err}") from None
        values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        c = self.config
        if self.arch == "llama" and base.endswith(("q_proj", "k_proj")):
            values = interleaved_to_half(
                values, c.num_attention_heads if base.endswith("q_proj") else c.num_key_value_heads
            )
        if name in self.norms:
            values = values - c.family.norm_offset
        return values


# --- the dequantised-weights cache -------------------------------------------------------------


def _cache_folder(path: Path) -> Path:
    return cache_dir() / CACHE_FORMAT / file_sha256(path)


def dequantised(path: Path) -> Path | None:
    """The cache folder of a GGUF file (a transformers checkpoint folder), if a complete one exists."""
    folder = _cache_folder(path)
    return folder if (folder / "model.safetensors").exists() and (folder / "config.json").exists() else None


def _plain(value: Any) -> Any:
    """numpy scalars and arrays from GGUF metadata as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in a model config is not JSON data")


def cache_dequantised(path: Path, raw: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write the cache folder of a GGUF file; a cache that cannot be written only costs speed."""
    from safetensors.torch import save_file

    folder = _cache_folder(path)
    try:
        with atomic_folder(folder) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(raw, indent=1, default=_plain), encoding="utf-8")
            (tmp / "source.json").write_text(json.dumps({"gguf": str(path)}), encoding="utf-8")
    except OSError as err:
        if not folder.exists():  # another process may have written it first
            warnings.warn(f"could not cache the dequantised weights of {path} in {folder}: {err}", Notice, stacklevel=3)


def gguf_tokenizer(path: Path) -> Callable[[], Any]:
    """A loader of the tokenizer of a GGUF file; its conversion (seconds for a large vocabulary) is
    saved in the weights' cache folder and read from there next time."""

    def load() -> Any:
        from transformers import AutoTokenizer

        folder = _cache_folder(path) / "tokenizer"
        if (folder / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if folder.parent.exists():  # once the weights' cache is written
            with contextlib.suppress(OSError), atomic_folder(folder) as tmp:
                tokenizer.save_pretrained(str(tmp))
        return tokenizer

    return load
