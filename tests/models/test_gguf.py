"""GGUF files of the families llama.cpp writes beyond the dense ones (ropekit/models/gguf.py): Qwen3-MoE (``qwen3moe``)
and Mixtral (``llama`` with expert tensors), each written from a tiny random checkpoint by the ``gguf`` package's
writer as llama.cpp's convert_hf_to_gguf.py writes one (stacked 3-D expert tensors, the router as ``ffn_gate_inp``),
loaded by ropekit with per-token NLL equal to the safetensors checkpoint's, and to transformers' forward of that
checkpoint in float32 (the mean to 1e-5 relative, every token within 1e-4; transformers cannot read these files
itself: its Qwen3-MoE keys lack the experts' size, and it reads Mixtral's as Llama's); Llama 3's rope recovered from
the per-frequency factors llama.cpp stores for it; and the one-line refusals of GGUF files ropekit cannot read
right: a Gemma 4 file without the keys llama.cpp writes for it, an architecture neither
transformers nor ropekit reads, LongRoPE (factor tensors) and rope factors no Llama 3 rope gives. The files
llama.cpp's own converter wrote are tested in test_gguf_llama_cpp.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ropekit
from ropekit.models import CheckpointError, model_config, read_model_config
from ropekit.models.families import family_of_gguf
from ropekit.models.load import check_weights
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import FAMILY_CONFIGS, hf_token_nll, make_checkpoint

EXPERT = re.compile(r"(?P<stack>.+\.experts)\.(?P<e>\d+)\.(?P<proj>\w+)\.weight")


def llama_permute(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's LlamaModel.permute: q/k rows from the half layout to the interleaved one, head by head."""
    return rows.reshape(n_heads, 2, rows.shape[0] // n_heads // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def write_gguf(
    path: Path,
    folder: Path,
    hf,
    arch: str,
    *,
    permute_qk: bool = False,
    per_expert: bool = False,
    rope_freqs: list | None = None,
    extra: dict | None = None,
    **metadata,
) -> None:
    """A GGUF file of the safetensors checkpoint in ``folder``, as convert_hf_to_gguf.py writes one: the config's
    sizes under ``arch``'s keys, each layer's experts stacked into one (E, ...) tensor per projection and named by the
    ``gguf`` package's map (``ffn_{gate,up,down}_exps``), float32; ``permute_qk``: q/k rows permuted as llama.cpp's
    LlamaModel does; ``per_expert``: each expert's tensors their own (``ffn_gate.E``), as llama.cpp wrote Mixtral
    before it stacked them; ``rope_freqs``: per-frequency rope factors, as it stores Llama 3's; ``extra``: more
    tensors by their GGUF names, each an array and its GGML type. ``metadata``: more ``GGUFWriter.add_*`` calls, by
    method name without ``add_``."""
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
        if per_expert:
            for e, tensor in sorted(experts.items()):
                writer.add_tensor(f"{names.get_name(base).removesuffix('_exps')}.{e}.weight", tensor.float().numpy())
            continue
        stacked = torch.stack([experts[e] for e in sorted(experts)])
        writer.add_tensor(f"{names.get_name(base)}.weight", stacked.float().numpy())
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", torch.tensor(rope_freqs, dtype=torch.float32).numpy())
    for name, (array, raw_dtype) in (extra or {}).items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
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


@pytest.mark.parametrize(("family", "arch"), [("qwen3_moe", "qwen3moe"), ("qwen2_moe", "qwen2moe")])
def test_qwen_moe_from_gguf(family, arch, tmp_path):
    """llama.cpp's ``qwen3moe`` and ``qwen2moe``: transformers' key table reads the expert count and top-k, and
    llama.cpp's ``expert_feed_forward_length`` (which that table lacks) the experts' size, and Qwen2-MoE's
    ``expert_shared_feed_forward_length`` its shared expert's (``ffn_{gate,up,down}_shexp``, gated by
    ``ffn_gate_inp_shexp``); every layer has experts (llama.cpp's Qwen-MoE has no dense layers), and the top-k
    weights renormalised as transformers' GGUF defaults say."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config(family, mlp_only_layers=[]))
    c = hf.config
    shared = getattr(c, "shared_expert_intermediate_size", None)
    write_gguf(
        tmp_path / f"tiny-{arch}.gguf",
        folder,
        hf,
        arch,
        expert_count=c.num_experts,
        expert_used_count=c.num_experts_per_tok,
        expert_feed_forward_length=c.moe_intermediate_size,
        **({"expert_shared_feed_forward_length": shared} if shared else {}),
    )
    assert_gguf_matches_checkpoint(tmp_path / f"tiny-{arch}.gguf", folder, hf, family)


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


def test_mixtral_from_an_old_gguf_with_a_tensor_per_expert(tmp_path):
    """llama.cpp's first Mixtral files (before it stacked experts, 2024) hold each expert's projections as their own
    tensors, ``blk.N.ffn_{gate,up,down}.E.weight``: read as the stacked ones are."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("mixtral", sliding_window=None))
    c = hf.config
    path = tmp_path / "tiny-mixtral-old.gguf"
    write_gguf(
        path,
        folder,
        hf,
        "llama",
        permute_qk=True,
        per_expert=True,
        expert_count=c.num_local_experts,
        expert_used_count=c.num_experts_per_tok,
    )
    import gguf

    names = {t.name for t in gguf.GGUFReader(str(path)).tensors}
    assert "blk.0.ffn_gate.3.weight" in names and not any("_exps" in name for name in names)
    assert_gguf_matches_checkpoint(path, folder, hf, "mixtral")


