"""Reading a GGUF file: its config, its dequantised tensors under transformers names, its tokenizer,
and the cache that saves doing that twice.

GGUF names come from the ``gguf`` package's own name map and config keys from transformers' key
table; an architecture that table lacks (llama.cpp writes OLMo 2, Granite, Cohere 2, GLM 4, SmolLM3),
or lacks a key a family's layers need (Gemma 4), is refused rather than run on its config class's
defaults. A mixture-of-experts file (Qwen3-MoE, and Mixtral, which llama.cpp writes as ``llama``
with ``expert_count``) holds each layer's experts stacked, one 3-D tensor per projection: each expert
is read as its slice, under the per-expert names a transformers checkpoint gives it.

Parsing a GGUF file's metadata and dequantising its tensors costs seconds on every load (more than
the forward pass of a short sweep), so the first load writes the dequantised tensors,
under their transformers names, as one safetensors file with the config beside it, in a folder
named after the GGUF file's SHA-256 (:func:`dequantised`); later loads read that folder like a
transformers checkpoint. The converted tokenizer is saved in the same folder. Both folders are
renamed into place only once complete, so a killed write leaves no half cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
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
from .families import FAMILIES, Family, family_of_gguf
from .sources import CheckpointError, checkpoint_name

CACHE_FORMAT = "gguf-fp32-v1"
# llama.cpp's architecture names that transformers' GGUF key table knows by another (load_gguf_checkpoint's renames)
TABLE_NAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}
# An expert's tensor in a transformers checkpoint: model.layers.N.mlp.experts.E.gate_proj.weight (Mixtral: .w1.)
EXPERT = re.compile(r"(?P<stack>.+\.experts)\.(?P<expert>\d+)\.(?P<projection>\w+)\.(?P<suffix>weight|bias)")


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


def gguf_config(reader: Any, path: Path) -> dict[str, Any]:
    """A transformers-style config dict from the metadata of the GGUF file at ``path``, through transformers' own
    key table (the tokenizer fields, slow to parse, are left for the tokenizer)."""
    import gguf
    import transformers
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = _field(reader, "general.architecture")
    experts = bool(_field(reader, gguf.Keys.LLM.EXPERT_COUNT.format(arch=arch)))
    model_type = canonical_model_type(family_of_gguf(arch, experts))
    table = GGUF_CONFIG_MAPPING.get(TABLE_NAMES.get(arch, arch))
    if table is None:
        runs = f"; ropekit runs {model_type} from its safetensors checkpoint" if model_type in FAMILIES else ""
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r}: transformers {transformers.__version__} has no GGUF reader for it "
            f"(no key table in transformers.integrations.ggml), so its config cannot be read{runs}"
        )
    name = str(_field(reader, "general.name") or "").lower()
    if model_type == "llama" and "mistral" in name:
        model_type = "mistral"
    family = FAMILIES.get(model_type)
    if family is not None and (lacking := _unreadable_keys(family, table)):
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r}: transformers' GGUF key table has no {', '.join(lacking)}, so this "
            f"file's values for them cannot be read and {model_type}'s config defaults would stand in; load its "
            "safetensors checkpoint instead"
        )
    config: dict[str, Any] = {"model_type": model_type, **GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {})}
    for key, target in {**_expert_keys(family), **table}.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None and target is not None:
            config[target] = value
    names = {t.name: t for t in reader.tensors}
    config["tie_word_embeddings"] = "output.weight" not in names
    if "vocab_size" not in config and "token_embd.weight" in names:
        config["vocab_size"] = int(names["token_embd.weight"].shape[-1])
    return config


def _expert_keys(family: Family | None) -> dict[str, str]:
    """llama.cpp's expert metadata keys and the config keys a mixture-of-experts family reads them as: transformers'
    table has the count and top-k for Qwen-MoE only, and the experts' size (``expert_feed_forward_length``) never."""
    if family is None or family.experts is None:
        return {}
    experts = family.experts
    return {
        "expert_count": experts.count,
        "expert_used_count": "num_experts_per_tok",
        "expert_feed_forward_length": experts.size,
    }


def _unreadable_keys(family: Family, table: dict[str, Any]) -> list[str]:
    """The config keys that size a family's per-layer inputs and KV sharing and that transformers' GGUF key table
    does not read (all of Gemma 4's, in transformers 5.25): with them missing, the config class's defaults would
    size another model."""
    records = [record for record in (family.layer_inputs, family.shared_kv) if record is not None]
    read = set(table.values())
    return [key for record in records for key in dataclasses.astuple(record) if key not in read]


class GGUFSource:
    """Dequantised tensors of a GGUF file under their transformers names, with transformers' values.

    llama.cpp's converter permutes the q/k rows of Llama-architecture exports for interleaved
    rope, and stores RMSNorm weights as the effective multiplier (Gemma's ``1 + w``, where
    transformers stores ``w``); both are undone here, as transformers' ``load_gguf_checkpoint``
    does. Each tensor is dequantised once (Phi-3's fused projections are asked for thrice; a stack of
    experts is split into all its experts when the first is asked for) and kept in ``read``, for the cache.
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
        tensor, expert = self._tensor(name)
        if tensor is None:
            return None
        shape = tuple(int(d) for d in reversed(tensor.shape))
        return shape if expert is None else shape[1:]

    def _tensor(self, name: str) -> tuple[Any, int | None]:
        """The GGUF tensor record of a transformers name, or None; for one expert's tensor, the layer's stack of
        experts (llama.cpp's ``ffn_{gate,up,down}_exps``, experts first) and the expert's index in it."""
        expert = None
        if match := EXPERT.fullmatch(name):
            name, expert = f"{match['stack']}.{match['projection']}.{match['suffix']}", int(match["expert"])
        base, _, suffix = name.rpartition(".")
        gguf_base = self.names.get_name(base)
        tensor = self.tensors.get(f"{gguf_base}.{suffix}") if gguf_base else None
        if tensor is None or (expert is not None and (len(tensor.shape) != 3 or expert >= int(tensor.shape[-1]))):
            return None, None
        return tensor, expert

    def _dequantise(self, name: str) -> torch.Tensor | None:
        import gguf

        base = name.rpartition(".")[0]
        tensor, expert = self._tensor(name)
        if tensor is None:
            return None
        try:
            array = gguf.dequantize(tensor.data, tensor.tensor_type)
            # Unquantised tensors come back as views of the read-only file map: copy those only.
            values = torch.from_numpy(array if array.flags.writeable else array.copy())
        except (ValueError, NotImplementedError) as err:
            raise CheckpointError(f"GGUF tensor {tensor.name} cannot be dequantised: {err}") from None
        values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if expert is not None:  # every expert of the stack, each its own tensor (safetensors stores no views)
            match = EXPERT.fullmatch(name)
            for e, rows in enumerate(values):
                self.read[f"{match['stack']}.{e}.{match['projection']}.{match['suffix']}"] = rows.clone()
            return self.read[name]
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
