"""The one decoder every supported family runs through, written for long-context evaluation.

Each layer reads its own entry of the plan (``config.layers``): full causal attention through
the fused SDPA kernel, or a sliding window computed band by band, with its own rope or none.
Nothing of size ``T x T`` or ``T x vocab`` is ever materialised (see ropekit/eval/nll.py for
the chunked head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..rope import apply_rotary, rope_table
from .config import LayerSpec, ModelConfig, ModelConfigError
from .precision import Precision


class RMSNorm(nn.Module):
    """RMSNorm in float32 whatever the activations' dtype; the weight is the effective multiplier
    (Gemma's stored ``w`` becomes ``1 + w`` at load time: see :func:`norm_weights`)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * self.weight).to(x.dtype)


def sliding_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, scale: float, block: int | None = None
) -> torch.Tensor:
    """Causal attention where query i sees keys i-window+1 .. i (transformers' sliding window:
    ``kv_idx > q_idx - window``), computed for blocks of queries against only the keys of their
    band, so memory and work grow as T x window, not T x T."""
    T = q.shape[-2]
    block = block or max(64, min(window, 1024))
    out = torch.empty_like(q)
    gqa = q.shape[1] != k.shape[1]
    for start in range(0, T, block):
        end = min(T, start + block)
        first = max(0, start - window + 1)
        q_pos = torch.arange(start, end, device=q.device)[:, None]
        k_pos = torch.arange(first, end, device=q.device)[None, :]
        allowed = (k_pos <= q_pos) & (k_pos > q_pos - window)  # (block, keys)
        out[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end],
            k[:, :, first:end],
            v[:, :, first:end],
            attn_mask=allowed,
            scale=scale,
            enable_gqa=gqa,
        )
    return out


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: LayerSpec, scale: float) -> torch.Tensor:
    """(B, H, T, D) queries against (B, H_kv, T, D) keys/values for one layer of the plan."""
    if layer.window is None or layer.window >= q.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return sliding_attention(q, k, v, window=layer.window, scale=scale)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c, bias = config, config.attention_bias
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.scale = c.attention_scale
        self.q_proj = nn.Linear(c.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, c.hidden_size, bias=c.output_bias)
        if c.family.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, layer: LayerSpec, tables: dict) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, D)
        if layer.rope is not None:
            cos, sin = tables[layer.rope]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attend(q, k, v, layer, self.scale)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.activation = config.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        if self.activation == "silu":
            gate = F.silu(gate)
        else:
            gate = F.gelu(gate, approximate="tanh" if self.activation == "gelu_pytorch_tanh" else "none")
        return self.down_proj(gate * self.up_proj(x))


class Block(nn.Module):
    """attn_in? -> attention -> attn_out? -> +residual -> mlp_in? -> MLP -> mlp_out? -> +residual."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.norms = nn.ModuleDict(
            {slot: RMSNorm(config.hidden_size, config.rms_norm_eps) for slot in config.family.norms}
        )

    def _norm(self, slot: str, x: torch.Tensor) -> torch.Tensor:
        return self.norms[slot](x) if slot in self.norms else x

    def forward(self, x: torch.Tensor, layer: LayerSpec, tables: dict) -> torch.Tensor:
        x = x + self._norm("attn_out", self.self_attn(self._norm("attn_in", x), layer, tables))
        return x + self._norm("mlp_out", self.mlp(self._norm("mlp_in", x)))


class Decoder(nn.Module):
    """A decoder-only LM. ``config`` is the resolved ModelConfig; ``tokenizer`` loads the
    checkpoint's tokenizer (called on first use of ``.tokenizer``); ``source`` is the checkpoint's
    path; ``precision`` the dtype its weights were loaded in and why. :func:`ropekit.load_model`
    builds one with all four."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        tokenizer: Callable[[], Any] | None = None,
        source: str | None = None,
        precision: Precision | None = None,
    ):
        super().__init__()
        self.config = config
        self.source = source
        self.precision = precision
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in config.layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.embed_scale = config.hidden_size**0.5 if config.family.embed_scale else None
        self._load_tokenizer = tokenizer
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The checkpoint's transformers tokenizer, loaded on first use (GGUF vocabularies are slow to parse)."""
        if self._tokenizer is None:
            if self._load_tokenizer is None:
                raise AttributeError("this model was not loaded with a tokenizer; use ropekit.load_model")
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def with_config(self, config: ModelConfig) -> Decoder:
        """The same weights under another resolved config (another rope or layer plan): every
        parameter tensor is shared, not copied, and this model is unchanged. The tokenizer (loaded
        or not), the source and the precision come along."""
        if config.family != self.config.family:
            raise ModelConfigError(
                f"a {config.model_type} config does not fit the weights of this {self.config.model_type} model"
            )
        with torch.device("meta"):
            other = Decoder(config, tokenizer=self._load_tokenizer, source=self.source, precision=self.precision)
        weights = self.state_dict()
        have = {name: tuple(t.shape) for name, t in weights.items()}
        want = {name: tuple(t.shape) for name, t in other.state_dict().items()}
        if have != want:
            wrong = sorted(name for name in have.keys() | want.keys() if have.get(name) != want.get(name))
            raise ModelConfigError(
                f"the config does not fit this model's weights: {wrong[0]} is {have.get(wrong[0], 'absent')} "
                f"here, {want.get(wrong[0], 'absent')} under that config ({len(wrong)} in all)"
            )
        other.load_state_dict(weights, assign=True, strict=True)  # detached views: the same storage
        for mine, theirs in zip(self.parameters(), other.parameters(), strict=True):
            theirs.requires_grad_(mine.requires_grad)
        other._tokenizer = self._tokenizer
        return other.train(self.training)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def rope_tables(self, length: int) -> dict:
        """cos/sin per distinct rope of the plan, for positions 0..length-1 evaluated at ``length``."""
        specs = {layer.rope for layer in self.config.layers if layer.rope is not None}
        return {spec: rope_table(spec, length, dtype=self.dtype, device=self.device) for spec in specs}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) final hidden states (after the last norm)."""
        x = self.embed_tokens(input_ids)
        if self.embed_scale is not None:
            # Gemma scales in the activations' dtype (transformers' Gemma3TextScaledWordEmbedding).
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        tables = self.rope_tables(input_ids.shape[-1])
        for block, layer in zip(self.layers, self.config.layers, strict=True):
            x = block(x, layer, tables)
        return self.norm(x)


def norm_weights(config: ModelConfig) -> frozenset[str]:
    """The decoder's RMSNorm weights under ``config``, read off the modules themselves: they stay
    float32, and a family's ``norm_offset`` (Gemma's ``1 + w``) applies to them and only them."""
    with torch.device("meta"):
        model = Decoder(config)
    return frozenset(f"{name}.weight" for name, module in model.named_modules() if isinstance(module, RMSNorm))
