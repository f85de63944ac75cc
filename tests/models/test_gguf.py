"""GGUF files of the families llama.cpp writes beyond the dense ones (ropekit/models/gguf.py): Qwen3-MoE (``qwen3moe``)
and Mixtral (``llama`` with expert tensors), each written from a tiny random checkpoint by the ``gguf`` package's
writer as llama.cpp's convert_hf_to_gguf.py writes one (stacked 3-D expert tensors, the router as ``ffn_gate_inp``),
loaded by ropekit with per-token NLL equal to the safetensors checkpoint's, and to transformers' forward of that
checkpoint in float32 (the mean to 1e-5 relative, every token within 1e-4; transformers cannot read these files
itself: its Qwen3-MoE keys lack the experts' size, and it reads Mixtral's as Llama's); and the one-line refusals of
GGUF files ropekit cannot read right: Gemma 4 (transformers' GGUF keys lack its per-layer inputs and KV sharing) and
the architectures transformers has no GGUF reader for (OLMo 2, Granite, Cohere 2, GLM 4, SmolLM3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ropekit
from ropekit.models import CheckpointError, model_config, read_model_config
from ropekit.models.load import check_weights
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import FAMILY_CONFIGS, hf_token_nll, make_checkpoint

EXPERT = re.compile(r"(?P<stack>.+\.experts)\.(?P<e>\d+)\.(?P<proj>\w+)\.weight")


def llama_permute(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's LlamaModel.permute: q/k rows from the half layout to the interleaved one, head by head."""
    return rows.reshape(n_heads, 2, rows.shape[0] // n_heads // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def write_gguf(path: Path, folder: Path, hf, arch: str, *, permute_qk: bool = False, **metadata) -> None:
    """A GGUF file of the safetensors checkpoint in ``folder``, as convert_hf_to_gguf.py writes one: the config's
    sizes under ``arch``'s keys, each layer's experts stacked into one (E, ...) tensor per projection and named by the
    ``gguf`` package's map (``ffn_{gate,up,down}_exps``), float32; ``permute_qk``: q/k rows permuted as llama.cpp's
    LlamaModel does. ``metadata``: more ``GGUFWriter.add_*`` calls, by method name without ``add_``."""
    import gguf

    c = hf.config.to_dict()  # Gemma 4's config answers per-layer sizes only per layer
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_key_length(c["head_dim"])
    writer.add_value_length(c["head_dim"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_layer_norm_rms_eps(c.get("rms_norm_eps") or c["layer_norm_eps"])
    writer.add_rope_freq_base(hf.config.rope_parameters.get("rope_theta", 10_000.0))
    writer.add_vocab_size(c["vocab_size"])
    for method, value in metadata.items():
        getattr(writer, f"add_{method}")(value)
    names = gguf.get_tensor_name_map(arch_id, c["num_hidden_layers"])
    stacks: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in load_file(folder / "model.safetensors").items():
        if match := EXPERT.fullmatch(name):
            stacks.setdefault(f"{match['stack']}.{match['proj']}", {})[int(match["e"])] = tensor
            continue
        if permute_qk and name.endswith(("q_proj.weight", "k_proj.weight")):
            tensor = llama_permute(tensor, c["num_attention_heads" if "q_proj" in name else "num_key_value_heads"])
        base, suffix = name.rsplit(".", 1)
        if names.get_name(base) is None:  # Gemma 4's layer scalars: its file is refused by its metadata alone
            continue
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.float().numpy())
    for base, experts in stacks.items():
        stacked = torch.stack([experts[e] for e in sorted(experts)])
        writer.add_tensor(f"{names.get_name(base)}.weight", stacked.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))


def assert_gguf_matches_checkpoint(gguf_path: Path, folder: Path, hf, model_type: str) -> None:
    """The GGUF file's NLL equals the checkpoint's and transformers', first load (dequantised) and second (cached);
    its weights pass the header-only check a sweep runs first."""
    checkpoint, raw = read_model_config(gguf_path)
    check_weights(checkpoint, model_config(raw))
    model = ropekit.load_model(gguf_path)
    assert model.config.model_type == model_type
    tokens = ids(model.config.vocab_size, 300)  # past the trained 128 tokens
    ours = ropekit.token_nll(model, tokens)
    assert_close(ours, hf_token_nll(hf, tokens))
    assert torch.equal(ours, ropekit.token_nll(ropekit.load_model(folder), tokens))
    assert torch.equal(ropekit.token_nll(ropekit.load_model(gguf_path), tokens), ours)  # from the cache


def test_qwen3_moe_from_gguf(tmp_path):
    """llama.cpp's ``qwen3moe``: transformers' key table reads the expert count and top-k, and llama.cpp's
    ``expert_feed_forward_length`` (which that table lacks) the experts' size; every layer has experts (llama.cpp's
    Qwen3-MoE has no dense layers), and the top-k weights renormalised (transformers' GGUF default)."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("qwen3_moe", mlp_only_layers=[]))
    c = hf.config
    write_gguf(
        tmp_path / "tiny-qwen3moe.gguf",
        folder,
        hf,
        "qwen3moe",
        expert_count=c.num_experts,
        expert_used_count=c.num_experts_per_tok,
        expert_feed_forward_length=c.moe_intermediate_size,
    )
    assert_gguf_matches_checkpoint(tmp_path / "tiny-qwen3moe.gguf", folder, hf, "qwen3_moe")


def test_mixtral_from_gguf(tmp_path):
    """llama.cpp writes Mixtral as ``llama`` with ``expert_count`` in its metadata and stacked expert tensors, q/k
    permuted as for Llama: read as Mixtral. GGUF holds no sliding window: the checkpoint has none (Mixtral's own)."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("mixtral", sliding_window=None))
    c = hf.config
    write_gguf(
        tmp_path / "tiny-mixtral.gguf",
        folder,
        hf,
        "llama",
        permute_qk=True,
        expert_count=c.num_local_experts,
        expert_used_count=c.num_experts_per_tok,
    )
    assert_gguf_matches_checkpoint(tmp_path / "tiny-mixtral.gguf", folder, hf, "mixtral")


def test_a_llama_gguf_without_experts_is_still_llama(tmp_path):
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("llama"))
    write_gguf(tmp_path / "tiny-llama.gguf", folder, hf, "llama", permute_qk=True)
    assert_gguf_matches_checkpoint(tmp_path / "tiny-llama.gguf", folder, hf, "llama")


def test_gemma4_gguf_is_refused_naming_the_keys_transformers_cannot_read(tmp_path):
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("gemma4"))
    write_gguf(tmp_path / "tiny-gemma4.gguf", folder, hf, "gemma4")
    with pytest.raises(CheckpointError) as err:
        ropekit.load_model(tmp_path / "tiny-gemma4.gguf")
    line = str(err.value)
    assert "\n" not in line and "'gemma4'" in line
    for key in ("hidden_size_per_layer_input", "num_kv_shared_layers", "attention_k_eq_v"):
        assert key in line


@pytest.mark.parametrize("arch", ["olmo2", "granite", "cohere2", "glm4", "smollm3"])
def test_an_architecture_transformers_cannot_read_from_gguf_is_refused(arch, tmp_path):
    """llama.cpp's names for these families are their model types, and transformers has no GGUF key table for any:
    one line naming the architecture, not a config of its class's defaults nor a traceback."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, FAMILY_CONFIGS[arch])
    write_gguf(tmp_path / f"tiny-{arch}.gguf", folder, hf, arch)
    for read in (ropekit.load_model, read_model_config):
        with pytest.raises(CheckpointError) as err:
            read(tmp_path / f"tiny-{arch}.gguf")
        line = str(err.value)
        assert "\n" not in line and f"GGUF architecture {arch!r}" in line and "no GGUF reader" in line
