"""gpt-oss beyond what test_families.py proves of every family: its published checkpoints store the experts in
MXFP4 (``*_blocks`` and ``*_scales``, the OCP Microscaling format), read as the values they encode. The decoding
is rewritten here from the format (OCP Microscaling Formats v1.0: blocks of 32 E2M1 values sharing one E8M0
scale; gpt-oss packs two values a byte, the low nibble first, blocks along the input axis) and the weights it
gives are written as a plain checkpoint: both read to the same NLL, exactly, and transformers' forward of the
plain one within test_families.py's tolerance."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file, save_file

import ropekit
from ropekit.models import model_config, read_model_config
from ropekit.models.load import check_weights
from tests.models.test_families import assert_close, config, ids
from tests.models.tiny import hf_token_nll, make_checkpoint

# E2M1: sign, two exponent bits (bias 1), one mantissa bit; code 0b0001 is the subnormal 0.5
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
E2M1 += [-x for x in E2M1]


def decode(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(E, out, in / 32, 16) bytes and (E, out, in / 32) E8M0 scales -> float32 (E, out, in)."""
    table = torch.tensor(E2M1)
    pairs = torch.stack([table[(blocks & 0x0F).long()], table[(blocks >> 4).long()]], dim=-1)  # (E, out, G, 16, 2)
    values = pairs.flatten(-2) * torch.exp2(scales.float() - 127)[..., None]  # (E, out, G, 32)
    return values.flatten(-2)


def test_mxfp4_experts_read_as_the_values_they_encode(tmp_path):
    dense, packed = tmp_path / "dense", tmp_path / "mxfp4"
    hf = make_checkpoint(dense, config("gpt_oss"))
    plain, quantised = load_file(dense / "model.safetensors"), {}
    g = torch.Generator().manual_seed(0)
    for name, tensor in plain.items():
        if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            quantised[name] = tensor
            continue
        E, inputs, outputs = tensor.shape  # stored as x @ W
        blocks = torch.randint(0, 256, (E, outputs, inputs // 32, 16), dtype=torch.uint8, generator=g)
        scales = torch.randint(119, 123, (E, outputs, inputs // 32), dtype=torch.uint8, generator=g)
        plain[name] = decode(blocks, scales).transpose(1, 2).contiguous()
        quantised |= {f"{name}_blocks": blocks, f"{name}_scales": scales}
    save_file(plain, dense / "model.safetensors", metadata={"format": "pt"})
    shutil.copytree(dense, packed)
    save_file(quantised, packed / "model.safetensors", metadata={"format": "pt"})
    raw = json.loads((packed / "config.json").read_text())
    (packed / "config.json").write_text(json.dumps({**raw, "quantization_config": {"quant_method": "mxfp4"}}))
    checkpoint, read = read_model_config(packed)
    check_weights(checkpoint, model_config(read))  # from the headers alone, as a sweep checks first
    tokens = ids(hf.config.vocab_size, 300)
    ours = ropekit.token_nll(ropekit.load_model(packed), tokens)
    assert torch.equal(ours, ropekit.token_nll(ropekit.load_model(dense), tokens))
    hf.load_state_dict(plain)
    assert_close(ours, hf_token_nll(hf, tokens))
