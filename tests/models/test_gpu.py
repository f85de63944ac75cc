"""The CUDA path: bf16 on the GPU against fp32 on the CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import ropekit
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_cuda_bf16_matches_cpu_fp32(family, tmp_path):
    make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    cpu = ropekit.load_model(tmp_path)
    gpu = ropekit.load_model(tmp_path, device="cuda")
    assert gpu.dtype == torch.bfloat16 and gpu.device.type == "cuda"
    ids = torch.randint(0, cpu.config.vocab_size, (1000,), generator=torch.Generator().manual_seed(0))
    ours, reference = ropekit.token_nll(gpu, ids).cpu(), ropekit.token_nll(cpu, ids)
    assert ours.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: the mean NLL agrees to about 1%, tokens to a few tenths.
    assert abs(ours.mean() - reference.mean()) <= 0.01 * reference.mean()
    assert (ours - reference).abs().max() <= 0.5
