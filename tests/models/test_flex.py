"""FlexAttention's path (ropekit/models/flex.py), the CUDA path of sliding layers, capped scores and the
attention-level ropes' two regions, against the CPU paths it replaces there. On the CPU, FlexAttention runs
its eager reference (every score, masked by the mask function): equal to the blockwise paths within 1e-5 in
float32; the block masks it skips blocks by are compared with ``create_block_mask``'s, and the compiled CPU
kernel (which uses them) runs a sliding window. The CUDA tests compare the compiled kernels with the CPU."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

import ropekit
from ropekit.models import attention
from ropekit.models.flex import band_mask, flex_two_region_attention
from tests.models.tiny import FAMILY_CONFIGS, make_checkpoint

FP32 = 1e-5  # float32 against float32: summation order only (measured up to 8e-7)
BF16 = 3e-2  # bf16 outputs of O(1): 8 bits of mantissa, a few roundings apart
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def qkv(T: int, heads: int = 4, kv_heads: int = 2, dim: int = 16, dtype=torch.float32, seed: int = 0):
    """q, k, q_far, k_far, v: (1, heads, T, dim) queries and (1, kv_heads, T, dim) keys and values."""
    g = torch.Generator().manual_seed(seed)
    shapes = [heads, kv_heads, heads, kv_heads, kv_heads]
    return [torch.randn(1, h, T, dim, generator=g).to(dtype) for h in shapes]


@pytest.mark.parametrize(
    ("lo", "hi", "length"),
    [(0, 16, 200), (0, 512, 1024), (256, 1024, 1024), (300, 700, 1000), (0, 1000, 1100), (128, 10**6, 1024)],
)
def test_band_masks_are_create_block_masks(lo, hi, length):
    """The same blocks, full and partial, as ``create_block_mask`` finds from the materialised mask."""
    ours = band_mask(lo, hi, length, torch.device("cpu"))
    theirs = create_block_mask(lambda b, h, q, k: (q - k >= lo) & (q - k < hi), None, None, length, length, "cpu")
    assert torch.equal(ours.to_dense(), theirs.to_dense())
    for name in ("kv_num_blocks", "full_kv_num_blocks"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name))
    assert ours.full_kv_num_blocks.sum() > 0 or length < 1024  # the long ones skip the mask in some blocks


@pytest.mark.parametrize(
    ("window", "layer_window", "softcap"),
    [(16, None, None), (16, 100, None), (16, 10, None), (300, None, None), (16, None, 5.0), (150, 180, 2.0)],
    ids=["far", "far-in-layer-window", "layer-window-inside-window", "no-far", "far-capped", "capped-in-window"],
)
def test_two_regions_equal_the_blockwise_path(window, layer_window, softcap, monkeypatch):
    monkeypatch.setattr(attention, "SCORE_BUDGET", 1)  # the blockwise path in blocks of 16 queries
    q, k, q_far, k_far, v = qkv(200)
    kwargs = {"window": window, "layer_window": layer_window, "scale": 0.25, "softcap": softcap}
    blockwise = attention.two_region_attention(q, k, q_far, k_far, v, **kwargs)
    flex = flex_two_region_attention(q, k, q_far, k_far, v, **kwargs)
    torch.testing.assert_close(flex, blockwise, rtol=0, atol=FP32)


@pytest.mark.parametrize(("window", "layer_window"), [(16, None), (16, 100), (300, None), (300, 40)])
def test_sinks_equal_the_blockwise_path(window, layer_window, monkeypatch):
    """gpt-oss's sinks: the fused output times sigmoid(lse - sink) equals the blockwise softmax with the sink in its
    denominator (itself proven against transformers' eager attention in test_families.py), with and without a far
    region and a window."""
    monkeypatch.setattr(attention, "SCORE_BUDGET", 1)
    q, k, q_far, k_far, v = qkv(200)
    sinks = torch.randn(4, generator=torch.Generator().manual_seed(3))
    kwargs = {"window": window, "layer_window": layer_window, "scale": 0.25, "sinks": sinks}
    blockwise = attention.two_region_attention(q, k, q_far, k_far, v, **kwargs)
    flex = flex_two_region_attention(q, k, q_far, k_far, v, **kwargs)
    torch.testing.assert_close(flex, blockwise, rtol=0, atol=FP32)
    without = attention.two_region_attention(q, k, q_far, k_far, v, **{**kwargs, "sinks": None})
    assert (blockwise - without).abs().max() > 0.05  # the sinks take their share


def test_two_regions_in_bf16_within_bf16_of_the_blockwise_path():
    q, k, q_far, k_far, v = qkv(200, dtype=torch.bfloat16)
    kwargs = {"window": 24, "layer_window": None, "scale": 0.25}
    blockwise = attention.two_region_attention(q, k, q_far, k_far, v, **kwargs)
    flex = flex_two_region_attention(q, k, q_far, k_far, v, **kwargs)
    assert flex.dtype == torch.bfloat16
    torch.testing.assert_close(flex.float(), blockwise.float(), rtol=0, atol=BF16)


def test_first_queries_see_no_far_keys():
    """Queries closer to the start than the window have an empty far band (log-sum-exp -inf): plain attention."""
    q, k, q_far, k_far, v = qkv(64)
    flex = flex_two_region_attention(q, k, q_far, k_far, v, window=24, layer_window=None, scale=0.25)
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25, enable_gqa=True)
    assert torch.isfinite(flex).all()
    torch.testing.assert_close(flex[:, :, :24], causal[:, :, :24], rtol=0, atol=FP32)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_sliding_band_equals_sliding_attention(compiled):
    """One band ``0 <= q - k < window``, no far region. Compiled, the CPU kernel skips the blocks the block mask
    leaves out and evaluates the mask only in partial ones: 520 tokens, 128-token blocks, window 150."""
    q, k, _, _, v = qkv(520)
    ours = attention.sliding_attention(q, k, v, window=150, scale=0.25)
    flex = flex_two_region_attention(q, k, q, k, v, window=520, layer_window=150, scale=0.25, compiled=compiled)
    torch.testing.assert_close(flex, ours, rtol=0, atol=FP32)


@pytest.mark.parametrize(
    ("family", "rope"),
    [("llama", "rerope:24"), ("llama", "self_extend:4,24"), ("gemma3", "leaky_rerope:24,4"), ("gemma2", None)],
)
def test_models_through_flex_equal_the_cpu_path(family, rope, tmp_path, monkeypatch):
    """The decoder's CUDA dispatch, forced on the CPU (FlexAttention eager): the same token NLL as the CPU path,
    for the two regions on full and sliding layers (Gemma 3's), sliding layers alone and capped scores (Gemma 2)."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    model = ropekit.load_model(tmp_path, rope_scaling=rope, dtype="float32")
    ids = torch.randint(0, 384, (300,), generator=torch.Generator().manual_seed(1))
    cpu = ropekit.token_nll(model, ids)
    monkeypatch.setattr(attention, "fused", lambda q: True)
    monkeypatch.setattr(attention, "two_region_attention", None)  # the CPU path is not taken
    monkeypatch.setattr(attention, "sliding_attention", None)
    torch.testing.assert_close(ropekit.token_nll(model, ids), cpu, rtol=0, atol=FP32)


def test_the_cpu_never_takes_flex(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, FAMILY_CONFIGS["gemma3"])
    model = ropekit.load_model(tmp_path, rope_scaling="rerope:24", dtype="float32")
    monkeypatch.setattr(attention, "flex_two_region_attention", None)
    assert torch.isfinite(ropekit.token_nll(model, torch.arange(300) % 384)).all()


# --- CUDA: the compiled kernels ---------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("softcap", "sinks"), [(None, False), (5.0, False), (None, True)])
@pytest.mark.parametrize("layer_window", [None, 700])
def test_cuda_two_regions_equal_the_blockwise_path(layer_window, softcap, sinks):
    """The compiled kernels (bf16, head dim 64, GQA) against the blockwise path on the same GPU tensors, with
    Gemma 2's cap or gpt-oss's sinks."""
    q, k, q_far, k_far, v = (t.cuda() for t in qkv(1000, heads=8, kv_heads=2, dim=64, dtype=torch.bfloat16))
    sink = torch.randn(8, generator=torch.Generator().manual_seed(3)).cuda() if sinks else None
    kwargs = {"window": 256, "layer_window": layer_window, "scale": 0.125, "softcap": softcap, "sinks": sink}
    flex = flex_two_region_attention(q, k, q_far, k_far, v, **kwargs)
    blockwise = attention.two_region_attention(q, k, q_far, k_far, v, **kwargs)
    torch.testing.assert_close(flex.float(), blockwise.float(), rtol=0, atol=BF16)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    ("family", "rope"),
    [
        ("llama", "rerope:24"),
        ("gemma3", "self_extend:4,24"),
        ("gemma2", None),
        ("deepseek_v3", "rerope:24"),
        ("llama4", "rerope:24"),
        ("qwen3_next", "rerope:24"),  # linear-attention layers (the delta rule on CUDA), gated attention, experts
    ],
)
def test_cuda_models_match_cpu_fp32(family, rope, tmp_path):
    """A whole model on CUDA (bf16, FlexAttention compiled) against the CPU in fp32, as tests/models/test_gpu.py."""
    make_checkpoint(tmp_path, FAMILY_CONFIGS[family])
    ids = torch.randint(0, 384, (1000,), generator=torch.Generator().manual_seed(0))
    reference = ropekit.token_nll(ropekit.load_model(tmp_path, rope_scaling=rope, dtype="float32"), ids)
    ours = ropekit.token_nll(ropekit.load_model(tmp_path, rope_scaling=rope, device="cuda"), ids).cpu()
    assert abs(ours.mean() - reference.mean()) <= 0.01 * reference.mean()
    assert (ours - reference).abs().max() <= 0.5
