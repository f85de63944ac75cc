"""transformers as the reference implementation the tests compare ropekit against."""

from __future__ import annotations

import copy
import importlib
import logging
from typing import Any

import torch

# The oracle configs deliberately include values transformers only warns about.
logging.getLogger("transformers").setLevel(logging.ERROR)


def hf_frequencies(
    rope_parameters: dict[str, Any],
    *,
    head_dim: int,
    rope_theta: float,
    max_position_embeddings: int,
    partial_rotary_factor: float = 1.0,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    """transformers' (inv_freq, attention_scaling) for one flat rope dict."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    params = {"rope_theta": rope_theta, "partial_rotary_factor": partial_rotary_factor, **rope_parameters}
    config = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=params,
    )
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":  # v5 keeps the default in each model; Phi-3's honours partial rotary
        return Phi3RotaryEmbedding.compute_default_rope_parameters(config, "cpu")
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)


def hf_model_rope(config: dict[str, Any]) -> dict[str, tuple[torch.Tensor, float]]:
    """inv_freq and attention scaling per layer type, from the model's own RotaryEmbedding module."""
    from transformers import AutoConfig

    config = copy.deepcopy(config)  # transformers' configs rewrite the dicts they are given
    model_type = config["model_type"]
    cfg = AutoConfig.for_model(model_type, **{k: v for k, v in config.items() if k != "model_type"})
    cfg = getattr(cfg, "text_config", None) or cfg
    package = {"gemma3_text": "gemma3"}.get(model_type, model_type)
    module = importlib.import_module(f"transformers.models.{package}.modeling_{package}")
    (cls,) = [getattr(module, n) for n in dir(module) if n.endswith("TextRotaryEmbedding")] or [
        getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")
    ]
    rotary = cls(cfg)
    if hasattr(rotary, "inv_freq"):
        return {"all": (rotary.inv_freq, rotary.attention_scaling)}
    return {
        lt: (getattr(rotary, f"{lt}_inv_freq"), getattr(rotary, f"{lt}_attention_scaling")) for lt in rotary.layer_types
    }
