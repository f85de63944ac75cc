"""Reading a GGUF file: its config, its dequantised tensors under transformers names, its tokenizer,
and the cache that saves doing that twice.

A file's family, and how llama.cpp wrote it, come from the family's GGUF record (``Family.gguf``,
ropekit/models/families.py), found by the file's ``general.architecture``. GGUF names come from the ``gguf``
package's own name map. Config keys come from transformers' key table where the record names one, and
otherwise from the keys every architecture has and the record's own: what llama.cpp's
``convert_hf_to_gguf.py`` writes for OLMo 2 and 3, OLMoE, Granite, Cohere 2, GLM 4, SmolLM3, Ministral 3,
EXAONE 4, Gemma 2, 3 and 4, and the linear-attention layers of Qwen3-Next and Qwen3.5 (``GGUFSource._linear``), with
what its runtime assumes where it writes no key (SmolLM3's NoPE on
every 4th layer, Cohere 2's 3 sliding : 1 global layers, Gemma's q.k scale). Gemma 2 and 3 are read so
although transformers has a table for them: it lacks their soft-capping, local theta and q.k scale. The
rope's scaling is read from llama.cpp's ``rope.scaling.*`` keys (transformers' table reads none of
them), and Llama 3's, which llama.cpp stores only as its per-frequency factors (the ``rope_freqs``
tensor), recovered from those factors and checked to give them back. An architecture neither knows, a
key llama.cpp writes that a file lacks, or a scaling ropekit cannot recover (LongRoPE's factor tensors)
is refused rather than run on defaults. A mixture-of-experts file (Qwen3-MoE, OLMoE, and Mixtral, which
llama.cpp writes as ``llama`` with ``expert_count``) holds each layer's experts stacked, one 3-D tensor per
projection: each expert is read as its slice, under the per-expert names a transformers checkpoint gives it.

Parsing a GGUF file's metadata and dequantising its tensors costs seconds on every load (more than
the forward pass of a short sweep), so the first load writes the dequantised tensors,
under their transformers names, as one safetensors file with the config beside it, in a folder
named after the GGUF file's SHA-256 (:func:`dequantised`); later loads read that folder like a
transformers checkpoint. The converted tokenizer is saved in the same folder. Both folders are
renamed into place only once complete, so a killed write leaves no half cache.
"""

from __future__ import annotations

import contextlib
import json
import math
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
from .families import FAMILIES, Family, Gguf, family_of_gguf, gguf_list, switchable
from .sources import CheckpointError, checkpoint_name

CACHE_FORMAT = "gguf-fp32-v2"  # v2: the rope's scaling read from the file
# An expert's tensor in a transformers checkpoint: model.layers.N.mlp.experts.E.gate_proj.weight (Mixtral: .w1.)
EXPERT = re.compile(r"(?P<stack>.+\.experts)\.(?P<expert>\d+)\.(?P<projection>\w+)\.(?P<suffix>weight|bias)")
# gpt-oss's stacked experts in its safetensors layout (x @ W: ``gate_up_proj`` (E, C, 2 x I), gate and up columns
# interleaved; ``down_proj`` (E, I, C); their biases), which llama.cpp writes as ffn_{gate,up,down}_exps apart
STACKED = re.compile(r"(?P<block>.+\.experts)\.(?P<part>gate_up|down)_proj(?P<bias>_bias)?")


# llama.cpp's names of architectures ropekit runs but reads no GGUF of, where they are not the family's (DeepSeek V2
# and V3 are both written as deepseek2, their MLA's key and value projections split apart)
UNREAD_ARCHITECTURES = {
    "deepseek2": ("deepseek_v2", "deepseek_v3"),
    "llama4": ("llama4_text",),
}
# A layer's weight under its transformers name, for the weights some families' files hold as metadata
LAYER_WEIGHT = re.compile(r"model\.layers\.(?P<layer>\d+)\.(?P<name>.+)")
# A linear-attention layer's tensor that llama.cpp stores otherwise than transformers (GGUFSource._linear)
LINEAR_PART = re.compile(
    r"model\.layers\.(?P<layer>\d+)\.linear_attn\."
    r"(?P<part>A_log|dt_bias|conv1d\.weight|in_proj_(?:qkvz|qkv|z|a|b)\.weight|out_proj\.weight)"
)
# A short convolution's weight (LFM2's), which llama.cpp stores without its middle axis
CONV_WEIGHT = re.compile(r"model\.layers\.(?P<layer>\d+)\.conv\.conv\.weight")


