"""Fine-grained FP8 checkpoints (quant_method "fp8": DeepSeek V3's release, and other FP8 releases): float8 weights
each with a float32 scale per block in ``NAME_scale_inv``, read as their dequantised values. The format is rewritten
here from DeepSeek-V3's ``inference/kernel.py`` (``weight_dequant``: each block of the weight times its scale; the
scale is the block's absolute maximum over float8_e4m3's largest value, 448, when it is cast), block by block."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import ropekit
from ropekit.models import ModelConfigError, check_weights, model_config, read_model_config
from ropekit.models.sources import CheckpointError
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import hf_token_nll, make_checkpoint

E4M3_MAX = 448.0


def blocks(weight: torch.Tensor, rows: int, cols: int):
    for i in range(math.ceil(weight.shape[0] / rows)):
        for j in range(math.ceil(weight.shape[1] / cols)):
            yield i, j, (slice(i * rows, (i + 1) * rows), slice(j * cols, (j + 1) * cols))


def quantised(weight: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.empty(weight.shape, dtype=torch.float8_e4m3fn)
    scale = torch.empty(math.ceil(weight.shape[0] / rows), math.ceil(weight.shape[1] / cols))
    for i, j, block in blocks(weight, rows, cols):
        scale[i, j] = weight[block].abs().max() / E4M3_MAX
        q[block] = (weight[block] / scale[i, j]).to(torch.float8_e4m3fn)
    return q, scale


def dequantised(q: torch.Tensor, scale: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out = torch.empty(q.shape)
    for i, j, block in blocks(q, rows, cols):
        out[block] = q[block].float() * scale[i, j]
    return out


def fp8_pair(tmp_path, family: str, block: tuple[int, int] | None):
    """(a folder of the checkpoint in FP8, one of its dequantised weights and transformers' model of them): every
    projection's weight quantised, the embeddings, norms and routers kept as they are (as DeepSeek's release).
    ``block`` None: one scale a weight (stored as a 1-element tensor)."""
    plain, fp8, reference = tmp_path / "plain", tmp_path / "fp8", tmp_path / "dequantised"
    make_checkpoint(plain, config(family))
    weights = load_file(plain / "model.safetensors")
    stored, exact = {}, {}
    for name, tensor in weights.items():
        if tensor.dim() == 2 and "proj" in name:
            rows, cols = block or tensor.shape
            q, scale = quantised(tensor, rows, cols)
            stored[name], stored[f"{name}_scale_inv"] = q, scale if block else scale.reshape(1)
            exact[name] = dequantised(q, scale, rows, cols)
        else:
            stored[name] = exact[name] = tensor
    for folder, tensors in ((fp8, stored), (reference, exact)):
        shutil.copytree(plain, folder)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    raw = json.loads((fp8 / "config.json").read_text())
    raw["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": block and list(block)}
    (fp8 / "config.json").write_text(json.dumps(raw))
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(reference, attn_implementation="eager").float().eval()
    return fp8, reference, hf


@pytest.mark.parametrize(("family", "block"), [("deepseek_v3", (16, 24)), ("llama", (32, 32)), ("llama", None)])
def test_an_fp8_checkpoint_reads_as_its_dequantised_weights(family, block, tmp_path):
    """Blocks of 16 x 24 leave shorter last blocks on every weight of the tiny shapes (64 columns, 96 or 112 rows)."""
    fp8, reference, hf = fp8_pair(tmp_path, family, block)
    checkpoint, raw = read_model_config(fp8)
    check_weights(checkpoint, model_config(raw))  # a sweep's check, from the headers: they pass
    model = ropekit.load_model(fp8)
    tokens = ids(model.config.vocab_size, 300)
    ours = ropekit.token_nll(model, tokens)
    assert torch.equal(ours, ropekit.token_nll(ropekit.load_model(reference), tokens))  # the same float32 weights
    assert_close(ours, hf_token_nll(hf, tokens))
    expert = "mlp.experts.0" if family == "deepseek_v3" else "mlp"
    float8 = load_file(fp8 / "model.safetensors")[f"model.layers.1.{expert}.down_proj.weight"]
    assert float8.dtype == torch.float8_e4m3fn  # what was read was quantised


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (None, "o_proj.weight has no model.layers.0.self_attn.o_proj.weight_scale_inv"),
        (
            torch.ones(2, 3),
            "weight_scale_inv has shape (2, 3), which is not a scale per [32, 32] block of the (64, 64)",
        ),
    ],
)
def test_a_float8_weight_without_its_scales_is_refused(scale, message, tmp_path):
    fp8, _, _ = fp8_pair(tmp_path, "llama", (32, 32))
    tensors = load_file(fp8 / "model.safetensors")
    tensors.pop("model.layers.0.self_attn.o_proj.weight_scale_inv")
    if scale is not None:
        tensors["model.layers.0.self_attn.o_proj.weight_scale_inv"] = scale
    save_file(tensors, fp8 / "model.safetensors", metadata={"format": "pt"})
    checkpoint, raw = read_model_config(fp8)
    with pytest.raises(CheckpointError, match=re.escape(message)):  # a sweep's check, from the headers alone
        check_weights(checkpoint, model_config(raw))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        ropekit.load_model(fp8)


@pytest.mark.parametrize(
    ("quantization", "message"),
    [
        ({"quant_method": "gptq", "bits": 4}, "quant_method='gptq' is not supported; ropekit reads unquantised"),
        ({"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size=[128] is not allowed"),
    ],
)
def test_a_quantisation_ropekit_does_not_read_is_refused_in_one_line(quantization, message, tmp_path):
    make_checkpoint(tmp_path, config("llama"))
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "quantization_config": quantization}))
    with pytest.raises(ModelConfigError, match=re.escape(message)) as err:
        ropekit.load_model(tmp_path)
    assert "\n" not in str(err.value)