def test_a_llama_gguf_without_experts_is_still_llama(tmp_path):
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("llama"))
    write_gguf(tmp_path / "tiny-llama.gguf", folder, hf, "llama", permute_qk=True)
    assert_gguf_matches_checkpoint(tmp_path / "tiny-llama.gguf", folder, hf, "llama")


def test_a_llama_gguf_named_mistral_is_mistral(tmp_path):
    """llama.cpp writes Mistral as ``llama``, q/k permuted; its ``general.name`` tells it apart. GGUF holds no
    sliding window: the checkpoint has none."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("mistral", sliding_window=None))
    write_gguf(tmp_path / "tiny-mistral.gguf", folder, hf, "llama", permute_qk=True, name="Mistral-Tiny-v0.1")
    assert_gguf_matches_checkpoint(tmp_path / "tiny-mistral.gguf", folder, hf, "mistral")


@pytest.mark.parametrize(
    ("arch", "keys", "name", "family"),
    [
        ("llama", (), "", "llama"),
        ("llama", ("expert_count",), "", "mixtral"),
        ("llama", (), "Mistral 7B", "mistral"),
        ("llama", ("expert_count",), "Mixtral 8x7B, a Mistral", "mixtral"),  # experts first: Mistral has none
        ("olmo2", (), "", "olmo2"),
        ("olmo2", ("attention.sliding_window",), "", "olmo3"),
        ("qwen3moe", ("expert_count",), "", "qwen3_moe"),
        ("qwen3moe", (), "", None),  # a MoE family's architecture without experts
        ("command-r", (), "", None),
    ],
)
def test_a_gguf_files_family_is_the_record_that_asks_the_most_of_it(arch, keys, name, family):
    """Families written under one architecture name (Family.gguf) are told apart by experts, a key or the name."""
    found = family_of_gguf(arch, lambda key: key in keys, name)
    assert (found.name if found else None) == family


def test_a_gemma4_gguf_without_llama_cpps_keys_is_refused_naming_one(tmp_path):
    """A Gemma 4 file with only the keys every architecture has (not as llama.cpp writes Gemma 4: that one reads,
    test_gguf_llama_cpp.py): one line naming a key it lacks, not a config of Gemma4TextConfig's defaults."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("gemma4"))
    write_gguf(tmp_path / "tiny-gemma4.gguf", folder, hf, "gemma4")
    with pytest.raises(CheckpointError) as err:
        ropekit.load_model(tmp_path / "tiny-gemma4.gguf")
    line = str(err.value)
    assert "\n" not in line and "'gemma4' lacks the key gemma4.attention.sliding_window_pattern" in line