def read_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` of the file (a memory map: tensors are read when asked for)."""
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path} is not a readable GGUF file (truncated or corrupted?): {err}") from None


def _field(reader: Any, key: str) -> Any:
    """A metadata value; GGUF's float32 numbers as the shortest decimal that rounds to them (the 0.15 a config
    held, not 0.15000000596046448)."""
    import gguf
    import numpy as np

    field = reader.fields.get(key)
    if field is None:
        return None
    values = [field.contents(i) for i in range(len(field.data))] if hasattr(field, "contents") else None
    if values is None:
        from transformers.modeling_gguf_pytorch_utils import _gguf_parse_value

        values = [_gguf_parse_value(field.parts[i], field.types) for i in field.data]
    if field.types and field.types[-1] == gguf.GGUFValueType.FLOAT32:
        values = [float(str(np.float32(v))) for v in values]
    return values[0] if len(values) == 1 else values


# The keys convert_hf_to_gguf.py's TextModel.set_gguf_parameters writes for every architecture.
COMMON_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.layer_norm_epsilon": "layer_norm_eps",
    "attention.sliding_window": "sliding_window",
    "vocab_size": "vocab_size",
}


def gguf_config(reader: Any, path: Path) -> dict[str, Any]:
    """A transformers-style config dict from the metadata of the GGUF file at ``path``, through transformers' own
    key table or the keys its family's GGUF record names (the tokenizer fields, slow to parse, are left for the
    tokenizer)."""
    import transformers
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = _field(reader, "general.architecture")

    def key(name: str) -> Any:  # one of the architecture's keys ("ARCH.NAME")
        return _field(reader, f"{arch}.{name}")

    family = family_of_gguf(arch, lambda name: key(name) is not None, str(_field(reader, "general.name") or ""))
    model_type = family.name if family else canonical_model_type(arch)
    if family is not None and switchable(family) and key("expert_count") is not None:
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r} with experts (expert_count): ropekit reads {model_type}'s mixture of "
            "experts from safetensors checkpoints only"
        )
    own = family.gguf if family and family.gguf and not family.gguf.table else None  # ropekit reads its config
    if own is not None:
        table = COMMON_KEYS
    else:  # without a family, transformers' table of the architecture's name: the plan then says what it lacks
        table = GGUF_CONFIG_MAPPING.get(family.gguf.table if family and family.gguf else arch)
    if table is None:
        names = (model_type, canonical_model_type(arch.replace("-", "_")), *UNREAD_ARCHITECTURES.get(arch, ()))
        known = " and ".join(dict.fromkeys(t for t in names if t in FAMILIES))  # gpt-oss: gpt_oss
        runs = f"; ropekit runs {known} from safetensors checkpoints" if known else ""
        raise CheckpointError(
            f"{path}: GGUF architecture {arch!r}: neither transformers {transformers.__version__} (no key table in "
            f"transformers.integrations.ggml) nor ropekit has a reader for it, so its config cannot be read{runs}"
        )
    config: dict[str, Any] = {
        "model_type": model_type,
        **GGUF_CONFIG_DEFAULTS_MAPPING.get(model_type, {}),
        **(own.config if own else {}),
    }
    for name, target in {**_expert_keys(family), **table, **(own.keys if own else {})}.items():
        if (value := key(name)) is not None and target is not None:
            config[target] = value
    names = {t.name: t for t in reader.tensors}
    if own is not None:
        config.update({target: f"blk.0.{tensor}" in names for tensor, target in own.tensor_flags.items()})
        if own.extra_blocks is not None and "num_hidden_layers" in config:  # GLM-4.5's MTP layer: not the model's
            config["num_hidden_layers"] -= int(key(own.extra_blocks) or 0)
    if own is not None and own.layers is not None:
        try:
            config.update(own.layers(key, names, config))
        except KeyError as err:
            raise CheckpointError(
                f"{path}: GGUF architecture {arch!r} lacks {err.args[0]}, which llama.cpp's converter writes for it"
            ) from None
    elif own is not None:
        config.update(_llama_cpp_layers(key, own, config))
    config["tie_word_embeddings"] = "output.weight" not in names
    if "vocab_size" not in config and "token_embd.weight" in names:
        config["vocab_size"] = int(names["token_embd.weight"].shape[-1])
    if "rope_parameters" not in config and (scaling := _rope_scaling(key, names, config, path)):
        config["rope_scaling"] = {**scaling, **(own.rope if own and scaling["rope_type"] == "yarn" else {})}
    return config


def _llama_cpp_layers(key: Callable[[str], Any], own: Gguf, config: dict[str, Any]) -> dict[str, Any]:
    """The layer plan of a family whose GGUF config ropekit reads (its record names no transformers table), as its
    transformers config states it: the rotated share of each head, which layers slide (the file's pattern, else
    llama.cpp's period), which have no rope, and the values llama.cpp fixes."""
    out: dict[str, Any] = {}
    layers = int(config["num_hidden_layers"])
    head_dim = _head_dim(config)
    rotated = key("rope.dimension_count")
    if rotated is not None and int(rotated) != head_dim:
        out["partial_rotary_factor"] = int(rotated) / head_dim
    pattern = key("attention.sliding_window_pattern")
    if pattern is not None:
        out["layer_types"] = ["sliding_attention" if s else "full_attention" for s in gguf_list(pattern)]
    elif own.swa_period and config.get("sliding_window"):
        period = own.swa_period
        out["layer_types"] = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(layers)]
    if own.wide_scale_layers:
        wide = layers == own.wide_scale_layers
        out["query_pre_attn_scalar"] = config["hidden_size"] // config["num_attention_heads"] if wide else head_dim
    if own.nope_period:
        out["no_rope_layers"] = [int((i + 1) % own.nope_period != 0) for i in range(layers)]
        out["no_rope_layer_interval"] = own.nope_period
    return out


def _head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _rope_scaling(
    key: Callable[[str], Any], tensors: dict[str, Any], config: dict[str, Any], path: Path
) -> dict | None:
    """The rope's scaling as a ``rope_scaling`` dict, from llama.cpp's ``rope.scaling.*`` keys (what
    convert_hf_to_gguf.py's set_gguf_parameters writes for linear and yarn, and Ministral 3's query scaling), or
    Llama 3's from its ``rope_freqs`` factors; None for an unscaled rope."""
    kind = str(key("rope.scaling.type") or "none")
    if "rope_freqs.weight" in tensors:
        if kind != "none":
            raise CheckpointError(f"{path}: GGUF holds both rope_freqs and rope.scaling.type {kind!r}")
        return _llama3_from_factors(tensors["rope_freqs.weight"], config, path)
    if kind == "none":
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(key("rope.scaling.factor"))}
    if kind != "yarn":
        raise CheckpointError(
            f"{path}: GGUF rope.scaling.type {kind!r}: ropekit reads 'none', 'linear' and 'yarn' from GGUF "
            "(and Llama 3's rope_freqs); load its safetensors checkpoint instead"
        )
    scaling: dict[str, Any] = {
        "rope_type": "yarn",
        "factor": float(key("rope.scaling.factor")),
        "original_max_position_embeddings": int(key("rope.scaling.original_context_length")),
    }
    for name, target in (
        ("rope.scaling.yarn_beta_fast", "beta_fast"),
        ("rope.scaling.yarn_beta_slow", "beta_slow"),
        ("rope.scaling.yarn_ext_factor", "extrapolation_factor"),
        ("rope.scaling.yarn_attn_factor", "attention_factor"),
        ("attention.temperature_scale", "llama_4_scaling_beta"),
    ):
        if (value := key(name)) is not None:
            scaling[target] = float(value)
    if (log_mul := key("rope.scaling.yarn_log_multiplier")) is not None:
        # llama.cpp's llama_context: mscale taken as 1, mscale_all_dim as the file's yarn_log_multiplier
        scaling.update(mscale=1.0, mscale_all_dim=float(log_mul))
    return scaling


def _llama3_from_factors(tensor: Any, config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Llama 3's rope from the per-frequency factors llama.cpp stores for it (LlamaModel.generate_extra_tensors):
    ``factor`` is the largest; between the two bands, ``1 / f = (1 - s) / factor + s`` with
    ``s = (old / wavelength - low) / (high - low)``, a line in 1 / wavelength whose slope and intercept give
    ``high`` and the original context (``low_freq_factor`` taken as 1, as every Llama 3 release has it). The
    recovered parameters must give the stored factors back (1e-5 relative), or the file is refused."""
    import gguf
    import numpy as np

    factors = torch.from_numpy(gguf.dequantize(tensor.data, tensor.tensor_type).copy()).double().flatten()
    head_dim = _head_dim(config)
    theta = float(config.get("rope_theta", 10_000.0))
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    wavelength = 2 * math.pi / inv_freq.double()
    factor = float(factors.max())
    between = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
    refused = CheckpointError(
        f"{path}: GGUF rope_freqs (per-frequency rope factors) are not Llama 3's rope with low_freq_factor 1; "
        "load its safetensors checkpoint instead"
    )
    if factors.numel() != inv_freq.numel() or factor <= 1 or int(between.sum()) < 2:
        raise refused
    smooth = (1 / factors[between] - 1 / factor) / (1 - 1 / factor)
    x = 1 / wavelength[between]
    slope, intercept = torch.linalg.lstsq(torch.stack([x, torch.ones_like(x)], 1), smooth[:, None]).solution.flatten()
    high = 1 - 1 / float(intercept)  # intercept = -low / (high - low), low = 1
    old = float(slope) * (high - 1)
    for digits in range(7):  # the fewest decimals that give the factors back: 4, not the fit's 4.000001
        scaling = {
            "rope_type": "llama3",
            "factor": float(str(np.float32(factor))),
            "low_freq_factor": 1.0,
            "high_freq_factor": round(high, digits),
            "original_max_position_embeddings": round(old),
        }
        if torch.allclose(_llama3_factors(scaling, wavelength), factors, rtol=1e-5, atol=0):
            return scaling
    raise refused


def _llama3_factors(scaling: dict[str, Any], wavelength: torch.Tensor) -> torch.Tensor:
    """llama.cpp's per-frequency factors of a Llama 3 rope (its LlamaModel.generate_extra_tensors)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    smooth = (old / wavelength - low) / (high - low)
    between = 1 / ((1 - smooth) / factor + smooth)
    return torch.where(wavelength < old / high, 1.0, torch.where(wavelength > old / low, factor, between))


def _expert_keys(family: Family | None) -> dict[str, str]:
    """llama.cpp's expert metadata keys and the config keys a mixture-of-experts family reads them as: transformers'
    table has the count and top-k for Qwen-MoE only, and the experts' size (``expert_feed_forward_length``) and the
    shared expert's (Qwen2-MoE's ``expert_shared_feed_forward_length``) never."""
    if family is None or family.experts is None:
        return {}
    experts = family.experts
    return {
        "expert_count": experts.count,
        "expert_used_count": experts.top_k,
        "expert_feed_forward_length": experts.size,
        **({"expert_shared_feed_forward_length": experts.shared_size} if experts.shared_size else {}),
    }


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

    def _metadata_weight(self, name: str) -> tuple[str, int, tuple[int, ...]] | None:
        """(its key, its layer, its shape) where the file holds weight ``name`` as metadata (Apertus's xIELU)."""
        own = self.config.family.gguf
        match = LAYER_WEIGHT.fullmatch(name)
        if own is None or match is None or match["name"] not in own.metadata_weights:
            return None
        key, shape = own.metadata_weights[match["name"]]
        return key, int(match["layer"]), shape

    def shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape as transformers stores it, from the file's tensor table alone."""
        if (linear := self._linear(name, meta=True)) is not False:
            return None if linear is None else tuple(linear.shape)
        if (held := self._metadata_weight(name)) is not None:
            values = _field(self.reader, held[0])
            return held[2] if values is not None and held[1] < len(gguf_list(values)) else None
        if stacked := STACKED.fullmatch(name):
            parts = [self.shape(part) for part in self._stacked_parts(stacked)]
            if None in parts or len({*parts}) > 1:
                return None
            E, *rows = parts[0]  # (E, I, C) or (E, C, I) as llama.cpp stores each expert's rows; (E, I) a bias
            if stacked["bias"]:
                return (E, len(parts) * rows[0])
            return (E, rows[1], 2 * rows[0]) if len(parts) == 2 else (E, rows[1], rows[0])
        tensor, expert = self._tensor(name)
        if tensor is None:
            return None
        shape = tuple(int(d) for d in reversed(tensor.shape))
        return shape if expert is None else shape[1:]

    def _tensor(self, name: str) -> tuple[Any, int | None]:
        """The GGUF tensor record of a transformers name, or None; for one expert's tensor, the layer's stack of
        experts (llama.cpp's ``ffn_{gate,up,down}_exps``, experts first) and the expert's index in it, or in an
        older file the expert's own tensor (``ffn_{gate,up,down}.E``) and None."""
        expert = None
        if match := EXPERT.fullmatch(name):
            name, expert = f"{match['stack']}.{match['projection']}.{match['suffix']}", int(match["expert"])
        base, _, suffix = name.rpartition(".")
        candidates = [(base, suffix)]
        if suffix.endswith("_bias"):  # a router's correction bias, llama.cpp's exp_probs_b.bias: DeepSeek's
            # e_score_correction_bias (the map knows e_score_correction), LFM2-MoE's expert_bias (known whole)
            candidates = [(f"{base}.{suffix.removesuffix('_bias')}", "bias"), (name, "bias")]
        elif suffix not in ("weight", "bias"):  # a buffer saved with the weights (Gemma 4's layer_scalar)
            candidates = [(name, "weight")]
        # the map knows some stacks of experts by their name without "model." (LFM2-MoE's, as its converter names them)
        known = [(b, s) for full, s in candidates for b in (full, full.removeprefix("model."))]
        base, suffix = next(((b, s) for b, s in known if self.names.get_name(b) is not None), candidates[0])
        gguf_base = self.names.get_name(base)
        fused = self.config.family.fused  # llama.cpp writes a fused gate_up_proj (Phi-3, GLM 4) as ffn_up, no ffn_gate
        if (
            fused
            and gguf_base
            and base.endswith("mlp.up_proj")
            and f"{gguf_base[:-2]}gate.{suffix}" not in self.tensors
        ):
            return None, None
        tensor = self.tensors.get(f"{gguf_base}.{suffix}") if gguf_base else None
        if tensor is None and expert is not None and gguf_base:
            # llama.cpp's files before it stacked experts (Mixtral's first GGUFs): one tensor per expert
            return self.tensors.get(f"{gguf_base.removesuffix('_exps')}.{expert}.{suffix}"), None
        if tensor is None or (expert is not None and (len(tensor.shape) != 3 or expert >= int(tensor.shape[-1]))):
            return None, None
        return tensor, expert

    @staticmethod
    def _stacked_parts(match: re.Match) -> list[str]:
        suffix = "bias" if match["bias"] else "weight"
        parts = ("gate_proj", "up_proj") if match["part"] == "gate_up" else ("down_proj",)
        return [f"{match['block']}.{part}.{suffix}" for part in parts]

    def _stacked(self, match: re.Match) -> torch.Tensor | None:
        """gpt-oss's experts in its safetensors layout (:data:`STACKED`), from llama.cpp's ffn_{gate,up,down}_exps
        (each expert's rows (out, in), MXFP4 or not, and its biases): gate and up interleaved, then x @ W."""
        parts = [self._dequantise(part) for part in self._stacked_parts(match)]
        if any(part is None or part.dim() != (2 if match["bias"] else 3) for part in parts):
            return None
        if match["bias"]:
            return torch.stack(parts, dim=-1).flatten(1)  # (E, I, 2) -> (E, 2 x I): gate_0, up_0, gate_1, ...
        rows = torch.stack(parts, dim=2).flatten(1, 2) if len(parts) == 2 else parts[0]  # (E, 2 x I, C) or (E, C, I)
        return rows.transpose(1, 2).contiguous()

    def _stored(self, name: str, meta: bool = False) -> torch.Tensor | None:
        """The GGUF tensor ``name`` dequantised, in transformers' axis order (or a meta tensor of its shape)."""
        import gguf

        tensor = self.tensors.get(name)
        if tensor is None:
            return None
        shape = tuple(int(d) for d in reversed(tensor.shape))
        if meta:
            return torch.empty(shape, device="meta")
        try:
            array = gguf.dequantize(tensor.data, tensor.tensor_type)
            # Unquantised tensors come back as views of the read-only file map: copy those only.
            return torch.from_numpy(array if array.flags.writeable else array.copy()).reshape(shape)
        except (ValueError, NotImplementedError) as err:
            raise CheckpointError(f"GGUF tensor {tensor.name} cannot be dequantised: {err}") from None

    def _linear(self, name: str, meta: bool = False) -> torch.Tensor | None | bool:
        """A linear-attention layer's tensor as its transformers checkpoint holds it, from what llama.cpp's
        Qwen3NextModel writes (False for any other name): the decay rate ``A_log`` as ``-exp(A_log)`` (``ssm_a``),
        ``dt_bias`` as ``ssm_dt``'s bias, the convolution without its middle axis, Qwen3-Next's ``in_proj_qkvz`` as
        flat q, k and v (``attn_qkv``) and z (``attn_gate``), here regrouped by key head; and Qwen3.5's value heads,
        which it tiles (key head fastest: ``Gguf.tiled_values``), put back in groups by key head. LFM2's short
        convolutions without their middle axis too."""
        if (conv := CONV_WEIGHT.fullmatch(name)) is not None and self.config.conv is not None:
            weight = self._stored(f"blk.{conv['layer']}.shortconv.conv.weight", meta)  # (channels, kernel)
            return None if weight is None else weight[:, None]
        match = LINEAR_PART.fullmatch(name)
        s, own = self.config.linear, self.config.family.gguf
        if match is None or s is None:
            return False
        part, block = match["part"], f"blk.{match['layer']}"
        tiled = own is not None and own.tiled_values and s.key_heads != s.value_heads
        per = s.value_heads // s.key_heads

        def grouped(t: torch.Tensor | None, dim: int, width: int) -> torch.Tensor | None:  # tiled value heads, undone
            if t is None or not tiled:
                return t
            shape = list(t.shape)
            heads = t.reshape(*shape[:dim], per, s.key_heads, width, *shape[dim + 1 :])
            return heads.transpose(dim, dim + 1).reshape(shape)

        read = lambda gguf_name: self._stored(gguf_name, meta)  # noqa: E731
        keys = 2 * s.key_heads * s.key_dim
        if part == "A_log":
            a = read(f"{block}.ssm_a")
            return None if a is None else grouped(torch.log(-a), 0, 1)
        if part == "dt_bias":
            return grouped(read(f"{block}.ssm_dt.bias"), 0, 1)
        if part == "conv1d.weight":
            conv = read(f"{block}.ssm_conv1d.weight")  # (channels, kernel)
            if conv is None or conv.shape[0] <= keys:
                return conv
            return torch.cat((conv[:keys], grouped(conv[keys:], 0, s.value_dim)))[:, None]
        if part == "out_proj.weight":
            return grouped(read(f"{block}.ssm_out.weight"), 1, s.value_dim)
        if part in ("in_proj_a.weight", "in_proj_b.weight"):
            return grouped(read(f"{block}.ssm_{'alpha' if part == 'in_proj_a.weight' else 'beta'}.weight"), 0, 1)
        qkv, z = read(f"{block}.attn_qkv.weight"), read(f"{block}.attn_gate.weight")
        if qkv is None or z is None or qkv.shape[0] <= keys:
            return None
        qkv = torch.cat((qkv[:keys], grouped(qkv[keys:], 0, s.value_dim)))
        if part == "in_proj_qkv.weight":
            return qkv
        z = grouped(z, 0, s.value_dim)
        if part == "in_proj_z.weight":
            return z
        q, k, v = qkv.split([s.key_heads * s.key_dim, s.key_heads * s.key_dim, s.value_heads * s.value_dim])
        parts = [x.reshape(s.key_heads, -1, x.shape[-1]) for x in (q, k, v, z)]  # each key head's rows, side by side
        return torch.cat(parts, dim=1).reshape(-1, qkv.shape[-1])

    def _dequantise(self, name: str) -> torch.Tensor | None:
        import gguf

        if (linear := self._linear(name)) is not False:
            return linear
        if stacked := STACKED.fullmatch(name):
            return self._stacked(stacked)
        if (held := self._metadata_weight(name)) is not None:
            key, layer, shape = held
            values = gguf_list(_field(self.reader, key) or [])
            return (
                torch.tensor(float(values[layer]), dtype=torch.float32).reshape(shape) if layer < len(values) else None
            )
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
        if c.family.gguf and c.family.gguf.permuted_qk and base.endswith(("q_proj", "k_proj")):
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
