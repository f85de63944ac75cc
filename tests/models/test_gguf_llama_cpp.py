"""GGUF files written by llama.cpp's own converter (convert_hf_to_gguf.py, llama-cpp-python 0.3.36's source; the
files and how they were made: tests/models/gguf/make.py) for the architectures transformers' GGUF key table lacks:
OLMo 2 and 3 (both ``olmo2``), OLMoE, Granite, Cohere 2, GLM 4, SmolLM3, Ministral 3 (``mistral3``), EXAONE 4,
Gemma 4 (dense: per-layer inputs, KV sharing, p-RoPE on global layers), GLM-4.5 (``glm4moe``: DeepSeek V3's router in
llama.cpp's keys, a block for its multi-token prediction layer, its biases and q/k norms told by their tensors),
dots.llm1 (``dots1``), K-EXAONE (``exaone-moe``), ERNIE 4.5 (dense and MoE), HunYuan (dense and MoE), Seed-OSS,
Apertus (its xIELU weights as metadata) and Arcee; Qwen3-Next (``qwen3next``: its grouped linear-attention projections
split, the decay rate as -exp(A_log)) and Qwen3.5, dense and MoE (``qwen35``, ``qwen35moe``: the value heads reordered);
LFM2 and LFM2-MoE (``lfm2``, ``lfm2moe``: convolution layers told by their 0 KV heads, the MLP's width as adjusted);
Qwen2-MoE (``qwen2moe``) and gpt-oss (``gpt-oss``: its experts'
gate and up split apart), whose keys transformers' table has in part; and a Llama with Llama 3's rope, which
llama.cpp stores only as per-frequency factors. Each file beside the checkpoint it was converted from (float16
weights in both): ropekit's model of the GGUF file has the checkpoint's whole plan, and its per-token NLL equals
transformers' forward of the checkpoint in float32 (the mean to 1e-5 relative, every token within 1e-4), inside
and past the trained length, and ropekit's of the checkpoint exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import ropekit
from ropekit.models import read_model_config
from tests.models.gguf.make import ARCHITECTURES, LLAMA3
from tests.models.test_families import assert_close, ids
from tests.models.tiny import hf_token_nll

HERE = Path(__file__).parent / "gguf"
FIXTURES = sorted(p.stem for p in HERE.glob("*.gguf"))


def test_every_fixture_is_here():
    assert set(FIXTURES) == set(ARCHITECTURES)
    assert all((HERE / name / "model.safetensors").exists() for name in FIXTURES)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROPEKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def transformers_models():
    from transformers import AutoModelForCausalLM

    return {
        name: AutoModelForCausalLM.from_pretrained(HERE / name, dtype=torch.float32, attn_implementation="eager").eval()
        for name in FIXTURES
    }


@pytest.mark.parametrize("name", FIXTURES)
def test_the_gguf_file_reads_as_its_checkpoint(name, transformers_models):
    gguf_model = ropekit.load_model(HERE / f"{name}.gguf")
    folder_model = ropekit.load_model(HERE / name)
    ours, theirs = gguf_model.config, folder_model.config
    # the whole plan (windows, NoPE layers, each layer's rope, multipliers, experts), the norms' epsilon as
    # GGUF stores it (float32)
    assert ours.rms_norm_eps == pytest.approx(theirs.rms_norm_eps, rel=1e-7)
    assert dataclasses.replace(ours, rms_norm_eps=theirs.rms_norm_eps) == theirs
    for length in (100, 300):  # inside and past the trained 128 tokens
        tokens = ids(ours.vocab_size, length)
        nll = ropekit.token_nll(gguf_model, tokens)
        assert_close(nll, hf_token_nll(transformers_models[name], tokens))
        assert torch.equal(nll, ropekit.token_nll(folder_model, tokens))


def test_llama3_rope_is_recovered_from_its_factors():
    _, raw = read_model_config(HERE / "llama3.gguf")
    written = {k: v for k, v in LLAMA3["rope_parameters"].items() if k != "rope_theta"}
    assert raw["rope_scaling"] == written and raw["rope_theta"] == LLAMA3["rope_parameters"]["rope_theta"]


@pytest.mark.parametrize("name", ["qwen3next", "qwen35", "lfm2moe"])
def test_a_hybrid_gguf_passes_the_header_check_and_reads_back_from_its_cache(name):
    """Its linear layers' tensors as the checkpoint holds them (Qwen3-Next's regrouped, Qwen3.5's value heads back in
    groups, A_log from -exp(A_log); LFM2-MoE's convolutions and stacked experts), from the tensor table alone for a
    sweep's check, and cached as such: the second load reads the cache as a transformers checkpoint and gives the
    same NLL."""
    from ropekit.models import check_weights, model_config
    from ropekit.models.gguf import dequantised

    checkpoint, raw = read_model_config(HERE / f"{name}.gguf")
    check_weights(checkpoint, model_config(raw))
    tokens = ids(raw["vocab_size"], 200)
    first = ropekit.token_nll(ropekit.load_model(HERE / f"{name}.gguf"), tokens)
    assert dequantised(HERE / f"{name}.gguf") is not None
    assert torch.equal(ropekit.token_nll(ropekit.load_model(HERE / f"{name}.gguf"), tokens), first)