def test_a_gemma4_moe_gguf_is_refused_naming_its_safetensors_checkpoints(tmp_path):
    """A Gemma 4 file with experts (``expert_count``): ropekit reads Gemma 4's experts from safetensors only, and
    says so, rather than reading the dense layers alone."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("gemma4_moe"))
    write_gguf(tmp_path / "tiny-gemma4.gguf", folder, hf, "gemma4", expert_count=8, expert_used_count=2)
    with pytest.raises(CheckpointError) as err:
        ropekit.load_model(tmp_path / "tiny-gemma4.gguf")
    line = str(err.value)
    assert "\n" not in line and line.endswith(
        "GGUF architecture 'gemma4' with experts (expert_count): ropekit reads gemma4_text's mixture of experts from "
        "safetensors checkpoints only"
    )


def test_an_architecture_neither_transformers_nor_ropekit_reads_from_gguf_is_refused(tmp_path):
    """llama.cpp's ``command-r`` (Cohere's first Command R): one line naming the architecture, not a config of a
    class's defaults nor a traceback."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, FAMILY_CONFIGS["llama"])
    write_gguf(tmp_path / "tiny-command-r.gguf", folder, hf, "command-r")
    for read in (ropekit.load_model, read_model_config):
        with pytest.raises(CheckpointError) as err:
            read(tmp_path / "tiny-command-r.gguf")
        line = str(err.value)
        assert "\n" not in line and "GGUF architecture 'command-r'" in line and "nor ropekit has a reader" in line


def mxfp4_rounded(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (..., in) as MXFP4 holds them: blocks of 32 along ``in``, each a power-of-two scale and FP4 values."""
    import gguf

    q = gguf.quants.quantize(rows.float().numpy(), gguf.GGMLQuantizationType.MXFP4)
    return torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.MXFP4).copy()).reshape(rows.shape)


def gpt_oss_experts(folder: Path, layers: int, mxfp4: bool) -> dict:
    """gpt-oss's stacked experts as llama.cpp's GptOssModel writes them (convert_hf_to_gguf.py): gate and up split
    from their interleaved columns, each expert's rows (out, in), in MXFP4 or float32, and their biases; the sinks
    as ``attn_sinks``. With ``mxfp4``, the checkpoint's experts are first rounded to what MXFP4 holds (and saved
    so), as the published ones are."""
    import gguf
    from safetensors.torch import save_file

    weights = load_file(folder / "model.safetensors")
    extra = {}
    kind = gguf.GGMLQuantizationType.MXFP4 if mxfp4 else gguf.GGMLQuantizationType.F32
    for i in range(layers):
        experts = f"model.layers.{i}.mlp.experts"
        gate_up = weights[f"{experts}.gate_up_proj"].transpose(1, 2)  # (E, 2 x I, C): rows gate_0, up_0, gate_1, ...
        down = weights[f"{experts}.down_proj"].transpose(1, 2)  # (E, C, I)
        if mxfp4:
            gate_up, down = mxfp4_rounded(gate_up), mxfp4_rounded(down)
            weights[f"{experts}.gate_up_proj"] = gate_up.transpose(1, 2).contiguous()
            weights[f"{experts}.down_proj"] = down.transpose(1, 2).contiguous()
        bias = weights[f"{experts}.gate_up_proj_bias"]
        for name, rows in (("gate", gate_up[:, 0::2]), ("up", gate_up[:, 1::2]), ("down", down)):
            array = rows.float().contiguous().numpy()
            extra[f"blk.{i}.ffn_{name}_exps.weight"] = (gguf.quants.quantize(array, kind) if mxfp4 else array, kind)
        for name, values in (("gate", bias[:, 0::2]), ("up", bias[:, 1::2])):
            extra[f"blk.{i}.ffn_{name}_exps.bias"] = (values.float().contiguous().numpy(), None)
        extra[f"blk.{i}.ffn_down_exps.bias"] = (weights[f"{experts}.down_proj_bias"].float().numpy(), None)
        extra[f"blk.{i}.attn_sinks.weight"] = (weights[f"model.layers.{i}.self_attn.sinks"].float().numpy(), None)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return extra


@pytest.mark.parametrize("mxfp4", [True, False])
def test_gpt_oss_from_gguf(mxfp4, tmp_path):
    """llama.cpp's ``gpt-oss``: the experts' gate, up and down stacked apart (MXFP4, as ggml-org's files hold them, or
    float32), their biases, a sink per head, every other layer sliding from the first (llama.cpp's swa pattern 2)
    and gpt-oss's yarn (untruncated, as its config says: the file has no key for it) read as the safetensors
    checkpoint it was written from, whose NLL transformers gives."""
    import gguf
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "hf"
    extra = gpt_oss_experts(folder, make_checkpoint(folder, FAMILY_CONFIGS["gpt_oss"]).config.num_hidden_layers, mxfp4)
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").float().eval()
    rope = hf.config.rope_parameters
    write_gguf(
        tmp_path / "tiny-gpt-oss.gguf",
        folder,
        hf,
        "gpt-oss",
        extra=extra,
        sliding_window=hf.config.sliding_window,
        expert_count=hf.config.num_local_experts,
        expert_used_count=hf.config.num_experts_per_tok,
        expert_feed_forward_length=hf.config.intermediate_size,
        rope_scaling_type=gguf.RopeScalingType.YARN,
        rope_scaling_factor=rope["factor"],
        rope_scaling_orig_ctx_len=rope["original_max_position_embeddings"],
    )
    assert_gguf_matches_checkpoint(tmp_path / "tiny-gpt-oss.gguf", folder, hf, "gpt_oss")


@pytest.mark.parametrize(
    ("family", "arch", "runs"),
    [
        ("deepseek_v3", "deepseek2", "deepseek_v2 and deepseek_v3"),
        ("llama4", "llama4", "llama4_text"),
    ],
)
def test_a_gguf_ropekit_does_not_read_is_refused_naming_its_safetensors_checkpoints(family, arch, runs, tmp_path):
    """llama.cpp's ``deepseek2`` (DeepSeek V2 and V3, the MLA's key and value projections split) and ``llama4``:
    ropekit reads those families from safetensors only, and says so."""
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, FAMILY_CONFIGS[family])
    write_gguf(tmp_path / "tiny.gguf", folder, hf, arch)
    with pytest.raises(CheckpointError) as err:
        read_model_config(tmp_path / "tiny.gguf")
    line = str(err.value)
    assert "\n" not in line and f"GGUF architecture '{arch}'" in line
    assert line.endswith(f"; ropekit runs {runs} from safetensors checkpoints")


def test_a_longrope_gguf_is_refused(tmp_path):
    """llama.cpp writes LongRoPE's factors as tensors (rope_factors_long/short) under rope.scaling.type 'longrope':
    refused in one line rather than run with the plain rope."""
    import gguf

    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("llama"))
    write_gguf(
        tmp_path / "tiny.gguf", folder, hf, "llama", permute_qk=True, rope_scaling_type=gguf.RopeScalingType.LONGROPE
    )
    with pytest.raises(CheckpointError, match="rope.scaling.type 'longrope'"):
        read_model_config(tmp_path / "tiny.gguf")


@pytest.mark.parametrize(
    "factors",
    [
        [1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 8.0, 8.0],  # no Llama 3 rope gives these (its middle band is not a line)
        [1.0] * 7 + [8.0],  # nothing between the bands: Llama 3's parameters cannot be recovered
    ],
)
def test_rope_factors_that_are_not_llama3s_are_refused(factors, tmp_path):
    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("llama"))
    write_gguf(tmp_path / "tiny.gguf", folder, hf, "llama", permute_qk=True, rope_freqs=factors)
    with pytest.raises(CheckpointError, match="not Llama 3's rope"):
        read_model_config(tmp_path / "tiny.gguf")


def test_llama3_factors_of_a_real_shape_are_recovered(tmp_path):
    """Llama 3.2 1B's rope (theta 5e5, heads 64 wide, factor 32, trained at 8192) from the factors llama.cpp would
    store for it (its LlamaModel.generate_extra_tensors, rewritten here)."""
    import math

    folder = tmp_path / "hf"
    hf = make_checkpoint(folder, config("llama", head_dim=64, rope_theta=500000.0))
    inv_freq = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64)
    factors = []
    for freq in inv_freq.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < 8192 / 4:
            factors.append(1)
        elif wavelen > 8192 / 1:
            factors.append(32.0)
        else:
            smooth = (8192 / wavelen - 1) / (4 - 1)
            factors.append(1 / ((1 - smooth) / 32.0 + smooth))
    write_gguf(tmp_path / "tiny.gguf", folder, hf, "llama", permute_qk=True, rope_freqs=factors)
    _, raw = read_model_config(tmp_path / "tiny.gguf")
    assert raw["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def test_a_gemma4_gguf_whose_rope_freqs_are_not_p_ropes_is_refused(tmp_path):
    """Gemma 4's global layers take p-RoPE's rotated share from rope_freqs (1 rotated, 1e30 not); factors of
    another kind are refused in one line naming the file."""
    import shutil

    import gguf

    source = Path(__file__).parent / "gguf" / "gemma4.gguf"
    path = tmp_path / "gemma4.gguf"
    shutil.copyfile(source, path)
    reader = gguf.GGUFReader(str(path), "r+")
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    freqs.data[:] = 2.0  # a scaling, not p-RoPE's pattern
    del reader
    with pytest.raises(CheckpointError) as err:
        read_model_config(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "lacks p-RoPE's rope_freqs" in line
